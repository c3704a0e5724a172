import { closeSync, constants, fstatSync, openSync, readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { canExitWithCallsHung, directKeytarBackend } from '../store/keytar-direct.js';
import { publishPrefetch } from '../store/keychain-prefetch.js';
import { KEYCHAIN_SERVICE, keychainAccount, type KeychainBackend } from '../store/keychain.js';
import { ConfigStore, configFile } from '../store/config.js';
import { configDir, statePaths } from '../store/paths.js';
import { normalizeArgv } from './argv.js';
import { resolveProfile } from './invocation.js';

// dist/cli/early.cjs (bundled by `npm run build`): bin/run.js runs it before it loads the fast path.
// `mxs token` on a session kept in the OS keychain spends most of its extra time waiting for the
// keychain (D-Bus round trips to the Secret Service: about 12 ms on Node 24, or a helper process on
// older Nodes), with the main thread idle. Started here, that wait overlaps the loading of the rest of
// mxs instead of following it; the KeychainSecretStore then takes this read instead of making its own
// (src/store/keychain-prefetch.ts).
//
// Only a read the command is sure to make is started: `token`, a stored session whose sessions file
// names the keychain. The decision is a cheap guess from argv, the environment and two small files;
// whatever it gets wrong (an odd argv, a file that changes meanwhile) costs one unused keychain read,
// never a wrong answer, because the store takes a read only for the very item it asks for. Nothing
// here throws or prints: every failure is the normal path's to report. MXS_NO_EARLY=1 turns it off
// (tests and the benchmark compare both ways).

export function prefetchKeychain(args: string[], env: NodeJS.ProcessEnv = process.env): void {
  try {
    const argv = normalizeArgv(args);
    if (argv[0] !== 'token' || env.MXS_NO_FAST_PATH || env.MXS_NO_EARLY || argv.some((a) => a === '--help' || a === '-h' || a === '--')) return;
    const { values } = parseArgs({ args: argv.slice(1), options: { profile: { type: 'string', short: 'p' } }, strict: false, allowPositionals: true });
    const root = configDir(env);
    // The profile as the invocation will resolve it; a bad name or unreadable config throws (then the normal path says so).
    const given = (typeof values.profile === 'string' ? values.profile : undefined) ?? (env.MXS_PROFILE || undefined);
    const { profile } = resolveProfile(given, new ConfigStore(configFile(root)));
    const record = JSON.parse(readRegularFile(statePaths(root).session(profile))) as { storage?: unknown };
    if (record.storage !== 'keychain') return;
    const account = keychainAccount(profile, root, !env.MXS_CONFIG_DIR);
    const start = (backend: KeychainBackend) => publishPrefetch({ service: KEYCHAIN_SERVICE, account, backend, read: backend.get(KEYCHAIN_SERVICE, account) });
    // keytar in this process where a hung call can be abandoned on time (keytar-direct.ts); else the
    // helper process (Node before 22.15), which then boots while mxs loads.
    if (canExitWithCallsHung()) start(directKeytarBackend());
    else void import('../store/keytar-child.js').then((m) => start(m.childKeytarBackend())).catch(() => {});
  } catch {
    // no session, an unreadable file, no keytar: the normal path finds out and says so
  }
}

/**
 * A small regular file's text; throws for anything else. Never a plain readFileSync of the path: a
 * FIFO planted there would hang it (O_NONBLOCK opens it at once, and fstat refuses it).
 */
function readRegularFile(path: string): string {
  const fd = openSync(path, constants.O_RDONLY | (constants.O_NONBLOCK ?? 0) | (constants.O_NOCTTY ?? 0));
  try {
    const st = fstatSync(fd);
    if (!st.isFile() || st.size > 64 * 1024) throw new Error('not a small regular file');
    return readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
}
