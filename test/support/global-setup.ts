// jest globalSetup: one Synapse (with alice/alice-pw-1 and bob/bob-pw-1) and one OAuth homeserver for the whole
// run, started in parallel (test/support/synapse.ts) and handed to the test files through env vars (jest
// workers inherit process.env). MXS_TEST_SYNAPSE=0 starts neither, MXS_TEST_OAUTH=0 no OAuth homeserver, and
// MXS_TEST_OAUTH_ACCESS_TOKEN_TTL sets its access-token lifetime (default 6 s). When one fails to start, its
// suites skip with the reason (MXS_TEST_SYNAPSE_SKIP_REASON / MXS_TEST_OAUTH_SKIP_REASON), except under
// CI=true, where the run fails: a missing homeserver must fail CI, never skip silently.
import { createRequire } from 'node:module';
import type * as Servers from './synapse.js';

declare global {
  // Read by global-teardown.ts (globalSetup and globalTeardown run in the same process).
  var __MXS_TEST_SYNAPSE__: Servers.SynapseHandle | undefined;
  var __MXS_TEST_OAUTH__: Servers.OAuthHomeserver | undefined;
}

// jest require()s this file outside its module system, through a hook that runs ts-jest (which emits ESM here;
// Node >= 20.19 loads the result as an ES module). moduleNameMapper does not apply, so a native
// import('./synapse.js') fails (no such file), but a CommonJS require of './synapse' goes through the same hook.
// That is also why synapse.ts imports nothing but node: builtins.
let servers: typeof Servers;

const say = (text: string): void => {
  process.stderr.write(`\n${text}\n`);
};

const why = (err: unknown): string => (err instanceof Error ? err.message : String(err));

async function startSharedSynapse(): Promise<Servers.SynapseHandle> {
  const handle = await servers.startSynapse();
  try {
    for (const { user, password } of Object.values(servers.TEST_USERS)) await handle.registerUser(user, password);
    return handle;
  } catch (err) {
    await handle.stop().catch(() => undefined);
    throw err;
  }
}

export default async function globalSetup(): Promise<void> {
  if (process.env.MXS_TEST_SYNAPSE === '0') {
    process.env.MXS_TEST_SYNAPSE_SKIP_REASON = 'Synapse tests disabled by MXS_TEST_SYNAPSE=0';
    process.env.MXS_TEST_OAUTH_SKIP_REASON = 'OAuth homeserver tests disabled by MXS_TEST_SYNAPSE=0';
    say(process.env.MXS_TEST_SYNAPSE_SKIP_REASON);
    return;
  }
  servers = createRequire(import.meta.url)('./synapse') as typeof Servers;
  const oauthDisabled = process.env.MXS_TEST_OAUTH === '0';
  const ttl = Number(process.env[servers.OAUTH_ENV.accessTokenTTL] || 6);
  const [plain, oauth] = await Promise.allSettled([
    startSharedSynapse(),
    oauthDisabled ? Promise.reject(new Error('disabled by MXS_TEST_OAUTH=0')) : servers.startOAuthHomeserver(ttl),
  ]);
  const plainMissing = plain.status === 'rejected' ? `No test Synapse: ${why(plain.reason)}` : undefined;
  const oauthMissing = oauth.status === 'rejected' ? `No test OAuth homeserver: ${why(oauth.reason)}` : undefined;

  if (process.env.CI === 'true' && (plainMissing || (oauthMissing && !oauthDisabled))) {
    // Stop whatever did start, then fail the run.
    if (plain.status === 'fulfilled') await plain.value.stop().catch(() => undefined);
    if (oauth.status === 'fulfilled') await oauth.value.stop().catch(() => undefined);
    const reasons = [plainMissing, oauthDisabled ? undefined : oauthMissing].filter(Boolean);
    throw new Error(`${reasons.join('\n')}\n(CI=true: a missing homeserver fails the run)`);
  }

  if (plain.status === 'fulfilled') {
    globalThis.__MXS_TEST_SYNAPSE__ = plain.value;
    Object.assign(process.env, servers.synapseEnv(plain.value));
    delete process.env.MXS_TEST_SYNAPSE_SKIP_REASON;
    say(`Synapse ${plain.value.version} at ${plain.value.baseUrl}`);
  } else {
    process.env.MXS_TEST_SYNAPSE_SKIP_REASON = plainMissing;
    say(`${plainMissing}\nSuites using describeWithSynapse will be skipped.`);
  }

  if (oauth.status === 'fulfilled') {
    const handle = oauth.value;
    globalThis.__MXS_TEST_OAUTH__ = handle;
    Object.assign(process.env, servers.oauthEnv(handle));
    delete process.env.MXS_TEST_OAUTH_SKIP_REASON;
    say(`OAuth homeserver: Synapse ${handle.synapseVersion} at ${handle.baseUrl}, oidc-provider at ${handle.issuer}`);
  } else {
    process.env.MXS_TEST_OAUTH_SKIP_REASON = oauthMissing;
    say(`${oauthMissing}\nSuites using describeWithOAuthHomeserver will be skipped.`);
  }
}
