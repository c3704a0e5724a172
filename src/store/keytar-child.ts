import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import type { KeychainBackend } from './keychain.js';

// keytar runs in a helper process, not in mxs itself. A libsecret call blocked on a frozen
// keyring holds a libuv pool thread, and Node joins those threads at exit: even process.exit()
// waited ~50 s after mxs had given up (measured). A child can simply be killed.

const HELPER = `
const k = require(process.argv[1]);
const rl = require('node:readline').createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const { id, op, args } = JSON.parse(line);
  k[op](...args).then(
    (value) => process.stdout.write(JSON.stringify({ id, ok: true, value }) + '\\n'),
    (err) => process.stdout.write(JSON.stringify({ id, ok: false, error: String((err && err.message) || err) }) + '\\n'),
  );
});
rl.on('close', () => process.exit(0));
`;

/**
 * What the helper may see of mxs's environment: what libsecret needs to find the Secret Service (the
 * D-Bus session bus: its address, or $XDG_RUNTIME_DIR/bus, or X11 autolaunch through DISPLAY and
 * dbus-launch on PATH), the user's home and locale, and what Node, the macOS keychain and the Windows
 * credential store need to start. Nothing else: not MXS_PROXY_TOKEN, nor a bot's own secrets.
 */
const HELPER_ENV = /^(?:PATH|HOME|USER|LOGNAME|LANG|LANGUAGE|LC_[A-Z]+|TMPDIR|DBUS_SESSION_BUS_ADDRESS|DISPLAY|XAUTHORITY|XDG_[A-Z_]+|G_MESSAGES_DEBUG|__CF_USER_TEXT_ENCODING|SYSTEMROOT|WINDIR|SYSTEMDRIVE|USERPROFILE|APPDATA|LOCALAPPDATA|PROGRAMDATA|TEMP|TMP|COMSPEC|PATHEXT)$/i;

export function helperEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(env).filter(([name, value]) => value !== undefined && HELPER_ENV.test(name)));
}

type Op = 'getPassword' | 'setPassword' | 'deletePassword';

export interface ChildKeychainBackend extends KeychainBackend {
  /** Kills the helper (after a timeout): nothing of a hung call stays in this process. */
  abort(): void;
}

/** Throws when keytar is not installed (it is an optional, native dependency). */
export function childKeytarBackend(): ChildKeychainBackend {
  const keytarPath = createRequire(import.meta.url).resolve('keytar');
  let child: ChildProcessWithoutNullStreams | undefined;
  let nextId = 0;
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();

  const failAll = (err: Error) => {
    for (const p of pending.values()) p.reject(err);
    pending.clear();
  };

  const start = (): ChildProcessWithoutNullStreams => {
    const c = spawn(process.execPath, ['-e', HELPER, keytarPath], { stdio: ['pipe', 'pipe', 'pipe'], env: helperEnv(process.env) });
    let stderr = '';
    c.stderr.on('data', (d) => (stderr += d));
    createInterface({ input: c.stdout }).on('line', (line) => {
      let msg: { id: number; ok: boolean; value?: unknown; error?: string };
      try {
        msg = JSON.parse(line);
      } catch {
        return;
      }
      const p = pending.get(msg.id);
      if (!p) return;
      pending.delete(msg.id);
      if (msg.ok) p.resolve(msg.value);
      else p.reject(new Error(msg.error));
      if (pending.size === 0) idle(c);
    });
    c.on('error', (err) => failAll(err));
    c.on('exit', (code, signal) => {
      failAll(new Error(stderr.trim().split('\n').pop() || `keychain helper exited (${signal ?? code})`));
      if (child === c) child = undefined;
    });
    // Never outlive mxs, whatever the helper is stuck in.
    process.once('exit', () => c.kill('SIGKILL'));
    return c;
  };

  // The helper keeps mxs alive only while a call is waiting for it.
  const busy = (c: ChildProcessWithoutNullStreams) => {
    c.ref();
    (c.stdout as unknown as { ref(): void }).ref();
  };
  const idle = (c: ChildProcessWithoutNullStreams) => {
    c.unref();
    (c.stdout as unknown as { unref(): void }).unref();
    (c.stderr as unknown as { unref(): void }).unref();
    (c.stdin as unknown as { unref(): void }).unref();
  };

  const call = <T>(op: Op, args: string[]): Promise<T> => {
    child ??= start();
    const c = child;
    const id = nextId++;
    busy(c);
    return new Promise<T>((resolve, reject) => {
      pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      c.stdin.write(JSON.stringify({ id, op, args }) + '\n');
    });
  };

  return {
    get: (s, a) => call<string | null>('getPassword', [s, a]),
    set: (s, a, v) => call<void>('setPassword', [s, a, v]),
    delete: (s, a) => call<boolean>('deletePassword', [s, a]),
    abort() {
      if (!child) return;
      const c = child;
      child = undefined;
      failAll(new Error('keychain call abandoned'));
      c.kill('SIGKILL');
      idle(c);
    },
  };
}
