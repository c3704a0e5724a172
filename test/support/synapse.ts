// A real Synapse homeserver for tests.
//
// ensureSynapseInstalled() keeps a Python venv with a pinned matrix-synapse under <repo>/.cache/synapse-venv;
// ensureSynapseInstalled(OAUTH_SYNAPSE_INSTALL) keeps a second one, .cache/synapse-oauth-venv, with
// matrix-synapse[oidc] 1.156.0 (the last release that delegates auth to a generic OAuth server; see
// oauth-homeserver.ts), and startSynapse({install: OAUTH_SYNAPSE_INSTALL, ...}) runs that one.
// startSynapse() runs a throwaway homeserver (temp dir, SQLite, 127.0.0.1, free port) and returns a handle.
// jest's globalSetup (global-setup.ts) starts one shared server per run and passes it to test files through
// MXS_TEST_SYNAPSE_URL / MXS_TEST_SYNAPSE_VERSION / MXS_TEST_SYNAPSE_SHARED_SECRET; test files wrap their
// suites in describeWithSynapse(). Test files may start extra servers with other token lifetimes via
// startSynapse({...}) (the venv is shared) and must stop() them in afterAll.
//
// This module is also loaded by globalSetup, outside jest's module system, through Node's require() and
// jest's '.ts' hook (see global-setup.ts), and by scripts/synapse.mjs as a transpiled copy: keep it free of
// top-level await, of import.meta and of runtime imports other than node: builtins.

import { spawn, type ChildProcess } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';

/** The Synapse release the tests run against (bump deliberately; CI installs exactly this). */
export const SYNAPSE_PINNED_VERSION = '1.163.2';

/** Which matrix-synapse a venv holds: pip requirement `matrix-synapse${extras}==${version}` in `venvDir()`. */
export interface SynapseInstallSpec {
  /** Exact matrix-synapse release. */
  version: string;
  /** pip extras including brackets, e.g. '[oidc]'; '' for none. */
  extras: string;
  /** Python modules the extras bring, checked on import: a venv without them counts as not installed. */
  imports: string[];
  /** The venv directory (a function: it reads env vars and the cwd when called). */
  venvDir(): string;
}

/** The default install: SYNAPSE_PINNED_VERSION in .cache/synapse-venv (MXS_SYNAPSE_VENV overrides). */
export const DEFAULT_SYNAPSE_INSTALL: SynapseInstallSpec = {
  version: SYNAPSE_PINNED_VERSION,
  extras: '',
  imports: [],
  venvDir: () => synapseVenvDir(),
};

/**
 * Synapse 1.156.0 is the last release with `experimental_features.msc3861` (auth delegated to any OAuth 2.0
 * server); 1.157 removed it. The `oidc` extra brings authlib, which that code path needs.
 */
export const SYNAPSE_OAUTH_PINNED_VERSION = '1.156.0';

/** The OAuth-delegating install: .cache/synapse-oauth-venv (MXS_SYNAPSE_OAUTH_VENV overrides). */
export const OAUTH_SYNAPSE_INSTALL: SynapseInstallSpec = {
  version: SYNAPSE_OAUTH_PINNED_VERSION,
  extras: '[oidc]',
  imports: ['authlib'],
  venvDir: () => process.env.MXS_SYNAPSE_OAUTH_VENV || path.join(repoRoot(), '.cache', 'synapse-oauth-venv'),
};

/** Users that globalSetup registers on the shared test server (`@alice:localhost`, `@bob:localhost`). */
export const TEST_USERS = {
  alice: { user: 'alice', password: 'alice-pw-1', userId: '@alice:localhost' },
  bob: { user: 'bob', password: 'bob-pw-1', userId: '@bob:localhost' },
} as const;

export interface StartSynapseOptions {
  /** `refreshable_access_token_lifetime`, Synapse duration syntax ('6s', '5m'; a number is ms). `null` disables refresh tokens. Default '6s'. */
  accessTokenLifetime?: string | number | null;
  /** `refresh_token_lifetime`. `null` = refresh tokens never expire. Default '1h'. */
  refreshTokenLifetime?: string | number | null;
  /** `session_lifetime`. Default: unset (sessions never end). Must be ≥ the other lifetimes or Synapse refuses to start. */
  sessionLifetime?: string | number;
  /** `nonrefreshable_access_token_lifetime` (tokens of clients that did not ask for a refresh token). Default: unset. */
  nonrefreshableAccessTokenLifetime?: string | number;
  /** Extra top-level homeserver.yaml keys, applied last (they override the defaults above; `undefined` removes a key). */
  extraConfig?: Record<string, unknown>;
  /** Which installed Synapse to run. Default DEFAULT_SYNAPSE_INSTALL. */
  install?: SynapseInstallSpec;
}

export interface SynapseHandle {
  /** `http://127.0.0.1:PORT` (no trailing slash). */
  baseUrl: string;
  serverName: 'localhost';
  /** Synapse's own version string, e.g. `1.163.2`. */
  version: string;
  /** The server's temp dir (config, SQLite db, logs); removed by stop(). */
  dir: string;
  port: number;
  /** Secret for the shared-secret registration API (see registerUserWithSecret). */
  registrationSharedSecret: string;
  /** Synapse's log file (WARNING and above unless MXS_SYNAPSE_LOG_LEVEL says otherwise). */
  logFile: string;
  /** Registers a user (`@user:localhost`) through the shared-secret admin API. */
  registerUser(user: string, password: string, opts?: { admin?: boolean }): Promise<void>;
  /** SIGTERM, SIGKILL after 5 s, then removes `dir` (kept when MXS_SYNAPSE_KEEP=1). Idempotent. */
  stop(): Promise<void>;
}

const log = (msg: string): void => {
  process.stderr.write(`[synapse] ${msg}\n`);
};

// ---------------------------------------------------------------------------------------------------------------
// Installation

/** The repo root: the nearest directory above the cwd whose package.json is this project's; else the cwd. */
export function repoRoot(): string {
  let dir = process.cwd();
  for (;;) {
    const pkg = path.join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'mxs') return dir;
      } catch {
        // not ours; keep looking
      }
    }
    const parent = path.dirname(dir);
    if (parent === dir) return process.cwd();
    dir = parent;
  }
}

/** Where the venv lives: MXS_SYNAPSE_VENV, or <repo>/.cache/synapse-venv. */
export function synapseVenvDir(): string {
  return process.env.MXS_SYNAPSE_VENV || path.join(repoRoot(), '.cache', 'synapse-venv');
}

function venvPython(venv: string): string {
  return process.platform === 'win32' ? path.join(venv, 'Scripts', 'python.exe') : path.join(venv, 'bin', 'python');
}

interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Set when the program could not be started at all (e.g. ENOENT). */
  spawnError?: NodeJS.ErrnoException;
}

/** Runs a program to completion. With `progress`, its output lines are also echoed to stderr. */
function run(cmd: string, args: string[], opts: { progress?: boolean; cwd?: string } = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    let child: ChildProcess;
    try {
      child = spawn(cmd, args, { cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PIP_NO_INPUT: '1' } });
    } catch (err) {
      resolve({ code: null, signal: null, stdout: '', stderr: '', spawnError: err as NodeJS.ErrnoException });
      return;
    }
    let stdout = '';
    let stderr = '';
    let spawnError: NodeJS.ErrnoException | undefined;
    const collect = (stream: NodeJS.ReadableStream | null, append: (s: string) => void): void => {
      if (!stream) return;
      createInterface({ input: stream }).on('line', (line) => {
        append(`${line}\n`);
        if (opts.progress && line.trim()) log(line);
      });
    };
    collect(child.stdout, (s) => (stdout += s));
    collect(child.stderr, (s) => (stderr += s));
    child.on('error', (err) => {
      spawnError = err;
    });
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr, spawnError }));
  });
}

const tail = (text: string, lines = 30): string => text.trimEnd().split('\n').slice(-lines).join('\n');

async function installedVersion(python: string, spec: SynapseInstallSpec): Promise<string | undefined> {
  if (!existsSync(python)) return undefined;
  const probe = spec.imports.map((m) => `import ${m}; `).join('');
  const r = await run(python, ['-c', `${probe}import importlib.metadata as m; print(m.version('matrix-synapse'))`]);
  return r.code === 0 ? r.stdout.trim() : undefined;
}

/** Checks that a usable python3 (≥ 3.10, with venv and ensurepip) exists; throws an Error that says what is missing. */
async function checkSystemPython(python3: string, spec: SynapseInstallSpec): Promise<void> {
  const probe = await run(python3, ['-c', 'import sys; print("%d.%d.%d" % sys.version_info[:3])']);
  if (probe.spawnError || probe.code !== 0) {
    const why = probe.spawnError ? probe.spawnError.message : tail(probe.stderr, 5);
    throw new Error(
      `Cannot run Synapse for the tests: '${python3}' is not usable (${why}). Install Python 3.10 or newer ` +
        `(Debian/Ubuntu: apt-get install python3 python3-venv), or point MXS_PYTHON at one.`,
    );
  }
  const version = probe.stdout.trim();
  const [major, minor] = version.split('.').map(Number);
  if (major !== 3 || minor < 10) {
    throw new Error(`Cannot run Synapse for the tests: ${python3} is Python ${version}; matrix-synapse ${spec.version} needs Python 3.10 or newer.`);
  }
  const venv = await run(python3, ['-c', 'import venv, ensurepip']);
  if (venv.code !== 0) {
    throw new Error(
      `Cannot run Synapse for the tests: ${python3} (Python ${version}) lacks the venv/ensurepip modules ` +
        `(${tail(venv.stderr, 1)}). Install them (Debian/Ubuntu: apt-get install python3-venv).`,
    );
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// One cross-process lock for the harnesses that install something into .cache on first use (Synapse's
// venvs here; test/support/nio.ts and js-sdk.ts import it): parallel jest workers must not install into the
// same place at once. (It lives here because jest's global setup loads this file without the module mapping
// that local imports would need.)

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Runs `fn` holding `lockDir` (a directory holding the owner's pid). A lock whose owner is gone, or
 * that is older than 30 minutes, is stale and taken over. `what` names the install in messages;
 * `onWait` is called once when another process holds the lock.
 */
export async function withInstallLock<T>(lockDir: string, what: string, fn: () => Promise<T>, onWait?: () => void): Promise<T> {
  const deadline = Date.now() + 20 * 60_000;
  let announced = false;
  for (;;) {
    try {
      mkdirSync(lockDir);
      writeFileSync(path.join(lockDir, 'pid'), String(process.pid));
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      let stale = false;
      try {
        const pid = Number(readFileSync(path.join(lockDir, 'pid'), 'utf8'));
        stale = !pid || !pidAlive(pid) || Date.now() - statSync(lockDir).mtimeMs > 30 * 60_000;
      } catch {
        // pid file not written yet (or lock just released): treat as held unless it is old
        try {
          stale = Date.now() - statSync(lockDir).mtimeMs > 60_000;
        } catch {
          stale = false; // gone: retry at once
        }
      }
      if (stale) {
        rmSync(lockDir, { recursive: true, force: true });
        continue;
      }
      if (Date.now() > deadline) throw new Error(`Timed out waiting for the ${what} install lock ${lockDir}`);
      if (!announced) onWait?.();
      announced = true;
      await sleep(1000);
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(lockDir, { recursive: true, force: true });
  }
}

const installing = new Map<string, Promise<{ python: string; version: string }>>();

/**
 * Makes sure `<repo>/.cache/synapse-venv` (or the venv of `spec`) holds matrix-synapse at the pinned version
 * (creating the venv with `python3 -m venv` and running pip when needed; progress goes to stderr) and returns
 * its python and version. Throws an Error explaining what is missing when python3 or its venv module is not
 * there, or pip fails.
 */
export function ensureSynapseInstalled(spec: SynapseInstallSpec = DEFAULT_SYNAPSE_INSTALL): Promise<{ python: string; version: string }> {
  const key = `${spec.venvDir()}\0${spec.extras}\0${spec.version}`;
  let pending = installing.get(key);
  if (!pending) {
    pending = doEnsureInstalled(spec).catch((err: unknown) => {
      installing.delete(key); // allow a later retry
      throw err;
    });
    installing.set(key, pending);
  }
  return pending;
}

async function doEnsureInstalled(spec: SynapseInstallSpec): Promise<{ python: string; version: string }> {
  const venv = spec.venvDir();
  const python = venvPython(venv);
  const requirement = `matrix-synapse${spec.extras}==${spec.version}`;
  const current = await installedVersion(python, spec);
  if (current === spec.version) return { python, version: current };

  mkdirSync(path.dirname(venv), { recursive: true });
  return withInstallLock(`${venv}.lock`, 'Synapse', async () => {
    // Someone else may have finished while we waited.
    const now = await installedVersion(python, spec);
    if (now === spec.version) return { python, version: now };

    const started = Date.now();
    if (!existsSync(python) || !(await run(python, ['-c', 'import sys']).then((r) => r.code === 0))) {
      const python3 = process.env.MXS_PYTHON || 'python3';
      await checkSystemPython(python3, spec);
      rmSync(venv, { recursive: true, force: true });
      log(`creating Python venv ${venv}`);
      const mk = await run(python3, ['-m', 'venv', venv]);
      if (mk.code !== 0) {
        rmSync(venv, { recursive: true, force: true });
        throw new Error(
          `Cannot run Synapse for the tests: '${python3} -m venv' failed (is python3-venv installed?):\n${tail(mk.stdout + mk.stderr, 15)}`,
        );
      }
    }
    log(`installing ${requirement} into ${venv}${now ? ` (replacing ${now})` : ''}; this takes a minute or two`);
    const pip = await run(
      python,
      ['-m', 'pip', 'install', '--disable-pip-version-check', '--no-input', '--progress-bar', 'off', requirement],
      { progress: true },
    );
    if (pip.code !== 0) {
      throw new Error(`Cannot run Synapse for the tests: pip install ${requirement} failed:\n${tail(pip.stdout + pip.stderr)}`);
    }
    const version = await installedVersion(python, spec);
    if (version !== spec.version) {
      throw new Error(`Cannot run Synapse for the tests: after pip install, the venv reports matrix-synapse ${version ?? '(none)'}, not ${spec.version}`);
    }
    log(`matrix-synapse ${version} installed in ${((Date.now() - started) / 1000).toFixed(0)}s`);
    return { python, version };
  }, () => log(`waiting for another process installing Synapse (lock ${venv}.lock)`));
}

// ---------------------------------------------------------------------------------------------------------------
// Running

/** A free TCP port on 127.0.0.1 (bind port 0, read it, release it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => (port ? resolve(port) : reject(new Error('could not find a free port'))));
    });
  });
}

// Runs `python -m synapse.app.homeserver ARGS`, but first asks Linux to SIGTERM it when its parent (the jest
// process or worker) dies, however it dies (PR_SET_PDEATHSIG = 1), and exits if the parent is already gone.
// If the parent is gone when Synapse exits, it also removes its own temp dir (MXS_SYNAPSE_CLEANUP_DIR), since
// nobody else will. Elsewhere than Linux the prctl call fails quietly and the 'exit' handler below is the guard.
const BOOTSTRAP = `
import atexit, os, shutil, sys
try:
    import ctypes, signal
    ctypes.CDLL(None).prctl(1, int(signal.SIGTERM))
except Exception:
    pass
parent = int(os.environ.get("MXS_SYNAPSE_PARENT_PID") or os.getppid())
if os.getppid() != parent:
    sys.exit("mxs test harness: parent process is gone")
def _cleanup():
    d = os.environ.get("MXS_SYNAPSE_CLEANUP_DIR")
    if d and os.getppid() != parent:
        shutil.rmtree(d, ignore_errors=True)
atexit.register(_cleanup)
import runpy
sys.argv[0] = "synapse.app.homeserver"
runpy.run_module("synapse.app.homeserver", run_name="__main__", alter_sys=True)
`;

interface Running {
  child: ChildProcess;
  dir: string;
}

const running = new Set<Running>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // 'exit' handlers must be synchronous: kill hard and remove the temp dirs.
  process.on('exit', () => {
    for (const r of running) {
      try {
        r.child.kill('SIGKILL');
      } catch {
        // already gone
      }
      if (process.env.MXS_SYNAPSE_KEEP !== '1') rmSync(r.dir, { recursive: true, force: true });
    }
    running.clear();
  });
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

function readTail(file: string, lines = 40): string {
  try {
    return tail(readFileSync(file, 'utf8'), lines);
  } catch {
    return '(no output)';
  }
}

const dropUndefined = (o: Record<string, unknown>): Record<string, unknown> =>
  Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));

function homeserverConfig(dir: string, port: number, secret: string, logConfig: string, opts: StartSynapseOptions): Record<string, unknown> {
  const lots = { per_second: 1000, burst_count: 1000 };
  const accessTokenLifetime = opts.accessTokenLifetime === undefined ? '6s' : opts.accessTokenLifetime;
  const refreshTokenLifetime = opts.refreshTokenLifetime === undefined ? '1h' : opts.refreshTokenLifetime;
  return dropUndefined({
    server_name: 'localhost',
    public_baseurl: `http://127.0.0.1:${port}/`,
    pid_file: path.join(dir, 'homeserver.pid'),
    listeners: [
      {
        port,
        bind_addresses: ['127.0.0.1'],
        type: 'http',
        tls: false,
        x_forwarded: false,
        resources: [{ names: ['client'], compress: false }],
      },
    ],
    database: { name: 'sqlite3', args: { database: path.join(dir, 'homeserver.db') } },
    log_config: logConfig,
    media_store_path: path.join(dir, 'media_store'),
    signing_key_path: path.join(dir, 'localhost.signing.key'),
    report_stats: false,
    trusted_key_servers: [],
    suppress_key_server_warning: true,
    registration_shared_secret: secret,
    macaroon_secret_key: randomBytes(32).toString('hex'),
    form_secret: randomBytes(32).toString('hex'),
    enable_registration: false,
    bcrypt_rounds: 4,
    // `null` is Synapse's way to say "no refresh tokens" (login then ignores refresh_token: true).
    refreshable_access_token_lifetime: accessTokenLifetime,
    refresh_token_lifetime: refreshTokenLifetime,
    // Unset = sessions never end; Synapse refuses to start when this is shorter than the lifetimes above.
    session_lifetime: opts.sessionLifetime,
    nonrefreshable_access_token_lifetime: opts.nonrefreshableAccessTokenLifetime,
    rc_login: { address: lots, account: lots, failed_attempts: lots },
    rc_registration: lots,
    rc_message: lots,
    rc_joins: { local: lots, remote: lots },
    presence: { enabled: false },
    url_preview_enabled: false,
    enable_metrics: false,
    ...opts.extraConfig,
  });
}

function logConfig(logFile: string): Record<string, unknown> {
  const level = process.env.MXS_SYNAPSE_LOG_LEVEL || 'WARNING';
  return {
    version: 1,
    formatters: { precise: { format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s' } },
    filters: { context: { '()': 'synapse.logging.context.LoggingContextFilter', request: '' } },
    handlers: { file: { class: 'logging.FileHandler', formatter: 'precise', filename: logFile, filters: ['context'], level } },
    root: { level, handlers: ['file'] },
    disable_existing_loggers: false,
  };
}

/**
 * Registers `@user:localhost` through Synapse's shared-secret admin API: `GET /_synapse/admin/v1/register` for a
 * nonce, then `POST` it with `mac` = hex HMAC-SHA1(secret, nonce\0user\0password\0notadmin|admin).
 * Usable from test files with MXS_TEST_SYNAPSE_URL and MXS_TEST_SYNAPSE_SHARED_SECRET.
 */
export async function registerUserWithSecret(
  baseUrl: string,
  sharedSecret: string,
  user: string,
  password: string,
  opts: { admin?: boolean } = {},
): Promise<void> {
  const url = `${baseUrl.replace(/\/+$/, '')}/_synapse/admin/v1/register`;
  const nonceRes = await fetch(url, { signal: AbortSignal.timeout(15_000) });
  if (!nonceRes.ok) throw new Error(`GET ${url} answered ${nonceRes.status}: ${await nonceRes.text()}`);
  const { nonce } = (await nonceRes.json()) as { nonce: string };
  const admin = opts.admin ?? false;
  const mac = createHmac('sha1', sharedSecret)
    .update(`${nonce}\0${user}\0${password}\0${admin ? 'admin' : 'notadmin'}`, 'utf8')
    .digest('hex');
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ nonce, username: user, password, admin, mac }),
    signal: AbortSignal.timeout(15_000),
  });
  if (!res.ok) throw new Error(`registering ${user} on ${baseUrl} failed: ${res.status} ${await res.text()}`);
}

/** A user of its own, `@<prefix>-<random>:localhost`, on the shared Synapse (or `baseUrl`): other test files log the fixed users in and out meanwhile. */
export async function freshSynapseUser(
  prefix: string,
  baseUrl = testSynapseUrl(),
  secret = process.env.MXS_TEST_SYNAPSE_SHARED_SECRET!,
): Promise<{ user: string; password: string; userId: string }> {
  const user = `${prefix}-${randomBytes(4).toString('hex')}`;
  const password = `pw-${randomBytes(6).toString('hex')}`;
  await registerUserWithSecret(baseUrl, secret, user, password);
  return { user, password, userId: `@${user}:localhost` };
}

async function waitUntilUp(baseUrl: string, child: ChildProcess, timeoutMs: number): Promise<'up' | 'exited' | 'timeout'> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) return 'exited';
    try {
      const res = await fetch(`${baseUrl}/_matrix/client/versions`, { signal: AbortSignal.timeout(2000) });
      await res.arrayBuffer();
      if (res.status === 200) return 'up';
    } catch {
      // not listening yet
    }
    await sleep(200);
  }
  return 'timeout';
}

async function serverVersion(baseUrl: string): Promise<string | undefined> {
  try {
    const res = await fetch(`${baseUrl}/_synapse/admin/v1/server_version`, { signal: AbortSignal.timeout(5000) });
    if (!res.ok) return undefined;
    const body = (await res.json()) as { server_version?: string };
    return body.server_version;
  } catch {
    return undefined;
  }
}

/**
 * Starts a throwaway Synapse (`server_name: localhost`) on 127.0.0.1 at a free port, with its config, SQLite db,
 * signing key, media and logs in a fresh temp dir, and waits (up to 60 s) until `/_matrix/client/versions`
 * answers 200. Access tokens from `refresh_token: true` logins live `accessTokenLifetime` (default 6 s).
 */
export async function startSynapse(opts: StartSynapseOptions = {}): Promise<SynapseHandle> {
  const { python, version: installed } = await ensureSynapseInstalled(opts.install);
  let lastError: Error | undefined;
  // A port found free can be taken before Synapse binds it: retry a couple of times on "Address already in use".
  for (let attempt = 1; attempt <= 3; attempt++) {
    try {
      return await startOnce(python, installed, opts);
    } catch (err) {
      lastError = err as Error;
      if (!/Address already in use|CannotListenError/i.test(lastError.message)) throw lastError;
      log(`port clash, retrying (${attempt}/3)`);
    }
  }
  throw lastError as Error;
}

async function startOnce(python: string, installed: string, opts: StartSynapseOptions): Promise<SynapseHandle> {
  const dir = mkdtempSync(path.join(tmpdir(), 'mxs-synapse-'));
  const port = await freePort();
  const baseUrl = `http://127.0.0.1:${port}`;
  const secret = randomBytes(24).toString('hex');
  const logFile = path.join(dir, 'homeserver.log');
  const outFile = path.join(dir, 'stdout.log');
  const logConfigFile = path.join(dir, 'log.config.yaml');
  const configFile = path.join(dir, 'homeserver.yaml');
  // YAML is a superset of JSON, so JSON.stringify writes valid config files.
  writeFileSync(logConfigFile, `${JSON.stringify(logConfig(logFile), null, 2)}\n`);
  writeFileSync(configFile, `${JSON.stringify(homeserverConfig(dir, port, secret, logConfigFile, opts), null, 2)}\n`);

  installExitHook();
  const started = Date.now();
  const out = openSync(outFile, 'a');
  let child: ChildProcess;
  try {
    // Signing keys etc. are generated on first start (Synapse calls generate_missing_files before loading).
    child = spawn(python, ['-c', BOOTSTRAP, '--config-path', configFile], {
      cwd: dir,
      detached: false,
      stdio: ['ignore', out, out],
      env: {
        ...process.env,
        MXS_SYNAPSE_PARENT_PID: String(process.pid),
        MXS_SYNAPSE_CLEANUP_DIR: process.env.MXS_SYNAPSE_KEEP === '1' ? '' : dir,
        PYTHONUNBUFFERED: '1',
      },
    });
  } finally {
    closeSync(out);
  }
  const entry: Running = { child, dir };
  running.add(entry);
  let spawnError: Error | undefined;
  child.on('error', (err) => {
    spawnError = err;
  });

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      const t0 = Date.now();
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        let timer: NodeJS.Timeout | undefined;
        const timedOut = await Promise.race([
          exited(child).then(() => false),
          new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), 5000))),
        ]);
        clearTimeout(timer);
        if (timedOut) {
          child.kill('SIGKILL');
          await exited(child);
        }
      }
      running.delete(entry);
      log(`Synapse at ${baseUrl} stopped in ${((Date.now() - t0) / 1000).toFixed(1)}s`);
      if (process.env.MXS_SYNAPSE_KEEP === '1') log(`kept ${dir}`);
      else rmSync(dir, { recursive: true, force: true });
    })();
    return stopping;
  };

  const state = await waitUntilUp(baseUrl, child, 60_000);
  if (state !== 'up') {
    const details = `--- ${logFile} ---\n${readTail(logFile)}\n--- stdout/stderr ---\n${readTail(outFile)}`;
    await stop();
    const what =
      state === 'exited'
        ? `Synapse exited during startup (${spawnError ? spawnError.message : `code ${child.exitCode}, signal ${child.signalCode}`})`
        : 'Synapse did not answer GET /_matrix/client/versions within 60s';
    throw new Error(`${what}; config ${configFile}\n${details}`);
  }
  // The admin API answers e.g. "1.163.2 (b=main,f898ffe)" (build info of the wheel): keep the release only.
  const version = ((await serverVersion(baseUrl)) ?? installed).split(' ')[0];
  log(`Synapse ${version} up at ${baseUrl} in ${((Date.now() - started) / 1000).toFixed(1)}s (dir ${dir})`);

  return {
    baseUrl,
    serverName: 'localhost',
    version,
    dir,
    port,
    registrationSharedSecret: secret,
    logFile,
    registerUser: (user, password, o) => registerUserWithSecret(baseUrl, secret, user, password, o),
    stop,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// jest helpers

/** Why there is no shared test Synapse (set by globalSetup), or a default. */
export function synapseSkipReason(): string {
  if (process.env.MXS_TEST_SYNAPSE_SKIP_REASON) return process.env.MXS_TEST_SYNAPSE_SKIP_REASON;
  if (process.env.MXS_TEST_SYNAPSE === '0') return 'Synapse tests disabled by MXS_TEST_SYNAPSE=0';
  return 'no test Synapse was started (MXS_TEST_SYNAPSE_URL unset: is globalSetup test/support/global-setup.ts configured?)';
}

/**
 * `describe` for suites that need the shared Synapse (MXS_TEST_SYNAPSE_URL). Without one: locally it warns and
 * skips the suite; under CI=true it registers a failing test stating why, so CI never passes by skipping.
 */
export function describeWithSynapse(name: string, fn: () => void): void {
  describeIfAvailable(name, 'a test Synapse', process.env.MXS_TEST_SYNAPSE_URL ? null : synapseSkipReason(), fn);
}

/**
 * `describe` for suites that need `what` (a homeserver, a client library): when it is `missing` (the reason), the
 * suite is skipped with the reason locally, and is one failing test under CI=true, where a missing piece must
 * fail the run.
 */
export function describeIfAvailable(name: string, what: string, missing: string | null, fn: () => void): void {
  if (missing === null) {
    describe(name, fn);
    return;
  }
  if (process.env.CI === 'true') {
    describe(name, () => {
      test(`needs ${what}`, () => {
        throw new Error(`No ${what} under CI=true (a missing one must fail CI): ${missing}`);
      });
    });
    return;
  }
  console.warn(`Skipping "${name}": ${missing}`);
  describe.skip(name, fn);
}

/** The shared test server's base URL; throws when there is none (use inside describeWithSynapse). */
export function testSynapseUrl(): string {
  const url = process.env.MXS_TEST_SYNAPSE_URL;
  if (!url) throw new Error(synapseSkipReason());
  return url;
}
