// Helpers for the doctor tests: a process that holds a profile lock for real (through the built
// src/store/lock.ts), and the doctor JSON Schemas compiled with ajv (draft 2020-12, strict).
import { spawn, type ChildProcess } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import _Ajv2020 from 'ajv/dist/2020.js';
import _addFormats from 'ajv-formats';
import { REPO } from './cli.js';

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
