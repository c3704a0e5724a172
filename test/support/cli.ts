// Runs the built CLI (bin/run.js) as a real child process. Always async: the homeserver double
// lives in the test's event loop and must keep answering while the CLI runs.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

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
}

/** A throwaway config dir and the env that points mxs at it (file storage unless told otherwise). */
export async function makeHome(storage: 'file' | 'keychain' | 'auto' = 'file'): Promise<{ dir: string; env: Record<string, string>; cleanup(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'mxs-test-'));
  return {
    dir,
    env: { MXS_CONFIG_DIR: join(dir, 'config'), MXS_STORAGE: storage },
    cleanup: () => rm(dir, { recursive: true, force: true }),
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
  const argv = [process.execPath, opts.bin ?? BIN, ...args];
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
