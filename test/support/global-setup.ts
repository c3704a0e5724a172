// jest globalSetup: one Synapse and one OAuth homeserver for the whole run (see test/support/synapse.ts and
// test/support/oauth-homeserver.ts), started in parallel.
//
// Unless MXS_TEST_SYNAPSE=0:
// - installs Synapse when needed, starts it, registers alice/alice-pw-1 and bob/bob-pw-1, and hands it to the
//   test files (jest workers inherit process.env) through MXS_TEST_SYNAPSE_URL, MXS_TEST_SYNAPSE_VERSION and
//   MXS_TEST_SYNAPSE_SHARED_SECRET;
// - unless also MXS_TEST_OAUTH=0, installs Synapse 1.156 (.cache/synapse-oauth-venv) when needed, starts it with
//   oidc-provider as its OAuth server, and hands it over through MXS_TEST_OAUTH_URL, MXS_TEST_OAUTH_ISSUER,
//   MXS_TEST_OAUTH_SYNAPSE_VERSION, MXS_TEST_OAUTH_ADMIN_TOKEN, MXS_TEST_OAUTH_CONTROL_URL and
//   MXS_TEST_OAUTH_ACCESS_TOKEN_TTL (which, set beforehand, also chooses the access-token lifetime; default 6 s).
// When one fails it sets MXS_TEST_SYNAPSE_SKIP_REASON / MXS_TEST_OAUTH_SKIP_REASON (describeWithSynapse /
// describeWithOAuthHomeserver then skip), except under CI=true, where it throws: a missing homeserver must fail
// CI, never skip silently.
import { createRequire } from 'node:module';
import type * as OAuthModule from './oauth-homeserver.js';
import type * as SynapseModule from './synapse.js';

type Handle = Awaited<ReturnType<typeof SynapseModule.startSynapse>>;
type OAuthHandle = OAuthModule.OAuthHomeserverHandle;

declare global {
  // Read by global-teardown.ts (globalSetup and globalTeardown run in the same process).
  var __MXS_TEST_SYNAPSE__: Handle | undefined;
  var __MXS_TEST_OAUTH__: OAuthHandle | undefined;
}

// jest loads globalSetup outside its module system: it require()s this file with a hook that runs ts-jest
// (which emits ESM here; Node >= 20.19 then loads the result as an ES module). moduleNameMapper does not apply
// and Node's ESM loader cannot load './synapse.ts' (a native import('./synapse.js') fails: no such file), but
// a CommonJS require of './synapse' goes through the same hook (it registers '.ts'), so use that. For the same
// reason oauth-homeserver.ts cannot import synapse.ts itself: it is handed the module.
function loadSupportModule<T>(name: string): T {
  return createRequire(import.meta.url)(name) as T;
}

const say = (text: string): void => {
  process.stderr.write(`\n${text}\n`);
};

async function startSharedSynapse(synapse: typeof SynapseModule): Promise<Handle> {
  let handle: Handle | undefined;
  try {
    handle = await synapse.startSynapse();
    for (const { user, password } of Object.values(synapse.TEST_USERS)) await handle.registerUser(user, password);
    return handle;
  } catch (err) {
    await handle?.stop().catch(() => undefined);
    throw err;
  }
}

async function startSharedOAuth(synapse: typeof SynapseModule): Promise<OAuthHandle> {
  const oauth = loadSupportModule<typeof OAuthModule>('./oauth-homeserver');
  const ttl = Number(process.env[oauth.OAUTH_ENV.accessTokenTTL] || 6);
  return oauth.startOAuthHomeserver({ synapse, accessTokenTTL: ttl });
}

const why = (err: unknown): string => (err instanceof Error ? err.message : String(err));

export default async function globalSetup(): Promise<void> {
  if (process.env.MXS_TEST_SYNAPSE === '0') {
    process.env.MXS_TEST_SYNAPSE_SKIP_REASON = 'Synapse tests disabled by MXS_TEST_SYNAPSE=0';
    process.env.MXS_TEST_OAUTH_SKIP_REASON = 'OAuth homeserver tests disabled by MXS_TEST_SYNAPSE=0';
    say(process.env.MXS_TEST_SYNAPSE_SKIP_REASON);
    return;
  }
  const synapse = loadSupportModule<typeof SynapseModule>('./synapse');
  const oauthDisabled = process.env.MXS_TEST_OAUTH === '0';
  const [plain, oauth] = await Promise.allSettled([
    startSharedSynapse(synapse),
    oauthDisabled ? Promise.reject(new Error('disabled by MXS_TEST_OAUTH=0')) : startSharedOAuth(synapse),
  ]);

  const ci = process.env.CI === 'true';
  if (ci && (plain.status === 'rejected' || (oauth.status === 'rejected' && !oauthDisabled))) {
    // Stop whatever did start, then fail the run.
    if (plain.status === 'fulfilled') await plain.value.stop().catch(() => undefined);
    if (oauth.status === 'fulfilled') await oauth.value.stop().catch(() => undefined);
    const reasons = [
      plain.status === 'rejected' ? `No test Synapse: ${why(plain.reason)}` : '',
      oauth.status === 'rejected' && !oauthDisabled ? `No test OAuth homeserver: ${why(oauth.reason)}` : '',
    ].filter(Boolean);
    throw new Error(`${reasons.join('\n')}\n(CI=true: a missing homeserver fails the run)`);
  }

  if (plain.status === 'fulfilled') {
    const handle = plain.value;
    globalThis.__MXS_TEST_SYNAPSE__ = handle;
    process.env.MXS_TEST_SYNAPSE_URL = handle.baseUrl;
    process.env.MXS_TEST_SYNAPSE_VERSION = handle.version;
    process.env.MXS_TEST_SYNAPSE_SHARED_SECRET = handle.registrationSharedSecret;
    delete process.env.MXS_TEST_SYNAPSE_SKIP_REASON;
    say(`Synapse ${handle.version} at ${handle.baseUrl}`);
  } else {
    const reason = `No test Synapse: ${why(plain.reason)}`;
    process.env.MXS_TEST_SYNAPSE_SKIP_REASON = reason;
    say(`${reason}\nSuites using describeWithSynapse will be skipped.`);
  }

  if (oauth.status === 'fulfilled') {
    const handle = oauth.value;
    globalThis.__MXS_TEST_OAUTH__ = handle;
    const oauthModule = loadSupportModule<typeof OAuthModule>('./oauth-homeserver');
    Object.assign(process.env, oauthModule.oauthEnvFor(handle));
    delete process.env.MXS_TEST_OAUTH_SKIP_REASON;
    say(`OAuth homeserver: Synapse ${handle.synapseVersion} at ${handle.baseUrl}, oidc-provider at ${handle.issuer}`);
  } else {
    const reason = `No test OAuth homeserver: ${why(oauth.reason)}`;
    process.env.MXS_TEST_OAUTH_SKIP_REASON = reason;
    say(`${reason}\nSuites using describeWithOAuthHomeserver will be skipped.`);
  }
}
