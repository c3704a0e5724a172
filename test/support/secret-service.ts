// A real, private Secret Service (gnome-keyring) for tests, so keytar can run against a real keyring,
// in-process and in child processes, without ever touching the developer's own keyring.
//
// startSecretService() makes a temp dir (mode 0700) holding a throwaway HOME / XDG_* tree, a D-Bus config
// and the bus socket; starts a private `dbus-daemon --nofork` on `unix:path=<dir>/run/bus` whose service
// directory is EMPTY (nothing is D-Bus-activatable on it: no real gnome-keyring, no gcr-prompter popping up
// on a desktop), then `gnome-keyring-daemon --foreground --unlock --components=secrets` with the password on
// stdin (it creates and unlocks a fresh "login" collection) and a minimal environment (no DISPLAY, no
// GNOME_KEYRING_CONTROL, …). It waits until org.freedesktop.secrets is owned and the login collection reports
// Locked=false. Both daemons are direct children of this process (so they get reaped, no zombies); stop()
// kills them and removes the dir. Leftovers are impossible in practice: a host-process 'exit' hook kills
// everything still running, and a tiny detached watchdog (`sh`, blocked reading a pipe from this process)
// kills the daemons and removes the dir when this process dies in any way, even SIGKILL. gnome-keyring also
// exits by itself when its bus goes away.
//
// Measured facts (keytar 7.9.0, libsecret 0.20.5, GLib 2.74, gnome-keyring 42.1, dbus 1.14.10, Debian 12,
// Node 20.20; times are of the keytar call itself, node startup excluded). The CLI wraps keychain calls in a
// timeout because of (b) and (c); note that a timeout cannot help against the findCredentials crash in (c).
//
// (a) No D-Bus session (DBUS_SESSION_BUS_ADDRESS unset, no DISPLAY, no $XDG_RUNTIME_DIR/bus): every keytar
//     call rejects in 1–4 ms: "Cannot autolaunch D-Bus without X11 $DISPLAY". DBUS_SESSION_BUS_ADDRESS at a
//     socket that does not exist (test/support/cli.ts uses unix:path=/nonexistent/mxs-test-bus): rejects in
//     1–2 ms: "Could not connect: No such file or directory".
// (b) A D-Bus session bus but no Secret Service running; it depends on the bus's .service files:
//     - no org.freedesktop.secrets.service (our private bus; startSecretService({ secrets: false })): every
//       call rejects in 2–10 ms: "The name org.freedesktop.secrets was not provided by any .service files"
//       (findCredentials: "GDBus.Error:org.freedesktop.DBus.Error.ServiceUnknown: The name …").
//     - the stock /usr/share/dbus-1/services/org.freedesktop.secrets.service (a normal desktop or SSH session
//       bus): the bus ACTIVATES gnome-keyring-daemon (~25 ms). With no login keyring and no usable prompter
//       (no display) getPassword resolves null (~25 ms) and setPassword rejects "Cannot create an item in a
//       locked collection" (~17 ms): it behaves like (c).
//     - a .service file whose program never claims the name (broken/hung activation): the call blocks for the
//       bus's service_start_timeout, 25 s by default, then rejects (measured 25 024 ms): "Error calling
//       StartServiceByName for org.freedesktop.secrets: Failed to activate service 'org.freedesktop.secrets':
//       timed out (service_start_timeout=25000ms)".
//     - Secret Service running but frozen (gnome-keyring SIGSTOPped): getPassword rejects after 50 s (two
//       25 s D-Bus call timeouts; measured 50 054 ms): "Timeout was reached".
//     - the bus itself frozen (dbus-daemon SIGSTOPped): getPassword never returned (killed after 90 s).
// (c) Login collection locked (SecretService.lock()). libsecret asks gnome-keyring to unlock, which needs a
//     prompter (org.gnome.keyring.SystemPrompter = gcr-prompter, started by D-Bus activation):
//     - no prompter activatable (our private bus), or gcr-prompter installed but no display (it exits with
//       "cannot open display"): the prompt is dismissed at once. getPassword RESOLVES null in 10–70 ms (a
//       locked keychain looks exactly like "no such item"!), setPassword rejects "Cannot create an item in a
//       locked collection" (15–40 ms), deletePassword resolves false (~3 ms) and the item stays, and
//       findCredentials CRASHES THE WHOLE PROCESS with SIGSEGV after ~60–80 ms (libsecret-CRITICAL
//       "secret_value_get_text: assertion 'value' failed", then keytar dereferences NULL): never call
//       findCredentials in-process (e.g. in a jest worker) against a keyring that may be locked.
//     - prompter activatable but never showing up (simulated by a .service file running `sleep`):
//       getPassword blocks 25 s (service_start_timeout) then resolves null (measured 25 041 ms);
//       findCredentials blocks 25 s then segfaults.
//     - a desktop with a working prompter shows an unlock dialog and the call blocks until the user answers
//       (libsecret puts no timeout on prompts; not measurable here, there is no display).
//     There is no unlock(): it needs a prompter, and neither `gnome-keyring-daemon --unlock` nor `--login`
//     run against the live daemon unlocks it (tried). Start a new service instead.
//
// In-process use in jest: two traps, both handled by SecretService.keytar() (and the env export that
// describeWithSecretService does in beforeAll).
//   1. process.env inside a jest test file is a COPY (jest-util createProcessEnv): assigning
//      process.env.DBUS_SESSION_BUS_ADDRESS there does not call setenv(), so libsecret (getenv) and child
//      processes spawned without an explicit env do not see it. We set it on the host process too (reached
//      through vm.runInThisContext('process')). Likewise process.on('exit') in a test file registers on the
//      copy and never fires; the exit hook is installed on the host process.
//   2. libsecret caches its D-Bus connection and its SecretService proxy (bound to the daemon's unique bus
//      name and an open session) for the life of the process. After the bus or the keyring daemon is stopped,
//      every in-process keytar call rejects at once ("The connection is closed"; "The name :1.0 was not
//      provided by any .service files" / "The session wrapping the secret does not exist" after a keyring
//      restart), and a later Secret Service, even at another address, is never picked up. jest reuses worker
//      processes across test files, so in-process keytar works with the FIRST service it connects to in that
//      worker only. keytar() detects the mismatch and throws a clear error; child processes are unaffected.

import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { accessSync, chmodSync, closeSync, constants, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Writable } from 'node:stream';
import vm from 'node:vm';

export type Keytar = typeof import('keytar');

export interface SecretService {
  /**
   * For child processes: DBUS_SESSION_BUS_ADDRESS (the private bus), XDG_RUNTIME_DIR, and HOME,
   * XDG_DATA_HOME, XDG_CONFIG_HOME, XDG_CACHE_HOME pointing into the throwaway dir. Spread it over the
   * child's env (`{ ...process.env, ...ss.env }`); keytar only needs DBUS_SESSION_BUS_ADDRESS.
   */
  env: Record<string, string>;
  /** The daemons' pids (direct children of this process) and the watchdog's. */
  pids: { dbus: number; keyring: number | null; watchdog: number };
  /** The temp dir (removed by stop()); dbus.log and keyring.log in it help when startup fails. */
  dir: string;
  /** Kills both daemons and the watchdog, waits until they are gone, removes the dir. Idempotent. */
  stop(): Promise<void>;
  /**
   * Locks the default ("login") collection, then checks it reports Locked=true; throws if that is not
   * supported (or there is no keyring). Irreversible for this instance (see (c) above); call keytar() first
   * if you also need it in-process.
   */
  lock(): Promise<void>;
  /**
   * keytar, loaded in THIS process and verified to talk to this service: sets DBUS_SESSION_BUS_ADDRESS in
   * the real process env and jest's copy (stop() puts back what keytar() changed), then a child process
   * writes a random item that in-process getPassword must read back (~100 ms, once). Throws if libsecret in
   * this process is already bound to another (typically an earlier, stopped) service. Resolves to the same
   * module on later calls. Call it before lock().
   */
  keytar(): Promise<Keytar>;
}

export interface StartSecretServiceOptions {
  /** false: start only the private bus, no Secret Service on it (the "keyring not running" case (b)). Default true. */
  secrets?: boolean;
  /** The keyring password piped to gnome-keyring-daemon --unlock. Default 'mxs-test-keyring'. */
  password?: string;
  /** Max wait for each daemon to become ready. Default 15 000 ms. */
  startTimeoutMs?: number;
}

// --- host process and per-process registry ------------------------------------------------------------

/** The real Node `process` (inside a jest test file, `process` is a copy; see trap 1 above). */
const hostProcess: NodeJS.Process = vm.runInThisContext('process');

interface Registry {
  live: Map<string, () => void>; // dir -> synchronous best-effort cleanup
  exitHook: boolean;
}

function registry(): Registry {
  const key = Symbol.for('mxs.test.secret-service.registry');
  const host = hostProcess as unknown as Record<symbol, Registry | undefined>;
  let reg = host[key];
  if (!reg) {
    reg = { live: new Map(), exitHook: false };
    host[key] = reg;
  }
  if (!reg.exitHook) {
    reg.exitHook = true;
    const r = reg;
    hostProcess.on('exit', () => {
      for (const cleanup of r.live.values()) cleanup();
      r.live.clear();
    });
  }
  return reg;
}

/** Sets (or with undefined, removes) a variable in both the real process env and jest's copy. */
function setProcessEnv(name: string, value: string | undefined): void {
  for (const env of new Set([hostProcess.env, process.env])) {
    if (value === undefined) delete env[name];
    else env[name] = value;
  }
}

interface SavedAddress {
  host: string | undefined;
  sandbox: string | undefined;
}

function restoreAddress(saved: SavedAddress): void {
  for (const [env, value] of [
    [hostProcess.env, saved.host],
    [process.env, saved.sandbox],
  ] as const) {
    if (value === undefined) delete env.DBUS_SESSION_BUS_ADDRESS;
    else env.DBUS_SESSION_BUS_ADDRESS = value;
  }
}

// --- availability -------------------------------------------------------------------------------------

const REQUIRED_BINARIES = ['dbus-daemon', 'dbus-send', 'gnome-keyring-daemon'] as const;

function findOnPath(bin: string): string | null {
  for (const dir of (hostProcess.env.PATH ?? process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, bin);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return null;
}

function loadKeytarModule(): Keytar {
  return createRequire(import.meta.url)('keytar') as Keytar;
}

function availabilitySync(): { ok: true } | { ok: false; reason: string } {
  if (process.env.MXS_TEST_SECRET_SERVICE === '0') return { ok: false, reason: 'Secret Service tests disabled by MXS_TEST_SECRET_SERVICE=0' };
  if (process.platform !== 'linux') return { ok: false, reason: `the Secret Service harness needs Linux (this is ${process.platform})` };
  const problems: string[] = [];
  const missing = REQUIRED_BINARIES.filter((b) => !findOnPath(b));
  if (missing.length) problems.push(`missing on PATH: ${missing.join(', ')} (apt-get install dbus gnome-keyring)`);
  try {
    const k = loadKeytarModule();
    if (typeof k.getPassword !== 'function') problems.push('keytar loaded but has no getPassword()');
  } catch (err) {
    problems.push(`keytar does not load (${firstLine(err)}); it is an optional dependency built against libsecret (apt-get install libsecret-1-dev, then npm rebuild keytar)`);
  }
  return problems.length ? { ok: false, reason: `Secret Service unavailable: ${problems.join('; ')}` } : { ok: true };
}

/** Whether startSecretService() can work here: the binaries it needs, whether keytar loads (MXS_TEST_SECRET_SERVICE=0: never). */
export async function secretServiceAvailability(): Promise<{ ok: true } | { ok: false; reason: string }> {
  return availabilitySync();
}

// --- starting and stopping ----------------------------------------------------------------------------

function firstLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split('\n')[0]!.trim();
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function xml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (exited(child)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.off('exit', onExit);
      resolve(false);
    }, ms);
    const onExit = () => {
      clearTimeout(timer);
      resolve(true);
    };
    child.once('exit', onExit);
  });
}

async function kill(child: ChildProcess | undefined): Promise<void> {
  if (!child || exited(child)) return;
  child.kill('SIGTERM');
  if (await waitExit(child, 3000)) return;
  child.kill('SIGKILL');
  await waitExit(child, 3000);
}

function readLog(file: string): string {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-15).join('\n');
  } catch {
    return '';
  }
}

/** dbus-send against a given bus; resolves stdout, rejects with stderr. */
function dbusSend(address: string, args: string[], timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      'dbus-send',
      [`--bus=${address}`, '--print-reply', `--reply-timeout=${timeoutMs}`, ...args],
      { timeout: timeoutMs + 2000, env: { PATH: hostProcess.env.PATH ?? '' } },
      (err, stdout, stderr) => (err ? reject(new Error(`dbus-send ${args.slice(0, 3).join(' ')}: ${stderr.trim() || err.message}`)) : resolve(stdout)),
    );
  });
}

async function pollUntil(what: string, timeoutMs: number, abort: () => string | null, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    const aborted = abort();
    if (aborted) throw new Error(aborted);
    try {
      if (await check()) return;
    } catch (err) {
      last = firstLine(err);
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${last})` : ''}`);
    await sleep(50);
  }
}

const SECRETS = 'org.freedesktop.secrets';
const SECRETS_PATH = '/org/freedesktop/secrets';

async function defaultCollection(address: string): Promise<string> {
  const out = await dbusSend(address, [`--dest=${SECRETS}`, SECRETS_PATH, 'org.freedesktop.Secret.Service.ReadAlias', 'string:default']);
  const m = /object path "([^"]+)"/.exec(out);
  return m && m[1] !== '/' ? m[1]! : `${SECRETS_PATH}/collection/login`;
}

async function collectionLocked(address: string, collection: string): Promise<boolean> {
  const out = await dbusSend(address, [
    `--dest=${SECRETS}`,
    collection,
    'org.freedesktop.DBus.Properties.Get',
    'string:org.freedesktop.Secret.Collection',
    'string:Locked',
  ]);
  if (/boolean true/.test(out)) return true;
  if (/boolean false/.test(out)) return false;
  throw new Error(`unexpected reply to Get Locked: ${out.trim()}`);
}

/**
 * Runs `body` (an async function body with keytar as `k`) in a child `node` whose env is `PATH` + `env`.
 * Resolves its stdout; rejects with its stderr, exit code or signal.
 */
export function runKeytarChild(env: Record<string, string>, body: string, timeoutMs = 30_000): Promise<string> {
  const keytarPath = createRequire(import.meta.url).resolve('keytar');
  const script = `const k = require(${JSON.stringify(keytarPath)}); (async () => { ${body} })().then(() => process.exit(0), (e) => { process.stderr.write(String(e && e.message || e)); process.exit(1); });`;
  return new Promise((resolve, reject) => {
    execFile(
      hostProcess.execPath,
      ['-e', script],
      { env: { PATH: hostProcess.env.PATH ?? '/usr/bin:/bin', ...env }, timeout: timeoutMs },
      (err, stdout, stderr) => {
        if (!err) return resolve(stdout);
        const e = err as Error & { code?: unknown; signal?: unknown };
        reject(new Error(`keytar child failed (code ${String(e.code)}, signal ${String(e.signal)}): ${stderr.trim() || e.message}`));
      },
    );
  });
}

/** Starts a private dbus-daemon and (unless { secrets: false }) a private, unlocked gnome-keyring on it. */
export async function startSecretService(options: StartSecretServiceOptions = {}): Promise<SecretService> {
  const { secrets = true, password = 'mxs-test-keyring', startTimeoutMs = 15_000 } = options;
  const avail = availabilitySync();
  if (!avail.ok) throw new Error(avail.reason);

  // A unix socket path must stay under ~107 bytes; fall back to /tmp when TMPDIR is long.
  let base = tmpdir();
  if (path.join(base, 'mxs-ss-XXXXXX', 'run', 'bus').length > 100) base = '/tmp';
  const dir = mkdtempSync(path.join(base, 'mxs-ss-'));
  chmodSync(dir, 0o700);
  const home = path.join(dir, 'home');
  const runtime = path.join(dir, 'run');
  const services = path.join(runtime, 'services'); // stays empty: nothing can be D-Bus-activated
  const socket = path.join(runtime, 'bus');
  const address = `unix:path=${socket}`;
  const env: Record<string, string> = {
    DBUS_SESSION_BUS_ADDRESS: address,
    XDG_RUNTIME_DIR: runtime,
    HOME: home,
    XDG_DATA_HOME: path.join(home, '.local', 'share'),
    XDG_CONFIG_HOME: path.join(home, '.config'),
    XDG_CACHE_HOME: path.join(home, '.cache'),
  };
  for (const d of [env.XDG_DATA_HOME!, env.XDG_CONFIG_HOME!, env.XDG_CACHE_HOME!, services]) mkdirSync(d, { recursive: true, mode: 0o700 });
  chmodSync(runtime, 0o700);
  const config = path.join(dir, 'bus.conf');
  writeFileSync(
    config,
    `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=${xml(socket)}</listen>
  <auth>EXTERNAL</auth>
  <servicedir>${xml(services)}</servicedir>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
`,
  );
  // The daemons get a minimal env: nothing from the developer's desktop session leaks in.
  const daemonEnv: Record<string, string> = { PATH: hostProcess.env.PATH ?? '/usr/bin:/bin', LANG: 'C.UTF-8', ...env };

  let dbus: ChildProcess | undefined;
  let keyring: ChildProcess | undefined;
  let watchdog: ChildProcess | undefined;
  const reg = registry();
  const syncCleanup = () => {
    for (const c of [watchdog, keyring, dbus]) {
      if (c?.pid && !exited(c)) {
        try {
          hostProcess.kill(c.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
    rmSync(dir, { recursive: true, force: true });
  };
  reg.live.set(dir, syncCleanup);

  const logFd = (name: string) => openSync(path.join(dir, name), 'a', 0o600);
  const spawnLogged = (cmd: string, args: string[], log: string, stdin: 'pipe' | 'ignore') => {
    const fd = logFd(log);
    try {
      const child = spawn(cmd, args, { env: daemonEnv, stdio: [stdin, fd, fd] });
      child.on('error', () => {}); // reported through exitCode / the readiness checks
      child.unref();
      return child;
    } finally {
      closeSync(fd);
    }
  };

  let restoreEnv: SavedAddress | undefined; // set by keytar() when it changed the process env
  let stopped: Promise<void> | undefined;
  const stop = () =>
    (stopped ??= (async () => {
      if (restoreEnv) restoreAddress(restoreEnv);
      if (watchdog && !exited(watchdog)) watchdog.kill('SIGKILL'); // first, so it can never kill a reused pid
      await kill(keyring);
      await kill(dbus);
      rmSync(dir, { recursive: true, force: true });
      reg.live.delete(dir);
    })());

  try {
    dbus = spawnLogged('dbus-daemon', [`--config-file=${config}`, '--nofork', '--nopidfile'], 'dbus.log', 'ignore');
    const dbusDied = () => (exited(dbus!) ? `dbus-daemon exited (${dbus!.exitCode ?? dbus!.signalCode}): ${readLog(path.join(dir, 'dbus.log'))}` : null);
    await pollUntil('the private dbus-daemon', startTimeoutMs, dbusDied, async () => {
      if (!existsSync(socket)) return false;
      await dbusSend(address, ['--dest=org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus.GetId']);
      return true;
    });

    if (secrets) {
      keyring = spawnLogged('gnome-keyring-daemon', ['--foreground', '--unlock', '--components=secrets'], 'keyring.log', 'pipe');
      keyring.stdin!.on('error', () => {});
      keyring.stdin!.end(password);
      const keyringDied = () =>
        exited(keyring!) ? `gnome-keyring-daemon exited (${keyring!.exitCode ?? keyring!.signalCode}): ${readLog(path.join(dir, 'keyring.log'))}` : dbusDied();
      await pollUntil(`${SECRETS} on the private bus`, startTimeoutMs, keyringDied, async () => {
        const out = await dbusSend(address, ['--dest=org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus.NameHasOwner', `string:${SECRETS}`]);
        return /boolean true/.test(out);
      });
      await pollUntil('an unlocked default collection', startTimeoutMs, keyringDied, async () => !(await collectionLocked(address, await defaultCollection(address))));
    }

    // The watchdog: blocked on a pipe from us; EOF (we died, however) -> kill the daemons, remove the dir.
    const pids = [dbus.pid, keyring?.pid].filter((p): p is number => typeof p === 'number');
    watchdog = spawn('sh', ['-c', 'read _ignored; kill -KILL "$@" 2>/dev/null; rm -rf -- "$MXS_SS_DIR"', 'mxs-secret-service-watchdog', ...pids.map(String)], {
      detached: true, // own process group: a Ctrl-C to ours must not kill it before it cleans up
      stdio: ['pipe', 'ignore', 'ignore'],
      env: { PATH: daemonEnv.PATH!, MXS_SS_DIR: dir },
    });
    watchdog.on('error', () => {});
    watchdog.stdin!.on('error', () => {});
    watchdog.unref();
    (watchdog.stdin as Writable & { unref?: () => void }).unref?.();
  } catch (err) {
    await stop();
    throw new Error(`startSecretService: ${firstLine(err)}`, { cause: err });
  }

  let keytarPromise: Promise<Keytar> | undefined;
  const lock = async () => {
    if (!secrets) throw new Error('lock(): this instance has no Secret Service (started with { secrets: false })');
    const collection = await defaultCollection(address);
    try {
      const out = await dbusSend(address, [`--dest=${SECRETS}`, SECRETS_PATH, 'org.freedesktop.Secret.Service.Lock', `array:objpath:${collection}`]);
      // Lock returns (locked objects, prompt); a prompt other than "/" would need a prompter we do not have.
      if (!/object path "\/"\s*$/.test(out.trim())) throw new Error(`Lock asked for a prompt, which this harness cannot answer: ${out.trim()}`);
      if (!(await collectionLocked(address, collection))) throw new Error(`${collection} still reports Locked=false after Lock`);
    } catch (err) {
      throw new Error(`lock() is not supported by this Secret Service: ${firstLine(err)}`, { cause: err });
    }
  };

  const keytar = () =>
    (keytarPromise ??= (async () => {
      if (!secrets) throw new Error('keytar(): this instance has no Secret Service (started with { secrets: false })');
      if (hostProcess.env.DBUS_SESSION_BUS_ADDRESS !== address || process.env.DBUS_SESSION_BUS_ADDRESS !== address) {
        restoreEnv ??= { host: hostProcess.env.DBUS_SESSION_BUS_ADDRESS, sandbox: process.env.DBUS_SESSION_BUS_ADDRESS };
        setProcessEnv('DBUS_SESSION_BUS_ADDRESS', address);
      }
      const kt = loadKeytarModule();
      // Probe: a child process (bound to this service by its env) writes a random item; in-process keytar
      // must read it back. Read-only in-process, so a foreign keyring libsecret may be bound to is never written.
      const probe = { service: 'mxs-secret-service-harness-probe', account: randomUUID(), value: randomUUID() };
      await runKeytarChild(env, `await k.setPassword(${JSON.stringify(probe.service)}, ${JSON.stringify(probe.account)}, ${JSON.stringify(probe.value)})`);
      const mismatch = (why: string) =>
        new Error(
          `keytar(): in-process keytar does not reach this Secret Service (${why}). libsecret keeps the first D-Bus connection ` +
            'a process makes for the life of the process, and jest reuses workers across test files, so in-process keytar only ' +
            'works with the first Secret Service its worker connected to. Use a child process with ss.env instead, or make sure ' +
            'no earlier test in this worker used keytar in-process.',
        );
      let got: string | null;
      try {
        got = await kt.getPassword(probe.service, probe.account);
      } catch (err) {
        throw mismatch(`getPassword failed: ${firstLine(err)}`);
      }
      if (got !== probe.value) throw mismatch('a probe item written to it was not found in-process');
      await kt.deletePassword(probe.service, probe.account);
      return kt;
    })());

  return {
    env,
    pids: { dbus: dbus.pid!, keyring: keyring?.pid ?? null, watchdog: watchdog!.pid! },
    dir,
    stop,
    lock,
    keytar,
  };
}

// --- jest integration ---------------------------------------------------------------------------------

/**
 * A describe block with its own private Secret Service: started in beforeAll (which also points this
 * worker's real DBUS_SESSION_BUS_ADDRESS at it, so in-process keychain code can never reach the developer's
 * keyring), stopped in afterAll (env restored). Unavailable: locally console.warn + describe.skip; under
 * CI=true a failing test states the reason (a missing keyring must fail CI, never skip silently).
 */
export function describeWithSecretService(name: string, fn: (ss: () => SecretService) => void): void {
  const avail = availabilitySync();
  const notStarted = (): SecretService => {
    throw new Error('describeWithSecretService: the Secret Service is not running (call ss() inside tests or hooks, not at describe time)');
  };
  if (!avail.ok) {
    if (process.env.CI === 'true') {
      describe(name, () => {
        test('a Secret Service is available (required under CI)', () => {
          throw new Error(avail.reason);
        });
        describe.skip('(skipped: no Secret Service)', () => fn(notStarted));
      });
    } else {
      console.warn(`${name}: skipped. ${avail.reason}`);
      describe.skip(name, () => fn(notStarted));
    }
    return;
  }
  describe(name, () => {
    let service: SecretService | undefined;
    let savedAddress: SavedAddress | undefined;
    beforeAll(async () => {
      service = await startSecretService();
      savedAddress = { host: hostProcess.env.DBUS_SESSION_BUS_ADDRESS, sandbox: process.env.DBUS_SESSION_BUS_ADDRESS };
      setProcessEnv('DBUS_SESSION_BUS_ADDRESS', service.env.DBUS_SESSION_BUS_ADDRESS);
    }, 60_000);
    afterAll(async () => {
      if (savedAddress) restoreAddress(savedAddress);
      await service?.stop();
    }, 30_000);
    fn(() => service ?? notStarted());
  });
}
