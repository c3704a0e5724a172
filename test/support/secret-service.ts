// A real, private Secret Service (gnome-keyring) for tests: keytar runs against a real keyring, in-process and in
// child processes, never against the developer's own.
//
// startSecretService() makes a temp dir (0700) with a throwaway HOME / XDG_* tree and starts, as direct children of
// this process, a private `dbus-daemon` whose service directory is EMPTY (nothing is D-Bus-activatable: no real
// gnome-keyring, no gcr-prompter popping up on a desktop), then `gnome-keyring-daemon --unlock` with the password on
// stdin (a fresh, unlocked "login" collection) and a minimal environment. stop() kills both and removes the dir;
// should this process die first, an 'exit' hook does, or failing that (SIGKILL) a detached watchdog `sh` blocked
// on a pipe from this process.
//
// Measured with keytar 7.9.0, libsecret 0.20.5, gnome-keyring 42.1, dbus 1.14.10 (Debian 12); times of the keytar
// call itself. The CLI's keychain timeouts exist because of (b) and (c); no timeout helps against the crash in (c).
// (a) No D-Bus session: every call rejects in 1–4 ms ("Cannot autolaunch D-Bus without X11 $DISPLAY"; with
//     DBUS_SESSION_BUS_ADDRESS at a missing socket, as test/support/cli.ts gives children: "Could not connect").
// (b) A session bus, no Secret Service on it:
//     - nothing activatable (our bus with { secrets: false }): rejects in 2–10 ms ("The name
//       org.freedesktop.secrets was not provided by any .service files");
//     - the stock .service file (a desktop or SSH session): the bus activates gnome-keyring (~25 ms); without a
//       login keyring or a display it behaves like (c);
//     - an activation that never claims the name: blocks 25 s (the bus's service_start_timeout), then rejects;
//     - gnome-keyring frozen (SIGSTOP): getPassword rejects after 50 s ("Timeout was reached");
//     - dbus-daemon frozen: getPassword never returns.
// (c) Login collection locked (lock()): unlocking needs a prompter (gcr-prompter); with none, or no display, the
//     prompt is dismissed at once: getPassword RESOLVES null (a locked keychain looks like "no such item"),
//     setPassword rejects "Cannot create an item in a locked collection", deletePassword resolves false and the
//     item stays, and findCredentials CRASHES THE PROCESS (SIGSEGV in keytar): never call it in-process against
//     a keyring that may be locked. A prompter that never shows up: 25 s, then the same. A desktop prompter: the
//     call blocks until the user answers. There is no unlock (it needs a prompter): start a new service.
//
// Two traps of in-process keytar in jest, both handled here:
// 1. process.env in a test file is jest's COPY: setting DBUS_SESSION_BUS_ADDRESS there reaches neither libsecret
//    (getenv) nor children spawned without an explicit env, and process.on('exit') there never fires. So the
//    address and the exit hook go on the host process too (vm.runInThisContext('process')).
// 2. libsecret keeps its first D-Bus connection for the life of the process, and jest reuses workers across test
//    files: in-process keytar only ever reaches the first service its worker connected to. keytar() checks it does
//    and throws otherwise; child processes are unaffected.

import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { accessSync, chmodSync, closeSync, constants, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Writable } from 'node:stream';
import vm from 'node:vm';

type Keytar = typeof import('keytar');

export interface SecretService {
  /** For child processes, over their env: DBUS_SESSION_BUS_ADDRESS (all keytar needs), XDG_RUNTIME_DIR, and HOME and XDG_* in the temp dir. */
  env: Record<string, string>;
  /** The daemons' pids (direct children of this process) and the watchdog's. */
  pids: { dbus: number; keyring: number | null; watchdog: number };
  /** The temp dir (removed by stop()); dbus.log and keyring.log in it help when startup fails. */
  dir: string;
  /** Kills both daemons and the watchdog, waits until they are gone, removes the dir. Idempotent. */
  stop(): Promise<void>;
  /** Locks the login collection and checks it says so; irreversible (see (c)). Call keytar() first if you need it in-process. */
  lock(): Promise<void>;
  /**
   * keytar in THIS process, checked to reach this service (trap 2): a child writes a random item that in-process
   * getPassword must read back (~100 ms, once). Sets DBUS_SESSION_BUS_ADDRESS in this process; stop() restores it.
   */
  keytar(): Promise<Keytar>;
}

/** The real Node `process` (inside a jest test file, `process` is a copy: trap 1). */
const hostProcess: NodeJS.Process = vm.runInThisContext('process');

/** Synchronous cleanups of the services still running, one registry and one exit hook per host process. */
function liveServices(): Map<string, () => void> {
  const key = Symbol.for('mxs.test.secret-service.live');
  const host = hostProcess as unknown as Record<symbol, Map<string, () => void> | undefined>;
  let live = host[key];
  if (!live) {
    const created = new Map<string, () => void>();
    hostProcess.on('exit', () => {
      for (const cleanup of created.values()) cleanup();
    });
    live = host[key] = created;
  }
  return live;
}

type BusAddress = { host: string | undefined; sandbox: string | undefined };

const currentAddress = (): BusAddress => ({ host: hostProcess.env.DBUS_SESSION_BUS_ADDRESS, sandbox: process.env.DBUS_SESSION_BUS_ADDRESS });

/** Sets DBUS_SESSION_BUS_ADDRESS in the real process env and jest's copy (undefined removes it). */
function setAddress(address: BusAddress): void {
  for (const [env, value] of [
    [hostProcess.env, address.host],
    [process.env, address.sandbox],
  ] as const) {
    if (value === undefined) delete env.DBUS_SESSION_BUS_ADDRESS;
    else env.DBUS_SESSION_BUS_ADDRESS = value;
  }
}

const firstLine = (err: unknown): string => (err instanceof Error ? err.message : String(err)).split('\n')[0]!.trim();

const loadKeytar = (): Keytar => createRequire(import.meta.url)('keytar') as Keytar;

function onPath(bin: string): boolean {
  const dirs = (hostProcess.env.PATH ?? '').split(path.delimiter).filter(Boolean);
  return dirs.some((dir) => {
    try {
      accessSync(path.join(dir, bin), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/** Whether startSecretService() can work here: the binaries it needs, and keytar loading (MXS_TEST_SECRET_SERVICE=0: never). */
export function secretServiceAvailability(): { ok: true } | { ok: false; reason: string } {
  if (process.env.MXS_TEST_SECRET_SERVICE === '0') return { ok: false, reason: 'Secret Service tests disabled by MXS_TEST_SECRET_SERVICE=0' };
  if (process.platform !== 'linux') return { ok: false, reason: `the Secret Service harness needs Linux (this is ${process.platform})` };
  const problems: string[] = [];
  const missing = ['dbus-daemon', 'dbus-send', 'gnome-keyring-daemon'].filter((b) => !onPath(b));
  if (missing.length) problems.push(`missing on PATH: ${missing.join(', ')} (apt-get install dbus gnome-keyring)`);
  try {
    loadKeytar();
  } catch (err) {
    problems.push(`keytar does not load (${firstLine(err)}); it is an optional dependency built against libsecret (apt-get install libsecret-1-dev, then npm rebuild keytar)`);
  }
  return problems.length ? { ok: false, reason: `Secret Service unavailable: ${problems.join('; ')}` } : { ok: true };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

const xml = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

const exited = (child: ChildProcess): boolean => child.exitCode !== null || child.signalCode !== null;

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

/** Polls `check` every 50 ms for up to 15 s; `died` names a daemon that exited meanwhile. */
async function pollUntil(what: string, died: () => string | null, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 15_000;
  let last = '';
  for (;;) {
    const death = died();
    if (death) throw new Error(death);
    try {
      if (await check()) return;
    } catch (err) {
      last = firstLine(err);
    }
    if (Date.now() > deadline) throw new Error(`timed out after 15 s waiting for ${what}${last ? ` (last error: ${last})` : ''}`);
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
  const out = await dbusSend(address, [`--dest=${SECRETS}`, collection, 'org.freedesktop.DBus.Properties.Get', 'string:org.freedesktop.Secret.Collection', 'string:Locked']);
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
    execFile(hostProcess.execPath, ['-e', script], { env: { PATH: hostProcess.env.PATH ?? '/usr/bin:/bin', ...env }, timeout: timeoutMs }, (err, stdout, stderr) => {
      if (!err) return resolve(stdout);
      const e = err as Error & { code?: unknown; signal?: unknown };
      reject(new Error(`keytar child failed (code ${String(e.code)}, signal ${String(e.signal)}): ${stderr.trim() || e.message}`));
    });
  });
}

/** Starts a private dbus-daemon and (unless { secrets: false }, case (b)) a private, unlocked gnome-keyring on it. */
export async function startSecretService({ secrets = true } = {}): Promise<SecretService> {
  const avail = secretServiceAvailability();
  if (!avail.ok) throw new Error(avail.reason);

  // A unix socket path must stay under ~107 bytes: /tmp when TMPDIR is long.
  const base = path.join(tmpdir(), 'mxs-ss-XXXXXX', 'run', 'bus').length > 100 ? '/tmp' : tmpdir();
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
  // Nothing from the developer's desktop session leaks into the daemons.
  const daemonEnv: Record<string, string> = { PATH: hostProcess.env.PATH ?? '/usr/bin:/bin', LANG: 'C.UTF-8', ...env };

  let dbus: ChildProcess | undefined;
  let keyring: ChildProcess | undefined;
  let watchdog: ChildProcess | undefined;
  const live = liveServices();
  live.set(dir, () => {
    for (const c of [watchdog, keyring, dbus]) if (c?.pid && !exited(c)) c.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  const spawnLogged = (cmd: string, args: string[], log: string, stdin: 'pipe' | 'ignore') => {
    const fd = openSync(path.join(dir, log), 'a', 0o600);
    try {
      const child = spawn(cmd, args, { env: daemonEnv, stdio: [stdin, fd, fd] });
      child.on('error', () => {}); // shows as an exit in the readiness checks
      child.unref();
      return child;
    } finally {
      closeSync(fd);
    }
  };

  let savedAddress: BusAddress | undefined; // set by keytar() when it changed the address
  let stopped: Promise<void> | undefined;
  const stop = () =>
    (stopped ??= (async () => {
      if (savedAddress) setAddress(savedAddress);
      if (watchdog && !exited(watchdog)) watchdog.kill('SIGKILL'); // first, so it can never kill a reused pid
      await kill(keyring);
      await kill(dbus);
      rmSync(dir, { recursive: true, force: true });
      live.delete(dir);
    })());

  const died = (child: ChildProcess, name: string, log: string): string | null =>
    exited(child) ? `${name} exited (${child.exitCode ?? child.signalCode}): ${readLog(path.join(dir, log))}` : null;
  try {
    dbus = spawnLogged('dbus-daemon', [`--config-file=${config}`, '--nofork', '--nopidfile'], 'dbus.log', 'ignore');
    const dbusDied = () => died(dbus!, 'dbus-daemon', 'dbus.log');
    await pollUntil('the private dbus-daemon', dbusDied, async () => {
      if (!existsSync(socket)) return false;
      await dbusSend(address, ['--dest=org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus.GetId']);
      return true;
    });

    if (secrets) {
      keyring = spawnLogged('gnome-keyring-daemon', ['--foreground', '--unlock', '--components=secrets'], 'keyring.log', 'pipe');
      keyring.stdin!.on('error', () => {});
      keyring.stdin!.end('mxs-test-keyring');
      const keyringDied = () => died(keyring!, 'gnome-keyring-daemon', 'keyring.log') ?? dbusDied();
      await pollUntil(`${SECRETS} on the private bus`, keyringDied, async () => {
        const out = await dbusSend(address, ['--dest=org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus.NameHasOwner', `string:${SECRETS}`]);
        return /boolean true/.test(out);
      });
      await pollUntil('an unlocked default collection', keyringDied, async () => !(await collectionLocked(address, await defaultCollection(address))));
    }

    // The watchdog reads a pipe from us; EOF (we died, however) -> kill the daemons, remove the dir.
    const pids = [dbus.pid, keyring?.pid].filter((p): p is number => typeof p === 'number');
    watchdog = spawn('sh', ['-c', 'read _ignored; kill -KILL "$@" 2>/dev/null; rm -rf -- "$MXS_SS_DIR"', 'mxs-secret-service-watchdog', ...pids.map(String)], {
      detached: true, // its own process group: a Ctrl-C to ours must not kill it before it cleans up
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

  const noService = (what: string) => new Error(`${what}: this instance has no Secret Service (started with { secrets: false })`);
  const lock = async () => {
    if (!secrets) throw noService('lock()');
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

  let keytarPromise: Promise<Keytar> | undefined;
  const keytar = () =>
    (keytarPromise ??= (async () => {
      if (!secrets) throw noService('keytar()');
      const before = currentAddress();
      if (before.host !== address || before.sandbox !== address) {
        savedAddress ??= before;
        setAddress({ host: address, sandbox: address });
      }
      const kt = loadKeytar();
      // A child (bound to this service by its env) writes; in-process keytar only reads, so a foreign keyring it
      // may be bound to is never written.
      const probe = { service: 'mxs-secret-service-harness-probe', account: randomUUID(), value: randomUUID() };
      await runKeytarChild(env, `await k.setPassword(${JSON.stringify(probe.service)}, ${JSON.stringify(probe.account)}, ${JSON.stringify(probe.value)})`);
      const mismatch = (why: string) =>
        new Error(
          `keytar(): in-process keytar does not reach this Secret Service (${why}). libsecret keeps the first D-Bus connection ` +
            'of a process, and jest reuses workers across test files: use a child process with ss.env, or make sure no earlier ' +
            'test in this worker used keytar in-process.',
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

  return { env, pids: { dbus: dbus.pid!, keyring: keyring?.pid ?? null, watchdog: watchdog!.pid! }, dir, stop, lock, keytar };
}

/**
 * A describe block with its own private Secret Service, started in beforeAll (which also points this worker's real
 * DBUS_SESSION_BUS_ADDRESS at it, so in-process keychain code can never reach the developer's keyring) and stopped
 * in afterAll. Unavailable: skipped with the reason locally, a failing test under CI=true.
 */
export function describeWithSecretService(name: string, fn: (ss: () => SecretService) => void): void {
  const avail = secretServiceAvailability();
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
    let saved: BusAddress | undefined;
    beforeAll(async () => {
      service = await startSecretService();
      saved = currentAddress();
      const address = service.env.DBUS_SESSION_BUS_ADDRESS;
      setAddress({ host: address, sandbox: address });
    }, 60_000);
    afterAll(async () => {
      if (saved) setAddress(saved);
      await service?.stop();
    }, 30_000);
    fn(() => service ?? notStarted());
  });
}
