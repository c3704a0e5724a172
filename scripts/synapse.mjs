#!/usr/bin/env node
// Run the test homeserver by hand (same code as the jest harness, test/support/synapse.ts).
//
//   node scripts/synapse.mjs install                 install/check the pinned Synapse in .cache/synapse-venv
//   node scripts/synapse.mjs start [options]         start a throwaway Synapse with users alice/alice-pw-1 and
//                                                    bob/bob-pw-1; prints its URL; Ctrl-C stops it
//     --access-token-lifetime 6s    refreshable_access_token_lifetime ('none' disables refresh tokens)
//     --refresh-token-lifetime 1h   refresh_token_lifetime ('none': never expires)
//     --session-lifetime 1d         session_lifetime (default unset)
//
// MXS_SYNAPSE_KEEP=1 keeps the server's temp dir; MXS_SYNAPSE_LOG_LEVEL=INFO logs more.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { importTs } from './import-ts.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const source = path.join(here, '..', 'test', 'support', 'synapse.ts');

const loadHarness = () => importTs(source);

function parseOptions(args) {
  const opts = { extraConfig: {} };
  for (let i = 0; i < args.length; i += 2) {
    const [option, value] = [args[i], args[i + 1] === 'none' ? null : args[i + 1]];
    if (value === undefined) throw new Error(`incomplete option: ${option}`);
    if (option === '--access-token-lifetime') opts.accessTokenLifetime = value;
    else if (option === '--refresh-token-lifetime') opts.refreshTokenLifetime = value;
    else if (option === '--session-lifetime') opts.extraConfig.session_lifetime = value;
    else throw new Error(`unknown option: ${option}`);
  }
  return opts;
}

async function main() {
  const [command, ...rest] = process.argv.slice(2);
  if (command === 'install') {
    const harness = await loadHarness();
    const { python, version } = await harness.ensureSynapseInstalled();
    console.log(`matrix-synapse ${version} (${python})`);
    return;
  }
  if (command === 'start') {
    const opts = parseOptions(rest);
    const harness = await loadHarness();
    const handle = await harness.startSynapse(opts);
    for (const { user, password } of Object.values(harness.TEST_USERS)) await handle.registerUser(user, password);
    console.log(`Synapse ${handle.version} at ${handle.baseUrl}`);
    console.log(`users: alice/alice-pw-1, bob/bob-pw-1; registration shared secret: ${handle.registrationSharedSecret}`);
    console.log(`dir: ${handle.dir}; log: ${handle.logFile}`);
    console.log('Ctrl-C to stop');
    await new Promise((resolve) => {
      for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.once(signal, resolve);
    });
    await handle.stop();
    return;
  }
  console.error('usage: node scripts/synapse.mjs install | start [--access-token-lifetime 6s] [--refresh-token-lifetime 1h] [--session-lifetime 1d]');
  process.exitCode = 2;
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exitCode = 1;
});
