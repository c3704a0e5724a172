// An unmodified third-party Matrix client for the proxy tests: matrix-nio (PyPI), pinned, in its own venv
// under <repo>/.cache/nio-venv, installed the way test/support/synapse.ts installs Synapse (python3 -m venv,
// then pip; progress on stderr; a directory lock so parallel jest workers do not install at once). No
// end-to-end-encryption extra: the client works unencrypted without python-olm.
//
// describeWithNio() runs a suite when the client is installed (or can be, ~30 s the first time), skips it with
// the reason printed otherwise, and under CI=true fails instead of skipping. test/support/nio-client.py is the
// bot that runs on it.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { describeIfAvailable, repoRoot, withInstallLock } from './synapse.js';

/** The matrix-nio release the tests run (bump deliberately; CI installs exactly this). */
export const NIO_PINNED_VERSION = '0.26.0';

export function nioVenvDir(): string {
  return process.env.MXS_NIO_VENV || path.join(repoRoot(), '.cache', 'nio-venv');
}

export function nioClientScript(): string {
  return path.join(repoRoot(), 'test', 'support', 'nio-client.py');
}

interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
  error?: Error;
}

function run(cmd: string, args: string[], progress = false): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PIP_NO_INPUT: '1' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d;
      if (progress) process.stderr.write(`[nio] ${d}`);
    });
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    child.on('error', (error) => resolve({ code: null, stdout, stderr, error }));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

const tail = (text: string, lines = 20) => text.trimEnd().split('\n').slice(-lines).join('\n');

async function installedVersion(python: string): Promise<string | undefined> {
  if (!existsSync(python)) return undefined;
  const r = await run(python, ['-c', "import nio, importlib.metadata as m; print(m.version('matrix-nio'))"]);
  return r.code === 0 ? r.stdout.trim() : undefined;
}

let installing: Promise<{ python: string; version: string }> | undefined;

/** Makes sure the venv holds matrix-nio NIO_PINNED_VERSION; returns its python. Throws an Error saying what is missing. */
export function ensureNioInstalled(): Promise<{ python: string; version: string }> {
  installing ??= doInstall().catch((err: unknown) => {
    installing = undefined;
    throw err;
  });
  return installing;
}

async function doInstall(): Promise<{ python: string; version: string }> {
  const venv = nioVenvDir();
  const python = path.join(venv, 'bin', 'python');
  if ((await installedVersion(python)) === NIO_PINNED_VERSION) return { python, version: NIO_PINNED_VERSION };
  mkdirSync(path.dirname(venv), { recursive: true });
  return withInstallLock(`${venv}.lock`, 'matrix-nio', async () => {
    if ((await installedVersion(python)) === NIO_PINNED_VERSION) return { python, version: NIO_PINNED_VERSION };
    if (!existsSync(python)) {
      const python3 = process.env.MXS_PYTHON || 'python3';
      const mk = await run(python3, ['-m', 'venv', venv]);
      if (mk.code !== 0) {
        rmSync(venv, { recursive: true, force: true });
        throw new Error(`Cannot install matrix-nio: '${python3} -m venv' failed (Python 3.10+ with venv needed; Debian: apt-get install python3-venv): ${mk.error?.message ?? tail(mk.stdout + mk.stderr, 5)}`);
      }
    }
    process.stderr.write(`[nio] installing matrix-nio==${NIO_PINNED_VERSION} into ${venv}\n`);
    const pip = await run(python, ['-m', 'pip', 'install', '--disable-pip-version-check', '--no-input', '--progress-bar', 'off', `matrix-nio==${NIO_PINNED_VERSION}`]);
    if (pip.code !== 0) throw new Error(`Cannot install matrix-nio: pip install failed:\n${tail(pip.stdout + pip.stderr)}`);
    const version = await installedVersion(python);
    if (version !== NIO_PINNED_VERSION) throw new Error(`Cannot install matrix-nio: the venv reports ${version ?? 'none'} after pip install`);
    return { python, version };
  });
}

export type NioAvailability = { ok: true; python: string; version: string } | { ok: false; reason: string };

/** Installs when needed (only when a test Synapse runs: the client is useless without one). */
export async function nioAvailability(): Promise<NioAvailability> {
  if (process.env.MXS_TEST_NIO === '0') return { ok: false, reason: 'matrix-nio tests disabled by MXS_TEST_NIO=0' };
  if (!process.env.MXS_TEST_SYNAPSE_URL) return { ok: false, reason: 'no test Synapse (the matrix-nio suite runs against it)' };
  try {
    return { ok: true, ...(await ensureNioInstalled()) };
  } catch (err) {
    return { ok: false, reason: err instanceof Error ? err.message : String(err) };
  }
}

/** `describe` for suites that need matrix-nio (see describeIfAvailable in synapse.ts). */
export function describeWithNio(name: string, availability: NioAvailability, fn: () => void): void {
  describeIfAvailable(name, 'matrix-nio', availability.ok ? null : availability.reason, fn);
}
