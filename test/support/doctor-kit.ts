// Helpers for the doctor tests: a process that holds a profile lock for real (through the built
// src/store/lock.ts), and the doctor JSON Schemas compiled with ajv (draft 2020-12, strict).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import _Ajv2020 from 'ajv/dist/2020.js';
import _addFormats from 'ajv-formats';
import { BIN, REPO, type RunResult } from './cli.js';

/** A node process holding `lockPath` with mxs's own withLock until it is killed; resolves once the lock is held. */
export async function holdLock(lockPath: string): Promise<ChildProcess> {
  const lockModule = pathToFileURL(join(REPO, 'dist', 'store', 'lock.js')).href;
  const script = `const { withLock } = await import(${JSON.stringify(lockModule)});
setInterval(() => {}, 1000);
await withLock(${JSON.stringify(lockPath)}, { waitMs: 5000 }, async () => { process.stdout.write('held\\n'); await new Promise(() => {}); });`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => (d.toString().includes('held') ? resolve() : undefined));
    child.on('exit', (code) => reject(new Error(`the lock holder exited early (${code})`)));
  });
  return child;
}

/** Validates a document against docs/schemas/FILE; returns ajv's errors (empty when valid). */
export async function schemaErrors(file: string, value: unknown): Promise<string[]> {
  const Ajv2020 = _Ajv2020.default;
  const ajv = new Ajv2020({ allErrors: true, strict: true });
  _addFormats.default(ajv);
  const dir = join(REPO, 'docs', 'schemas');
  for (const f of (await readdir(dir)).filter((n) => n.startsWith('doctor'))) ajv.addSchema(JSON.parse(await readFile(join(dir, f), 'utf8')));
  const validate = ajv.getSchema(`https://github.com/mxs-cli/mxs/blob/main/docs/schemas/${file}`)!;
  return validate(value) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message}`);
}

/** `faketime -f OFFSET node bin/run.js ARGS`: mxs with its clock moved (libfaketime), the rest as runMxs gives it. */
export function runFaketime(offset: string, args: string[], env: Record<string, string>): Promise<RunResult> {
  const started = Date.now();
  const full: Record<string, string | undefined> = { ...process.env, NO_COLOR: '1', DBUS_SESSION_BUS_ADDRESS: 'unix:path=/nonexistent/mxs-test-bus', ...env };
  delete full.MXS_PROFILE;
  const child = spawn('faketime', ['-f', offset, process.execPath, BIN, ...args], { env: full as NodeJS.ProcessEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve) => {
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 40_000);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started, json: () => JSON.parse(stdout) });
    });
  });
}

/** Whether faketime can run here; CI=true makes its absence a failure, elsewhere the caller reports a skip. */
export function haveFaketime(): boolean {
  if (spawnSync('faketime', ['-f', '+0', 'true']).status === 0) return true;
  if (process.env.CI === 'true') throw new Error('faketime is not installed (Debian: apt-get install faketime); CI=true: a missing tool fails the run');
  return false;
}
