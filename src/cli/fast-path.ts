import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { Output } from '../ui/output.js';
import { commandContext, type GlobalFlags } from './context.js';
import { reportError } from './report-error.js';

export { normalizeArgv } from './argv.js';

// `mxs status` and `mxs token` run in prompts and shell loops, so their start-up is the
// product's speed. Loading @oclif/core alone costs about as much as Node's own start, so for
// these two commands, when the argv is plain, mxs parses it here, from the flag definitions in
// oclif.manifest.json (the same ones oclif uses), and runs the same code oclif would. Anything
// else (help, unknown or malformed flags, other commands) returns undefined and goes to oclif,
// which owns every message about usage.

interface ManifestFlag {
  name: string;
  type: 'boolean' | 'option';
  char?: string;
  env?: string;
  default?: unknown;
  options?: string[];
  allowNo?: boolean;
  exclusive?: string[];
}

const HOT: Record<string, true> = { status: true, token: true };

export async function tryFastPath(argv: string[], root: string, env: NodeJS.ProcessEnv = process.env): Promise<number | undefined> {
  const [id, ...rest] = argv;
  if (id === undefined || !HOT[id] || env.MXS_NO_FAST_PATH) return undefined;
  if (rest.some((a) => a === '--help' || a === '-h' || a === '--')) return undefined;
  const flags = parseFlags(id, rest, root, env);
  if (!flags) return undefined;
  const out = await Output.create(process.stdout, process.stderr, env);
  const json = flags.json === true;
  try {
    const ctx = commandContext(flags as unknown as GlobalFlags, out, env);
    if (id === 'status') {
      const { runStatus } = await import('./status.js');
      const { result, exitCode } = await runStatus(ctx, flags as { all: boolean; watch: boolean }, json);
      if (json) out.json(result);
      return exitCode;
    }
    const { runToken } = await import('./token.js');
    await runToken(ctx, flags as { 'min-valid': string }, json);
    return 0;
  } catch (err) {
    return reportError(err, out, { json, verbose: flags.verbose === true, argv: rest });
  }
}

function parseFlags(id: string, args: string[], root: string, env: NodeJS.ProcessEnv): Record<string, unknown> | undefined {
  let defs: ManifestFlag[];
  try {
    const manifest = JSON.parse(readFileSync(join(root, 'oclif.manifest.json'), 'utf8'));
    defs = Object.values(manifest.commands[id].flags as Record<string, ManifestFlag>);
  } catch {
    return undefined;
  }
  const options: NonNullable<ParseArgsConfig['options']> = {};
  for (const f of defs) {
    options[f.name] = { type: f.type === 'boolean' ? 'boolean' : 'string', ...(f.char ? { short: f.char } : {}) };
    if (f.allowNo) options[`no-${f.name}`] = { type: 'boolean' };
  }
  let values: Record<string, unknown>;
  try {
    ({ values } = parseArgs({ args, options, strict: true, allowPositionals: false }));
  } catch {
    return undefined;
  }
  const flags: Record<string, unknown> = {};
  for (const f of defs) {
    let v = values[f.name];
    if (f.allowNo && values[`no-${f.name}`] === true) v = false;
    if (v === undefined && f.env && env[f.env] !== undefined) {
      if (f.type === 'boolean') return undefined; // oclif's boolean env rules: leave them to oclif
      v = env[f.env];
    }
    if (v === undefined) v = f.default ?? (f.type === 'boolean' ? false : undefined);
    if (f.options && v !== undefined && !f.options.includes(v as string)) return undefined;
    if (f.exclusive && values[f.name] !== undefined && f.exclusive.some((x) => values[x] !== undefined)) return undefined;
    flags[f.name] = v;
  }
  return flags;
}
