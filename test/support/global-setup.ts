// jest globalSetup: one Synapse for the whole run (see test/support/synapse.ts).
//
// Unless MXS_TEST_SYNAPSE=0, installs Synapse when needed, starts it, registers alice/alice-pw-1 and
// bob/bob-pw-1, and hands it to the test files (jest workers inherit process.env) through
// MXS_TEST_SYNAPSE_URL, MXS_TEST_SYNAPSE_VERSION and MXS_TEST_SYNAPSE_SHARED_SECRET. When that fails it sets
// MXS_TEST_SYNAPSE_SKIP_REASON (describeWithSynapse then skips), except under CI=true, where it throws:
// a missing Synapse must fail CI, never skip silently.
import { createRequire } from 'node:module';
import type * as SynapseModule from './synapse.js';

type Handle = Awaited<ReturnType<typeof SynapseModule.startSynapse>>;

declare global {
  // Read by global-teardown.ts (globalSetup and globalTeardown run in the same process).
  var __MXS_TEST_SYNAPSE__: Handle | undefined;
}

// jest loads globalSetup outside its module system: it require()s this file with a hook that runs ts-jest
// (which emits ESM here; Node >= 20.19 then loads the result as an ES module). moduleNameMapper does not apply
// and Node's ESM loader cannot load './synapse.ts' (a native import('./synapse.js') fails: no such file), but
// a CommonJS require of './synapse' goes through the same hook (it registers '.ts'), so use that.
function loadSynapseModule(): typeof SynapseModule {
  return createRequire(import.meta.url)('./synapse') as typeof SynapseModule;
}

export default async function globalSetup(): Promise<void> {
  if (process.env.MXS_TEST_SYNAPSE === '0') {
    process.env.MXS_TEST_SYNAPSE_SKIP_REASON = 'Synapse tests disabled by MXS_TEST_SYNAPSE=0';
    process.stderr.write(`\n${process.env.MXS_TEST_SYNAPSE_SKIP_REASON}\n`);
    return;
  }
  const { startSynapse, TEST_USERS } = loadSynapseModule();
  let handle: Handle | undefined;
  try {
    handle = await startSynapse();
    for (const { user, password } of Object.values(TEST_USERS)) await handle.registerUser(user, password);
  } catch (err) {
    await handle?.stop().catch(() => undefined);
    const reason = `No test Synapse: ${err instanceof Error ? err.message : String(err)}`;
    if (process.env.CI === 'true') throw new Error(`${reason}\n(CI=true: a missing Synapse fails the run)`);
    process.env.MXS_TEST_SYNAPSE_SKIP_REASON = reason;
    process.stderr.write(`\n${reason}\nSuites using describeWithSynapse will be skipped.\n`);
    return;
  }
  globalThis.__MXS_TEST_SYNAPSE__ = handle;
  process.env.MXS_TEST_SYNAPSE_URL = handle.baseUrl;
  process.env.MXS_TEST_SYNAPSE_VERSION = handle.version;
  process.env.MXS_TEST_SYNAPSE_SHARED_SECRET = handle.registrationSharedSecret;
  delete process.env.MXS_TEST_SYNAPSE_SKIP_REASON;
  process.stderr.write(`\nSynapse ${handle.version} at ${handle.baseUrl}\n`);
}
