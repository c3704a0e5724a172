// Imports one of the test helpers written in TypeScript (test/support/*.ts, which use only
// node: builtins) from a plain Node script, by transpiling it to a temporary .mjs.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

export async function importTs(source) {
  const { default: ts } = await import('typescript');
  const { outputText } = ts.transpileModule(readFileSync(source, 'utf8'), {
    compilerOptions: { module: ts.ModuleKind.ES2022, target: ts.ScriptTarget.ES2022 },
    fileName: source,
  });
  const dir = mkdtempSync(path.join(tmpdir(), 'mxs-import-ts-'));
  const file = path.join(dir, `${path.basename(source, '.ts')}.mjs`);
  writeFileSync(file, outputText);
  try {
    return await import(pathToFileURL(file).href);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
