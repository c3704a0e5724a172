// An unmodified third-party Matrix client for the proxy tests: matrix-js-sdk (npm), pinned in
// test/clients/matrix-js-sdk/package.json and package-lock.json (kept out of mxs's own package.json and lock),
// installed with `npm ci --ignore-scripts` into <repo>/.cache/matrix-js-sdk under the install lock of synapse.ts,
// and reused while made from the same package.json and lock. The SDK needs Node 22+, so its client
// (test/support/js-sdk-client.mjs) always runs on the Node 24 of scripts/node24.sh, whichever Node runs jest.
// No end-to-end encryption: the crypto wasm is installed (a dependency of the SDK) but never loaded.
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describeIfAvailable, repoRoot, run, tail, withInstallLock } from './synapse.js';

/** Where the pinned package.json and package-lock.json live (bump the version there, then `npm install --package-lock-only`). */
function jsSdkPackageDir(): string {
  return path.join(repoRoot(), 'test', 'clients', 'matrix-js-sdk');
}

/** The matrix-js-sdk release the tests run (from the pinned package.json; CI installs exactly this). */
export function jsSdkPinnedVersion(): string {
  const pkg = JSON.parse(readFileSync(path.join(jsSdkPackageDir(), 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
  return pkg.dependencies['matrix-js-sdk']!;
}

export function jsSdkClientScript(): string {
  return path.join(repoRoot(), 'test', 'support', 'js-sdk-client.mjs');
}

/** What an install was made from: the pinned package.json and lock, hashed. */
function lockStamp(): string {
  const hash = createHash('sha256');
  for (const file of ['package.json', 'package-lock.json']) hash.update(readFileSync(path.join(jsSdkPackageDir(), file)));
  return hash.digest('hex');
}

const STAMP = '.mxs-installed-from';

/** The SDK version installed in `dir` when that install was made from the current pinned files, else undefined. */
function installedVersion(dir: string, stamp: string): string | undefined {
  try {
    if (readFileSync(path.join(dir, STAMP), 'utf8') !== stamp) return undefined;
    return (JSON.parse(readFileSync(path.join(dir, 'node_modules', 'matrix-js-sdk', 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return undefined;
  }
}

/** The Node 24 binary of scripts/node24.sh (fetched into .cache/node24 the first time, reused after). */
async function node24(): Promise<string> {
  const r = await run('bash', [path.join(repoRoot(), 'scripts', 'node24.sh')]);
  const bin = r.stdout.trim().split('\n').at(-1) ?? '';
  if (r.code !== 0 || !bin || !existsSync(bin)) throw new Error(`Cannot get Node 24 for matrix-js-sdk (it needs Node 22+): scripts/node24.sh failed: ${r.error?.message ?? tail(r.stdout + r.stderr, 5)}`);
  return bin;
}

interface JsSdkInstall {
  /** The Node 24 binary to run the client on. */
  node: string;
  /** The directory to hand the client as MXS_JS_SDK_DIR. */
  dir: string;
  version: string;
}

let installing: Promise<JsSdkInstall> | undefined;

/** Makes sure Node 24 and the pinned matrix-js-sdk are there. Throws an Error saying what is missing. */
function ensureJsSdkInstalled(): Promise<JsSdkInstall> {
  installing ??= doInstall().catch((err: unknown) => {
    installing = undefined;
    throw err;
  });
  return installing;
}

async function doInstall(): Promise<JsSdkInstall> {
  const node = await node24();
  const dir = process.env.MXS_JS_SDK_DIR || path.join(repoRoot(), '.cache', 'matrix-js-sdk');
  const pinned = jsSdkPinnedVersion();
  const stamp = lockStamp();
  if (installedVersion(dir, stamp) === pinned) return { node, dir, version: pinned };
  mkdirSync(path.dirname(dir), { recursive: true });
  return withInstallLock(`${dir}.lock`, 'matrix-js-sdk', async () => {
    if (installedVersion(dir, stamp) === pinned) return { node, dir, version: pinned };
    process.stderr.write(`[js-sdk] installing matrix-js-sdk@${pinned} into ${dir}\n`);
    // Built beside the target and renamed into place: a failed or interrupted install leaves no half-made one.
    const tmp = mkdtempSync(`${dir}.tmp-`);
    try {
      for (const file of ['package.json', 'package-lock.json']) cpSync(path.join(jsSdkPackageDir(), file), path.join(tmp, file));
      // npm itself runs on Node 24 too (the SDK's engines say >=22: no EBADENGINE warning).
      const env = { ...process.env, PATH: `${path.dirname(node)}${path.delimiter}${process.env.PATH ?? ''}` };
      const npm = await run('npm', ['ci', '--no-audit', '--no-fund', '--ignore-scripts', '--loglevel=warn'], { cwd: tmp, env });
      if (npm.code !== 0) throw new Error(`Cannot install matrix-js-sdk: npm ci failed: ${npm.error?.message ?? tail(npm.stdout + npm.stderr)}`);
      writeFileSync(path.join(tmp, STAMP), stamp);
      const version = installedVersion(tmp, stamp);
      if (version !== pinned) throw new Error(`Cannot install matrix-js-sdk: npm ci installed ${version ?? 'none'}, not ${pinned}`);
      rmSync(dir, { recursive: true, force: true });
      renameSync(tmp, dir);
      return { node, dir, version };
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
}

export type JsSdkAvailability = ({ ok: true } & JsSdkInstall) | { ok: false; reason: string };

/** Installs when needed (only when a test Synapse runs: the client is useless without one). */
export async function jsSdkAvailability(): Promise<JsSdkAvailability> {
  if (process.env.MXS_TEST_JS_SDK === '0') return { ok: false, reason: 'matrix-js-sdk tests disabled by MXS_TEST_JS_SDK=0' };
  if (!process.env.MXS_TEST_SYNAPSE_URL) return { ok: false, reason: 'no test Synapse (the matrix-js-sdk suite runs against it)' };
  try {
    return { ok: true, ...(await ensureJsSdkInstalled()) };
  } catch (err) {
    return { ok: false, reason: err instanceof Error ? err.message : String(err) };
  }
}

/** `describe` for suites that need matrix-js-sdk (runs, skips with the reason, or under CI=true fails: describeIfAvailable). */
export function describeWithJsSdk(name: string, availability: JsSdkAvailability, fn: () => void): void {
  describeIfAvailable(name, 'matrix-js-sdk', availability.ok ? null : availability.reason, fn);
}
