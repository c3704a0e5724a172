// Runs the built CLI (bin/run.js) as a real child process. Always async: the homeserver double
// lives in the test's event loop and must keep answering while the CLI runs. Also the set-up most
// suites share: a config dir and a homeserver double per test, config dirs for a whole suite.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startHomeserverDouble, type DoubleOptions, type HomeserverDouble } from './homeserver-double.js';

export const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BIN = join(REPO, 'bin', 'run.js');

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
  /** stdout parsed as JSON (throws if it is not). */
  json<T = any>(): T;
}

export interface RunOptions {
  env?: Record<string, string | undefined>;
  input?: string;
  timeoutMs?: number;
  /** Run mxs under `faketime -f OFFSET` (libfaketime): its clock moved, e.g. '+1h'. */
  faketime?: string;
}

export type Storage = 'file' | 'keychain' | 'auto';
export type Home = { dir: string; env: Record<string, string>; cleanup(): Promise<void> };

/** A throwaway config dir and the env that points mxs at it (file storage unless told otherwise). */
export async function makeHome(storage: Storage = 'file'): Promise<Home> {
  const dir = await mkdtemp(join(tmpdir(), 'mxs-test-'));
  return {
    dir,
    env: { MXS_CONFIG_DIR: join(dir, 'config'), MXS_STORAGE: storage },
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

/** Per test: `make()` before it, handed to `take` (`(x) => (moduleVariable = x)`); `dispose` after it. */
function perTest<T>(make: () => Promise<T>, dispose: (made: T) => Promise<void>, take: (made: T) => void): void {
  let made: T | undefined;
  beforeEach(async () => {
    made = await make();
    take(made);
  });
  afterEach(async () => {
    if (made !== undefined) await dispose(made);
    made = undefined;
  });
}

/** Per test: a fresh config dir (`homePerTest((h) => (home = h))`), removed after it. */
export function homePerTest(take: (home: Home) => void, storage: Storage = 'file'): void {
  perTest(() => makeHome(storage), (home) => home.cleanup(), take);
}

/** Per test: a fresh homeserver double (`doublePerTest(opts, (d) => (hs = d))`), closed after it. */
export function doublePerTest(opts: DoubleOptions, take: (hs: HomeserverDouble) => void): void {
  perTest(() => startHomeserverDouble(opts), (hs) => hs.close(), take);
}

/** Config dirs for a whole suite: each call of the returned function makes one; all are removed after the suite. */
export function homesForSuite(storage: Storage = 'file'): () => Promise<Home> {
  const homes: Home[] = [];
  afterAll(async () => {
    await Promise.all(homes.splice(0).map((h) => h.cleanup()));
  });
  return async () => {
    const home = await makeHome(storage);
    homes.push(home);
    return home;
  };
}

export interface Started {
  child: ChildProcess;
  /** argv as given to spawn (node, bin/run.js, ...args). */
  argv: string[];
  done: Promise<RunResult>;
}

/** Starts the CLI and returns at once with the child process; `done` settles when it exits. */
export function startMxs(args: string[], opts: RunOptions & { bin?: string } = {}): Started {
  const started = Date.now();
  const env: Record<string, string | undefined> = { ...process.env, NO_COLOR: '1', ...opts.env };
  // Keep the child off any D-Bus session unless the test gives it one.
  if (!opts.env || !('DBUS_SESSION_BUS_ADDRESS' in opts.env)) env.DBUS_SESSION_BUS_ADDRESS = 'unix:path=/nonexistent/mxs-test-bus';
  const argv = [...(opts.faketime !== undefined ? ['faketime', '-f', opts.faketime] : []), process.execPath, opts.bin ?? BIN, ...args];
  const child = spawn(argv[0]!, argv.slice(1), { env: env as NodeJS.ProcessEnv, stdio: ['pipe', 'pipe', 'pipe'] });
  const done = new Promise<RunResult>((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({
        code,
        signal,
        stdout,
        stderr,
        ms: Date.now() - started,
        json() {
          return JSON.parse(stdout);
        },
      });
    });
    child.stdin!.on('error', () => {});
    child.stdin!.end(opts.input ?? '');
  });
  return { child, argv, done };
}

export function runMxs(args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return startMxs(args, opts).done;
}

/** `faketime -f OFFSET node bin/run.js ARGS`: mxs with its clock moved (libfaketime), the rest as runMxs gives it. */
export function runFaketime(offset: string, args: string[], env: Record<string, string>): Promise<RunResult> {
  return runMxs(args, { env: { ...env, MXS_PROFILE: undefined }, faketime: offset, timeoutMs: 40_000 });
}

/** Whether faketime can run here; CI=true makes its absence a failure, elsewhere the caller reports a skip. */
export function haveFaketime(): boolean {
  if (spawnSync('faketime', ['-f', '+0', 'true']).status === 0) return true;
  if (process.env.CI === 'true') throw new Error('faketime is not installed (Debian: apt-get install faketime); CI=true: a missing tool fails the run');
  return false;
}

/** [text to wait for, keys to type, seconds to pause first (default 0.2)]. */
export type TerminalStep = [string, string] | [string, string, number];

/**
 * Runs mxs on a real pseudo-terminal, as a person at a keyboard: each step waits for its text on the screen,
 * pauses, then types its keys (test/support/pty-run.py). The screen also goes to `onScreen` as it comes, so
 * a test can play the other side (e.g. the account page) meanwhile. `code` is mxs's exit code.
 */
export function onTerminal(env: Record<string, string>, steps: TerminalStep[], args: string[], onScreen: (screen: string) => void = () => {}): Promise<{ screen: string; code: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn('python3', [join(REPO, 'test', 'support', 'pty-run.py'), JSON.stringify(steps), '--', process.execPath, BIN, ...args], {
      env: { ...process.env, ...env, NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let screen = '';
    child.stdout.on('data', (d) => {
      screen += d;
      onScreen(screen);
    });
    child.on('error', reject);
    child.on('close', () => {
      const m = /\nEXIT (\d+)\n$/.exec(screen);
      resolve({ screen, code: m ? Number(m[1]) : -1 });
    });
  });
}

/** Every file below `dir` with its mode and content, for leak scans and permission checks. */
export async function filesBelow(dir: string): Promise<{ path: string; mode: number; content: string }[]> {
  const out: { path: string; mode: number; content: string }[] = [];
  async function walk(d: string): Promise<void> {
    let entries;
    try {
      entries = await readdir(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else out.push({ path: p, mode: (await stat(p)).mode & 0o777, content: await readFile(p, 'utf8') });
    }
  }
  await walk(dir);
  return out;
}
