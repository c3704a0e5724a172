// Real homeservers for tests, each in a temp dir on 127.0.0.1 at a free port:
// - startSynapse(): Synapse SYNAPSE_PINNED_VERSION (SQLite, refresh tokens, access tokens of 6 s by default);
// - startOAuthHomeserver(): Synapse SYNAPSE_OAUTH_PINNED_VERSION delegating auth to oidc-provider
//   (test/support/oauth-provider.mjs); test files drive it through oauth-homeserver.ts.
// Each Synapse release lives in its own venv under <repo>/.cache, installed on first use (ensureVenv, which
// nio.ts uses too). jest's globalSetup (global-setup.ts) starts one of each per run and hands them to test files
// through env vars (synapseEnv, oauthEnv); test files wrap suites in describeWithSynapse() and may start extra
// servers with startSynapse({...}), which they must stop().
//
// globalSetup loads this file outside jest's module system (see global-setup.ts), and scripts/synapse.mjs and
// scripts/demo.mjs transpile it alone: no top-level await, no import.meta, no runtime imports but node: builtins.

import { spawn, type ChildProcess } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';

/** The Synapse release the tests run against (bump deliberately; CI installs exactly this). */
export const SYNAPSE_PINNED_VERSION = '1.163.2';
/** The last release with experimental_features.msc3861 (auth delegated to any OAuth 2.0 server); 1.157 removed it. */
export const SYNAPSE_OAUTH_PINNED_VERSION = '1.156.0';

/** Users that globalSetup registers on the shared test server (`@alice:localhost`, `@bob:localhost`). */
export const TEST_USERS = {
  alice: { user: 'alice', password: 'alice-pw-1', userId: '@alice:localhost' },
  bob: { user: 'bob', password: 'bob-pw-1', userId: '@bob:localhost' },
} as const;

const log = (msg: string): void => {
  process.stderr.write(`[synapse] ${msg}\n`);
};

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export const tail = (text: string, lines = 30): string => text.trimEnd().split('\n').slice(-lines).join('\n');

function readTail(file: string, lines = 40): string {
  try {
    return tail(readFileSync(file, 'utf8'), lines);
  } catch {
    return '(no output)';
  }
}

/** The repo root: the nearest directory above the cwd whose package.json is this project's; else the cwd. */
export function repoRoot(): string {
  for (let dir = process.cwd(); ; dir = path.dirname(dir)) {
    try {
      if ((JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: string }).name === 'mxs') return dir;
    } catch {
      // no package.json here, or not ours
    }
    if (path.dirname(dir) === dir) return process.cwd();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Installing into a venv

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
  /** Set when the program could not be started (e.g. ENOENT). */
  error?: Error;
}

/** Runs a program to completion; with `progress`, its output lines also go to stderr under that prefix. */
export function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; progress?: string } = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env });
    let stdout = '';
    let stderr = '';
    let error: Error | undefined;
    const collect = (stream: NodeJS.ReadableStream, append: (s: string) => void): void => {
      createInterface({ input: stream }).on('line', (line) => {
        append(`${line}\n`);
        if (opts.progress && line.trim()) process.stderr.write(`[${opts.progress}] ${line}\n`);
      });
    };
    collect(child.stdout, (s) => (stdout += s));
    collect(child.stderr, (s) => (stderr += s));
    child.on('error', (err) => (error = err));
    child.on('close', (code) => resolve({ code, stdout, stderr, error }));
  });
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Runs `fn` holding `lockDir` (a directory with the owner's pid in it), so parallel jest workers do not install
 * into the same place at once (js-sdk.ts uses it too). A lock whose owner is gone, or older than
 * 30 minutes, is taken over. `onWait` is called once when another process holds it.
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
    }
    let stale: boolean;
    try {
      const pid = Number(readFileSync(path.join(lockDir, 'pid'), 'utf8'));
      stale = !pid || !pidAlive(pid) || Date.now() - statSync(lockDir).mtimeMs > 30 * 60_000;
    } catch {
      // No pid file yet (held unless a minute old), or the lock just went away.
      const made = statSync(lockDir, { throwIfNoEntry: false })?.mtimeMs;
      stale = made !== undefined && Date.now() - made > 60_000;
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
  try {
    return await fn();
  } finally {
    rmSync(lockDir, { recursive: true, force: true });
  }
}

/** A pinned PyPI package in a venv of its own: pip requirement `${name}${extras}==${version}`. */
export interface VenvPackage {
  name: string;
  version: string;
  /** pip extras with brackets, e.g. '[oidc]'. */
  extras?: string;
  /** Python modules that must import for the venv to count as installed (e.g. what the extras bring). */
  imports?: string[];
  venv: string;
}

async function installedVersion(python: string, pkg: VenvPackage): Promise<string | undefined> {
  if (!existsSync(python)) return undefined;
  const probe = (pkg.imports ?? []).map((m) => `import ${m}; `).join('');
  const r = await run(python, ['-c', `${probe}import importlib.metadata as m; print(m.version('${pkg.name}'))`]);
  return r.code === 0 ? r.stdout.trim() : undefined;
}

/** Throws an Error saying what is missing unless `python3` is Python ≥ 3.10 with venv and ensurepip. */
async function checkSystemPython(python3: string, pkg: VenvPackage): Promise<void> {
  const cannot = `Cannot install ${pkg.name} for the tests:`;
  const probe = await run(python3, ['-c', 'import sys; print("%d.%d.%d" % sys.version_info[:3])']);
  if (probe.error || probe.code !== 0) {
    throw new Error(
      `${cannot} '${python3}' is not usable (${probe.error?.message ?? tail(probe.stderr, 5)}). Install Python 3.10 or newer ` +
        `(Debian/Ubuntu: apt-get install python3 python3-venv), or point MXS_PYTHON at one.`,
    );
  }
  const version = probe.stdout.trim();
  const [major, minor] = version.split('.').map(Number);
  if (major !== 3 || minor < 10) throw new Error(`${cannot} ${python3} is Python ${version}; Python 3.10 or newer is needed.`);
  const venv = await run(python3, ['-c', 'import venv, ensurepip']);
  if (venv.code !== 0) {
    throw new Error(`${cannot} ${python3} lacks the venv/ensurepip modules (${tail(venv.stderr, 1)}); Debian/Ubuntu: apt-get install python3-venv.`);
  }
}

const installing = new Map<string, Promise<{ python: string; version: string }>>();

/**
 * Makes sure `pkg.venv` holds `pkg` at its pinned version (creating the venv with `python3 -m venv` and running
 * pip when needed; progress goes to stderr) and returns its python. Throws an Error saying what is missing.
 */
export function ensureVenv(pkg: VenvPackage): Promise<{ python: string; version: string }> {
  const key = `${pkg.venv}\0${pkg.name}${pkg.extras ?? ''}==${pkg.version}`;
  let pending = installing.get(key);
  if (!pending) {
    pending = installVenv(pkg).catch((err: unknown) => {
      installing.delete(key); // a later call retries
      throw err;
    });
    installing.set(key, pending);
  }
  return pending;
}

async function installVenv(pkg: VenvPackage): Promise<{ python: string; version: string }> {
  const { venv } = pkg;
  const python = path.join(venv, 'bin', 'python');
  const requirement = `${pkg.name}${pkg.extras ?? ''}==${pkg.version}`;
  if ((await installedVersion(python, pkg)) === pkg.version) return { python, version: pkg.version };

  mkdirSync(path.dirname(venv), { recursive: true });
  const onWait = (): void => log(`waiting for another process installing ${pkg.name} (lock ${venv}.lock)`);
  return withInstallLock(`${venv}.lock`, pkg.name, async () => {
    const found = await installedVersion(python, pkg); // someone else may have finished meanwhile
    if (found === pkg.version) return { python, version: found };
    const started = Date.now();
    if ((await run(python, ['-c', 'import sys'])).code !== 0) {
      const python3 = process.env.MXS_PYTHON || 'python3';
      await checkSystemPython(python3, pkg);
      rmSync(venv, { recursive: true, force: true });
      log(`creating Python venv ${venv}`);
      const mk = await run(python3, ['-m', 'venv', venv]);
      if (mk.code !== 0) {
        rmSync(venv, { recursive: true, force: true });
        throw new Error(`Cannot install ${pkg.name} for the tests: '${python3} -m venv' failed:\n${tail(mk.stdout + mk.stderr, 15)}`);
      }
    }
    log(`installing ${requirement} into ${venv}${found ? ` (replacing ${found})` : ''}; this takes a minute or two`);
    const pipArgs = ['-m', 'pip', 'install', '--disable-pip-version-check', '--no-input', '--progress-bar', 'off', requirement];
    const pip = await run(python, pipArgs, { progress: pkg.name });
    if (pip.code !== 0) throw new Error(`Cannot install ${pkg.name} for the tests: pip install ${requirement} failed:\n${tail(pip.stdout + pip.stderr)}`);
    const version = await installedVersion(python, pkg);
    if (version !== pkg.version) throw new Error(`Cannot install ${pkg.name} for the tests: after pip install, the venv reports ${version ?? '(none)'}, not ${pkg.version}`);
    log(`${pkg.name} ${version} installed in ${((Date.now() - started) / 1000).toFixed(0)}s`);
    return { python, version };
  }, onWait);
}

/** Where the pinned Synapse's venv lives: MXS_SYNAPSE_VENV, or <repo>/.cache/synapse-venv. */
export function synapseVenvDir(): string {
  return process.env.MXS_SYNAPSE_VENV || path.join(repoRoot(), '.cache', 'synapse-venv');
}

const synapsePackage = (): VenvPackage => ({ name: 'matrix-synapse', version: SYNAPSE_PINNED_VERSION, venv: synapseVenvDir() });

// Delegated auth needs authlib, which the oidc extra brings.
const oauthSynapsePackage = (): VenvPackage => ({
  name: 'matrix-synapse',
  version: SYNAPSE_OAUTH_PINNED_VERSION,
  extras: '[oidc]',
  imports: ['authlib'],
  venv: process.env.MXS_SYNAPSE_OAUTH_VENV || path.join(repoRoot(), '.cache', 'synapse-oauth-venv'),
});

/** Installs the pinned Synapse into its venv when needed (scripts/synapse.mjs install). */
export function ensureSynapseInstalled(): Promise<{ python: string; version: string }> {
  return ensureVenv(synapsePackage());
}

// ---------------------------------------------------------------------------------------------------------------
// Child processes: Synapse and oidc-provider

/** A free TCP port on 127.0.0.1 (bind port 0, read it, release it). */
function freePort(): Promise<number> {
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

const keepDirs = (): boolean => process.env.MXS_SYNAPSE_KEEP === '1';

/** Children still running, with their temp dirs: an 'exit' hook (synchronous) kills them and removes the dirs. */
const running = new Map<ChildProcess, string>();

let exitHook = false;

function track(child: ChildProcess, dir: string): void {
  running.set(child, dir);
  if (exitHook) return;
  exitHook = true;
  process.on('exit', () => {
    for (const [c, d] of running) {
      c.kill('SIGKILL');
      if (!keepDirs()) rmSync(d, { recursive: true, force: true });
    }
    running.clear();
  });
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/** A stop() for `child`: SIGTERM, SIGKILL after 5 s, then removes `dir` (kept with MXS_SYNAPSE_KEEP=1). Idempotent. */
function stopper(child: ChildProcess, dir: string, what: string): () => Promise<void> {
  let stopping: Promise<void> | undefined;
  return () =>
    (stopping ??= (async () => {
      const t0 = Date.now();
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        let timer: NodeJS.Timeout | undefined;
        const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), 5000)));
        if ((await Promise.race([exited(child), timeout])) === 'timeout') {
          child.kill('SIGKILL');
          await exited(child);
        }
        clearTimeout(timer);
      }
      running.delete(child);
      log(`${what} stopped in ${((Date.now() - t0) / 1000).toFixed(1)}s`);
      if (keepDirs()) log(`kept ${dir}`);
      else rmSync(dir, { recursive: true, force: true });
    })());
}

// Runs `python -m synapse.app.homeserver ARGS`, but first asks Linux to SIGTERM it when its parent (the jest
// process or worker) dies, however it dies (PR_SET_PDEATHSIG = 1), and exits if the parent is already gone.
// When the parent is gone as Synapse exits, it removes its own temp dir (MXS_SYNAPSE_CLEANUP_DIR): nobody else
// will. Elsewhere than Linux the prctl call fails quietly and the 'exit' hook above is the guard.
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

// ---------------------------------------------------------------------------------------------------------------
// Synapse

export interface StartSynapseOptions {
  /** `refreshable_access_token_lifetime` in Synapse's syntax ('6s', '5m'); `null`: no refresh tokens. Default '6s'. */
  accessTokenLifetime?: string | null;
  /** `refresh_token_lifetime`; `null`: refresh tokens never expire. Default '1h'. */
  refreshTokenLifetime?: string | null;
  /** Top-level homeserver.yaml keys applied last (`undefined` removes a key). */
  extraConfig?: Record<string, unknown>;
  /** Which Synapse to run. Default the pinned one. */
  install?: VenvPackage;
}

export interface SynapseHandle {
  /** `http://127.0.0.1:PORT` (no trailing slash). */
  baseUrl: string;
  /** Synapse's release, e.g. `1.163.2`. */
  version: string;
  /** The server's temp dir (config, SQLite db, logs); removed by stop(). */
  dir: string;
  /** Secret of the shared-secret registration API (see registerUserWithSecret). */
  registrationSharedSecret: string;
  /** Synapse's log file (WARNING and above unless MXS_SYNAPSE_LOG_LEVEL says otherwise). */
  logFile: string;
  /** Registers `@user:localhost` through the shared-secret admin API. */
  registerUser(user: string, password: string, opts?: { admin?: boolean }): Promise<void>;
  /** SIGTERM, SIGKILL after 5 s, then removes `dir` (kept when MXS_SYNAPSE_KEEP=1). Idempotent. */
  stop(): Promise<void>;
}

function homeserverConfig(dir: string, port: number, secret: string, logConfig: string, opts: StartSynapseOptions): Record<string, unknown> {
  const lots = { per_second: 1000, burst_count: 1000 };
  const config: Record<string, unknown> = {
    server_name: 'localhost',
    public_baseurl: `http://127.0.0.1:${port}/`,
    pid_file: path.join(dir, 'homeserver.pid'),
    listeners: [{ port, bind_addresses: ['127.0.0.1'], type: 'http', tls: false, x_forwarded: false, resources: [{ names: ['client'], compress: false }] }],
    database: { name: 'sqlite3', args: { database: path.join(dir, 'homeserver.db') } },
    log_config: logConfig,
    media_store_path: path.join(dir, 'media_store'),
    // Synapse generates the signing key at first start.
    signing_key_path: path.join(dir, 'localhost.signing.key'),
    report_stats: false,
    trusted_key_servers: [],
    suppress_key_server_warning: true,
    registration_shared_secret: secret,
    macaroon_secret_key: randomBytes(32).toString('hex'),
    form_secret: randomBytes(32).toString('hex'),
    enable_registration: false,
    bcrypt_rounds: 4,
    // `null` is Synapse's "no refresh tokens" (login then ignores refresh_token: true). A session_lifetime, if
    // given through extraConfig, must not be shorter than these, or Synapse refuses to start.
    refreshable_access_token_lifetime: opts.accessTokenLifetime === undefined ? '6s' : opts.accessTokenLifetime,
    refresh_token_lifetime: opts.refreshTokenLifetime === undefined ? '1h' : opts.refreshTokenLifetime,
    rc_login: { address: lots, account: lots, failed_attempts: lots },
    rc_registration: lots,
    rc_message: lots,
    rc_joins: { local: lots, remote: lots },
    presence: { enabled: false },
    url_preview_enabled: false,
    enable_metrics: false,
    ...opts.extraConfig,
  };
  return Object.fromEntries(Object.entries(config).filter(([, v]) => v !== undefined));
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
 */
export async function registerUserWithSecret(baseUrl: string, sharedSecret: string, user: string, password: string, opts: { admin?: boolean } = {}): Promise<void> {
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

/** Synapse's release from its admin API, which answers e.g. "1.163.2 (b=main,f898ffe)": the release only. */
async function serverVersion(baseUrl: string): Promise<string | undefined> {
  try {
    const res = await fetch(`${baseUrl}/_synapse/admin/v1/server_version`, { signal: AbortSignal.timeout(5000) });
    return res.ok ? ((await res.json()) as { server_version?: string }).server_version?.split(' ')[0] : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Starts a throwaway Synapse (`server_name: localhost`) on 127.0.0.1 at a free port, with its config, SQLite db,
 * signing key, media and logs in a fresh temp dir, and waits (up to 60 s) until `/_matrix/client/versions`
 * answers 200.
 */
export async function startSynapse(opts: StartSynapseOptions = {}): Promise<SynapseHandle> {
  const { python, version } = await ensureVenv(opts.install ?? synapsePackage());
  // A port found free can be taken before Synapse binds it: retry on "Address already in use".
  for (let attempt = 1; ; attempt++) {
    try {
      return await startSynapseOnce(python, version, opts);
    } catch (err) {
      if (attempt === 3 || !/Address already in use|CannotListenError/i.test((err as Error).message)) throw err;
      log(`port clash, retrying (${attempt}/3)`);
    }
  }
}

async function startSynapseOnce(python: string, installed: string, opts: StartSynapseOptions): Promise<SynapseHandle> {
  const dir = mkdtempSync(path.join(tmpdir(), 'mxs-synapse-'));
  const port = await freePort();
  const baseUrl = `http://127.0.0.1:${port}`;
  const secret = randomBytes(24).toString('hex');
  const logFile = path.join(dir, 'homeserver.log');
  const outFile = path.join(dir, 'stdout.log');
  const logConfigFile = path.join(dir, 'log.config.yaml');
  const configFile = path.join(dir, 'homeserver.yaml');
  // YAML is a superset of JSON.
  writeFileSync(logConfigFile, `${JSON.stringify(logConfig(logFile), null, 2)}\n`);
  writeFileSync(configFile, `${JSON.stringify(homeserverConfig(dir, port, secret, logConfigFile, opts), null, 2)}\n`);

  const started = Date.now();
  const out = openSync(outFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn(python, ['-c', BOOTSTRAP, '--config-path', configFile], {
      cwd: dir,
      stdio: ['ignore', out, out],
      env: {
        ...process.env,
        MXS_SYNAPSE_PARENT_PID: String(process.pid),
        MXS_SYNAPSE_CLEANUP_DIR: keepDirs() ? '' : dir,
        PYTHONUNBUFFERED: '1',
      },
    });
  } finally {
    closeSync(out);
  }
  track(child, dir);
  let spawnError: Error | undefined;
  child.on('error', (err) => (spawnError = err));
  const stop = stopper(child, dir, `Synapse at ${baseUrl}`);

  const state = await waitUntilUp(baseUrl, child, 60_000);
  if (state !== 'up') {
    const details = `--- ${logFile} ---\n${readTail(logFile)}\n--- stdout/stderr ---\n${readTail(outFile)}`;
    await stop();
    const what =
      state === 'exited'
        ? `Synapse exited during startup (${spawnError?.message ?? `code ${child.exitCode}, signal ${child.signalCode}`})`
        : 'Synapse did not answer GET /_matrix/client/versions within 60s';
    throw new Error(`${what}; config ${configFile}\n${details}`);
  }
  const version = (await serverVersion(baseUrl)) ?? installed;
  log(`Synapse ${version} up at ${baseUrl} in ${((Date.now() - started) / 1000).toFixed(1)}s (dir ${dir})`);
  return {
    baseUrl,
    version,
    dir,
    registrationSharedSecret: secret,
    logFile,
    registerUser: (user, password, o) => registerUserWithSecret(baseUrl, secret, user, password, o),
    stop,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// The OAuth homeserver: oidc-provider, then a Synapse delegating auth to it

/** What globalSetup hands to test files (oauth-homeserver.ts builds the full handle from it). */
export interface OAuthHomeserver {
  /** Synapse's base URL (`http://127.0.0.1:PORT`, no trailing slash). */
  baseUrl: string;
  /** The provider's issuer (`http://127.0.0.1:PORT`, no trailing slash). */
  issuer: string;
  synapseVersion: string;
  /** msc3861.admin_token: a bearer token Synapse treats as an admin. */
  adminToken: string;
  /** Default access-token lifetime, seconds. */
  accessTokenTTL: number;
  stop(): Promise<void>;
}

/** Waits for one IPC message from the provider that satisfies `accept`, or its exit, or the timeout. */
function nextMessage<T>(child: ChildProcess, accept: (m: unknown) => m is T, timeoutMs: number, what: string, logFile: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => done(new Error(`oidc-provider did not ${what} within ${timeoutMs / 1000}s\n${readTail(logFile)}`)), timeoutMs);
    const onMessage = (m: unknown): void => {
      if (accept(m)) done(undefined, m);
    };
    const onExit = (code: number | null, signal: NodeJS.Signals | null): void =>
      done(new Error(`oidc-provider exited (code ${code}, signal ${signal}) before it could ${what}\n${readTail(logFile)}`));
    const onError = (err: Error): void => done(err);
    function done(err?: Error, value?: T): void {
      clearTimeout(timer);
      child.off('message', onMessage);
      child.off('exit', onExit);
      child.off('error', onError);
      if (err) reject(err);
      else resolve(value as T);
    }
    child.on('message', onMessage);
    child.once('exit', onExit);
    child.once('error', onError);
  });
}

const hasKey =
  <K extends string>(key: K) =>
  (m: unknown): m is Record<K, unknown> & Record<string, unknown> =>
    typeof m === 'object' && m !== null && key in m;

interface ProviderProcess {
  child: ChildProcess;
  issuer: string;
  logFile: string;
  stop(): Promise<void>;
}

/** Starts test/support/oauth-provider.mjs (its header says what it takes and answers). */
async function startProvider(config: { adminToken: string; synapseClientId: string; synapseClientSecret: string; accessTokenTTL: number }): Promise<ProviderProcess> {
  const dir = mkdtempSync(path.join(tmpdir(), 'mxs-oauth-provider-'));
  const logFile = path.join(dir, 'provider.log');
  const child = spawn(process.execPath, [path.join(repoRoot(), 'test', 'support', 'oauth-provider.mjs')], {
    cwd: repoRoot(),
    stdio: ['ignore', 'ignore', 'ignore', 'ipc'],
    env: { ...process.env, MXS_OAUTH_PROVIDER_CONFIG: JSON.stringify({ ...config, logFile }) },
  });
  track(child, dir);
  // Neither the child nor its IPC channel may keep the jest process alive; stop() and the exit hook end it.
  child.unref();
  child.channel?.unref();
  const stop = stopper(child, dir, 'oidc-provider');
  try {
    const ready = await nextMessage(child, hasKey('ready'), 20_000, 'start', logFile);
    if (!ready.ready || typeof ready.issuer !== 'string') throw new Error(`oidc-provider failed to start: ${String(ready.error)}\n${readTail(logFile)}`);
    return { child, issuer: ready.issuer, logFile, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * Starts oidc-provider, then Synapse SYNAPSE_OAUTH_PINNED_VERSION (installed when needed, ~40 s) delegating auth
 * to it, then tells the provider where Synapse is (Synapse needs the issuer in its config before it starts).
 */
export async function startOAuthHomeserver(accessTokenTTL = 6): Promise<OAuthHomeserver> {
  const started = Date.now();
  const adminToken = `mxs_admin_${randomBytes(24).toString('hex')}`;
  const synapseClientId = 'synapse';
  const synapseClientSecret = randomBytes(24).toString('hex');
  const install = oauthSynapsePackage();

  // The provider starts in well under a second, the venv may need installing first: both at once.
  const [installed, providerStarted] = await Promise.allSettled([
    ensureVenv(install),
    startProvider({ adminToken, synapseClientId, synapseClientSecret, accessTokenTTL }),
  ]);
  if (installed.status === 'rejected' || providerStarted.status === 'rejected') {
    if (providerStarted.status === 'fulfilled') await providerStarted.value.stop();
    throw installed.status === 'rejected' ? installed.reason : (providerStarted as PromiseRejectedResult).reason;
  }
  const provider = providerStarted.value;
  let synapse: SynapseHandle | undefined;
  try {
    synapse = await startSynapse({
      install,
      extraConfig: {
        // msc3861 refuses to start with password login, registration or Synapse's own token lifetimes.
        refreshable_access_token_lifetime: undefined,
        refresh_token_lifetime: undefined,
        password_config: { enabled: false },
        enable_registration: false,
        experimental_features: {
          msc3861: {
            enabled: true,
            issuer: provider.issuer,
            client_id: synapseClientId,
            client_auth_method: 'client_secret_post',
            client_secret: synapseClientSecret,
            admin_token: adminToken,
            account_management_url: `${provider.issuer}/account`,
          },
        },
      },
    });
    provider.child.send({ synapseUrl: synapse.baseUrl });
    await nextMessage(provider.child, hasKey('configured'), 10_000, 'take the Synapse URL', provider.logFile);
  } catch (err) {
    await synapse?.stop().catch(() => undefined);
    await provider.stop();
    throw err;
  }
  const { baseUrl, version } = synapse;
  log(`OAuth homeserver up in ${((Date.now() - started) / 1000).toFixed(1)}s: Synapse ${version} at ${baseUrl}, issuer ${provider.issuer} (log ${provider.logFile})`);
  const stopSynapse = synapse.stop;
  let stopping: Promise<void> | undefined;
  return {
    baseUrl,
    issuer: provider.issuer,
    synapseVersion: version,
    adminToken,
    accessTokenTTL,
    stop: () => (stopping ??= Promise.all([stopSynapse(), provider.stop()]).then(() => undefined)),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Handing the servers to test files (jest workers inherit process.env from globalSetup)

/** The env vars that hand the OAuth homeserver to test workers (read back by oauthHomeserverFromEnv). */
export const OAUTH_ENV = {
  url: 'MXS_TEST_OAUTH_URL',
  issuer: 'MXS_TEST_OAUTH_ISSUER',
  synapseVersion: 'MXS_TEST_OAUTH_SYNAPSE_VERSION',
  adminToken: 'MXS_TEST_OAUTH_ADMIN_TOKEN',
  /** Also read by globalSetup: the access-token lifetime to start with (seconds, default 6). */
  accessTokenTTL: 'MXS_TEST_OAUTH_ACCESS_TOKEN_TTL',
  skipReason: 'MXS_TEST_OAUTH_SKIP_REASON',
} as const;

export function synapseEnv(handle: SynapseHandle): Record<string, string> {
  return {
    MXS_TEST_SYNAPSE_URL: handle.baseUrl,
    MXS_TEST_SYNAPSE_VERSION: handle.version,
    MXS_TEST_SYNAPSE_SHARED_SECRET: handle.registrationSharedSecret,
  };
}

export function oauthEnv(handle: OAuthHomeserver): Record<string, string> {
  return {
    [OAUTH_ENV.url]: handle.baseUrl,
    [OAUTH_ENV.issuer]: handle.issuer,
    [OAUTH_ENV.synapseVersion]: handle.synapseVersion,
    [OAUTH_ENV.adminToken]: handle.adminToken,
    [OAUTH_ENV.accessTokenTTL]: String(handle.accessTokenTTL),
  };
}

const notStarted = (what: string, urlVar: string): string =>
  `no ${what} was started (${urlVar} unset: is globalSetup test/support/global-setup.ts configured?)`;

/** Why there is no shared test Synapse (set by globalSetup), or a default. */
function synapseSkipReason(): string {
  if (process.env.MXS_TEST_SYNAPSE_SKIP_REASON) return process.env.MXS_TEST_SYNAPSE_SKIP_REASON;
  if (process.env.MXS_TEST_SYNAPSE === '0') return 'Synapse tests disabled by MXS_TEST_SYNAPSE=0';
  return notStarted('test Synapse', 'MXS_TEST_SYNAPSE_URL');
}

/** Why there is no shared OAuth homeserver (set by globalSetup), or a default. */
export function oauthSkipReason(): string {
  const env = process.env;
  if (env[OAUTH_ENV.skipReason]) return env[OAUTH_ENV.skipReason]!;
  if (env.MXS_TEST_SYNAPSE === '0') return 'OAuth homeserver tests disabled by MXS_TEST_SYNAPSE=0';
  if (env.MXS_TEST_OAUTH === '0') return 'OAuth homeserver tests disabled by MXS_TEST_OAUTH=0';
  return notStarted('test OAuth homeserver', OAUTH_ENV.url);
}

/**
 * `describe` for suites that need `what` (a homeserver, a client library): when it is `missing` (the reason), the
 * suite is skipped with the reason locally, and is one failing test under CI=true, where a missing piece must
 * fail the run.
 */
export function describeIfAvailable(name: string, what: string, missing: string | null, fn: () => void): void {
  if (missing === null) {
    describe(name, fn);
  } else if (process.env.CI === 'true') {
    describe(name, () => {
      test(`needs ${what}`, () => {
        throw new Error(`${missing} (under CI=true a missing piece fails the run)`);
      });
    });
  } else {
    console.warn(`Skipping "${name}": ${missing}`);
    describe.skip(name, fn);
  }
}

/** `describe` for suites that need the shared Synapse (MXS_TEST_SYNAPSE_URL); see describeIfAvailable. */
export function describeWithSynapse(name: string, fn: () => void): void {
  describeIfAvailable(name, 'a test Synapse', process.env.MXS_TEST_SYNAPSE_URL ? null : synapseSkipReason(), fn);
}

/** The shared test server's base URL; throws when there is none (use inside describeWithSynapse). */
export function testSynapseUrl(): string {
  const url = process.env.MXS_TEST_SYNAPSE_URL;
  if (!url) throw new Error(synapseSkipReason());
  return url;
}
