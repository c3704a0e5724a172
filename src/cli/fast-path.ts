import { fstatSync, statSync, writeSync } from 'node:fs';
import { devNull } from 'node:os';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { Output, type Stream } from '../ui/output.js';
import { GLOBAL_FLAGS, type CommandDefinition, type FlagSpec } from './command.js';
import { statusCommand } from './commands/status.js';
import { tokenCommand } from './commands/token.js';
import { runDefinition } from './run.js';

export { normalizeArgv } from './argv.js';
export { exitProcess } from '../store/keytar-direct.js';

// `mxs status` and `mxs token` run in prompts and shell loops, so their start-up is the product's
// speed. Loading @oclif/core alone costs about as much as Node's own start, so for these commands,
// when the argv is plain, mxs parses it here, from the same flag metadata oclif's parser is built
// from, and runs the same definition the same way (src/cli/run.ts). Anything else (help, unknown or
// malformed flags, flag values oclif would refuse, other commands) returns undefined and goes to
// oclif, which owns every message about usage. `npm run build` bundles this module and everything
// it loads into one file (dist/cli/hot.cjs, the esbuild step of package.json's build script).

const HOT: Record<string, CommandDefinition> = {
  status: statusCommand,
  token: tokenCommand,
};

/** The hot commands' ids (test/integration/front-ends.test.ts runs each both ways). */
export const HOT_COMMANDS = Object.keys(HOT);

export async function tryFastPath(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number | undefined> {
  const [id, ...rest] = argv;
  const command = id === undefined || !Object.hasOwn(HOT, id) ? undefined : HOT[id];
  if (!command || env.MXS_NO_FAST_PATH) return undefined;
  if (rest.some((a) => a === '--help' || a === '-h' || a === '--')) return undefined;
  const flags = parseFlags({ ...GLOBAL_FLAGS, ...(command.flags as Record<string, FlagSpec>) }, rest, env);
  if (!flags) return undefined;
  const out = await Output.create(fdStream(1), fdStream(2), env);
  return runDefinition(command, { flags, args: {} }, { out, env, stdin: () => process.stdin, interrupts: true });
}

/** The flags as oclif would parse them, or undefined when oclif should look at this argv itself. */
function parseFlags(specs: Record<string, FlagSpec>, args: string[], env: NodeJS.ProcessEnv): Record<string, unknown> | undefined {
  const options: NonNullable<ParseArgsConfig['options']> = {};
  for (const [name, f] of Object.entries(specs)) {
    options[name] = { type: f.type === 'boolean' ? 'boolean' : 'string', ...(f.char ? { short: f.char } : {}) };
  }
  let values: Record<string, unknown>;
  try {
    ({ values } = parseArgs({ args, options, strict: true, allowPositionals: false }));
  } catch {
    return undefined;
  }
  const flags: Record<string, unknown> = {};
  for (const [name, f] of Object.entries(specs)) {
    let v = values[name];
    if (v === undefined && f.env && env[f.env] !== undefined) {
      if (f.type === 'boolean') return undefined; // oclif's boolean env rules: leave them to oclif
      v = env[f.env];
    }
    if (v === undefined) v = f.default ?? (f.type === 'boolean' ? false : undefined);
    if (f.options && v !== undefined && !f.options.includes(v as string)) return undefined;
    if (f.exclusive && values[name] !== undefined && f.exclusive.some((x) => values[x] !== undefined)) return undefined;
    flags[name] = v;
  }
  return flags;
}

/**
 * stdout or stderr, written with fs.writeSync. process.stdout would load node:stream (and node:net
 * for a pipe, the usual `$(mxs token)`), a few ms of a run that takes 40; this writes the same bytes.
 */
function fdStream(fd: 1 | 2): Stream {
  let tty: boolean | undefined;
  return {
    write(text: string) {
      writeAll(fd, Buffer.from(text));
      return true;
    },
    get isTTY() {
      return (tty ??= isTerminal(fd));
    },
  };
}

function isTerminal(fd: number): boolean {
  // Pipes, files and /dev/null (scripts) are settled without loading node:tty, which loads node:net.
  let st;
  try {
    st = fstatSync(fd);
  } catch {
    return false;
  }
  if (!st.isCharacterDevice() || st.rdev === statSync(devNull, { throwIfNoEntry: false })?.rdev) return false;
  return process.getBuiltinModule('node:tty').isatty(fd);
}

function writeAll(fd: number, buf: Buffer): void {
  let done = 0;
  while (done < buf.length) {
    try {
      done += writeSync(fd, buf, done);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // A reader that went away (`mxs status | head -1`) wants no more.
      if (code === 'EPIPE') return;
      // A non-blocking pipe that is full: wait for the reader.
      if (code === 'EAGAIN') Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
      else throw err;
    }
  }
}
