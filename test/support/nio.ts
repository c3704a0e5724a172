// An unmodified third-party Matrix client for the proxy tests: matrix-nio (PyPI), pinned, in its own venv under
// <repo>/.cache/nio-venv, installed on first use (~30 s) the way Synapse is (ensureVenv in synapse.ts). No
// end-to-end-encryption extra: the client works unencrypted without python-olm. test/support/nio-client.py is
// the bot that runs on it.
import path from 'node:path';
import { describeIfAvailable, ensureVenv, repoRoot } from './synapse.js';

/** The matrix-nio release the tests run (bump deliberately; CI installs exactly this). */
const NIO_PINNED_VERSION = '0.26.0';

export function nioClientScript(): string {
  return path.join(repoRoot(), 'test', 'support', 'nio-client.py');
}

export type NioAvailability = { ok: true; python: string; version: string } | { ok: false; reason: string };

/** Installs when needed (only when a test Synapse runs: the client is useless without one). */
export async function nioAvailability(): Promise<NioAvailability> {
  if (process.env.MXS_TEST_NIO === '0') return { ok: false, reason: 'matrix-nio tests disabled by MXS_TEST_NIO=0' };
  if (!process.env.MXS_TEST_SYNAPSE_URL) return { ok: false, reason: 'no test Synapse (the matrix-nio suite runs against it)' };
  const venv = process.env.MXS_NIO_VENV || path.join(repoRoot(), '.cache', 'nio-venv');
  try {
    return { ok: true, ...(await ensureVenv({ name: 'matrix-nio', version: NIO_PINNED_VERSION, imports: ['nio'], venv })) };
  } catch (err) {
    return { ok: false, reason: err instanceof Error ? err.message : String(err) };
  }
}

/** `describe` for suites that need matrix-nio (runs, skips with the reason, or under CI=true fails: describeIfAvailable). */
export function describeWithNio(name: string, availability: NioAvailability, fn: () => void): void {
  describeIfAvailable(name, 'matrix-nio', availability.ok ? null : availability.reason, fn);
}
