import { createRequire } from 'node:module';
import type { KeychainBackend } from './keychain.js';

// keytar in mxs's own process. A keytar call runs in a libuv pool thread, and a call blocked on a
// frozen keyring holds that thread for ~50 s (two 25 s D-Bus timeouts); process.exit() joins the pool
// threads, so it would wait that long too (measured: see keytar-child.ts). The helper process avoids
// that but costs a second Node start, about as long as the rest of `mxs token`. Where Node has
// process.execve (22.15+, not Windows), a process with a call still hung can end at once instead:
// exitProcess() replaces it with one that exits with the same code, and the kernel ends the stuck
// thread with the old image. The guarantee stays: mxs ends within the keychain timeout.

type Execve = (file: string, args: string[], env: Record<string, string>) => never;

// Shared by every bundle in this process (the early prefetch and the fast path have a module state each).
const inFlight = ((globalThis as { [k: symbol]: { calls: number } })[Symbol.for('mxs.keytar.inFlight')] ??= { calls: 0 });

const execve = (): Execve | undefined => (process as unknown as { execve?: Execve }).execve;

/** Whether this process can exit on time while a keytar call is stuck (else use the helper process). */
export function canExitWithCallsHung(): boolean {
  return typeof execve() === 'function' && process.platform !== 'win32';
}

/** Throws when keytar is not installed (it is an optional, native dependency). */
export function directKeytarBackend(): KeychainBackend {
  const keytar = createRequire(import.meta.url)('keytar') as typeof import('keytar');
  const tracked = <T>(call: () => Promise<T>): Promise<T> => {
    inFlight.calls++;
    let p: Promise<T>;
    try {
      p = call();
    } catch (err) {
      inFlight.calls--;
      throw err;
    }
    return p.finally(() => inFlight.calls--);
  };
  return {
    get: (s, a) => tracked(() => keytar.getPassword(s, a)),
    set: (s, a, v) => tracked(() => keytar.setPassword(s, a, v)),
    delete: (s, a) => tracked(() => keytar.deletePassword(s, a)),
    // Nothing can cancel a libsecret call: the caller gives up on it, and exitProcess() deals with the thread.
    abort() {},
  };
}

/** Ends the process with `code`, at once even when a keytar call is still stuck in a pool thread. */
export function exitProcess(code: number): never {
  const replace = execve();
  if (inFlight.calls > 0 && replace && canExitWithCallsHung()) {
    // stdout and stderr are written synchronously on POSIX (files, pipes, terminals): nothing is lost.
    replace(process.execPath, [process.execPath, '-e', `process.exit(${Number(code) | 0})`], {});
  }
  process.exit(code);
}
