// Runs a command definition in this process, as oclif's runCommand and gh's runF do: the same
// parser (oclif's, built from the definition), the same runDefinition every front end uses, the
// real Output on fake streams. For what a command says and returns; what only a process shows (exit
// by signal, stdout hygiene, the fast path, start-up) stays with test/support/cli.ts.
import { Readable, Writable } from 'node:stream';
import { Parser } from '@oclif/core';
import { GLOBAL_FLAGS, type CommandDefinition, type FlagSpec } from '../../src/cli/command.js';
import { oclifArgs, oclifFlags, parseCommandLine } from '../../src/cli/oclif-command.js';
import { isParseError, parseError } from '../../src/cli/parse-error.js';
import { reportError } from '../../src/cli/report-error.js';
import { runDefinition, type ParsedInput } from '../../src/cli/run.js';
import { normalizeArgv } from '../../src/cli/argv.js';
import { Output } from '../../src/ui/output.js';
import { apiCommand } from '../../src/cli/commands/api.js';
import { devicesCommand, devicesDeleteCommand, devicesRenameCommand } from '../../src/cli/commands/devices.js';
import { execCommand } from '../../src/cli/commands/exec.js';
import { inspectCommand } from '../../src/cli/commands/inspect.js';
import { loginCommand } from '../../src/cli/commands/login.js';
import { logoutCommand } from '../../src/cli/commands/logout.js';
import { refreshCommand } from '../../src/cli/commands/refresh.js';
import { statusCommand } from '../../src/cli/commands/status.js';
import { switchCommand } from '../../src/cli/commands/switch.js';
import { tokenCommand } from '../../src/cli/commands/token.js';
import { whoamiCommand } from '../../src/cli/commands/whoami.js';
import type { RunResult } from './cli.js';

const COMMANDS = [apiCommand, devicesCommand, devicesDeleteCommand, devicesRenameCommand, execCommand, inspectCommand, loginCommand, logoutCommand, refreshCommand, statusCommand, switchCommand, tokenCommand, whoamiCommand];

/**
 * `mxs ARGV…` in this process, in the shape runMxs (test/support/cli.ts) gives, for tests moved from
 * a process: the command is found by its id as typed (`devices delete`), global flags may come first.
 */
export async function mxsInProcess(argv: string[], opts: CommandRunOptions = {}): Promise<RunResult> {
  const started = Date.now();
  const [first, second, ...more] = normalizeArgv(argv);
  const two = COMMANDS.find((c) => c.id === `${first}:${second}`);
  const command = two ?? COMMANDS.find((c) => c.id === first);
  if (!command) throw new Error(`no command definition for ${JSON.stringify(argv)}`);
  const r = await runCommand(command, two ? more : [second!, ...more].filter((a) => a !== undefined), opts);
  return { code: r.exitCode, signal: null, stdout: r.stdout, stderr: r.stderr, ms: Date.now() - started, json: r.json };
}

export interface CommandRun {
  stdout: string;
  stderr: string;
  exitCode: number;
  /** stdout parsed as JSON (throws if it is not). */
  json<T = any>(): T;
}

export interface CommandRunOptions {
  /** The command's whole environment (process.env is not inherited). */
  env?: Record<string, string | undefined>;
  /** Standard input's text (default: empty). */
  stdin?: string;
  /** stdout is a terminal (default: a pipe). */
  tty?: boolean;
  /** Ctrl-C cancels the run, as in a real process (a SIGINT listener is added while it runs). */
  interrupts?: boolean;
  /** Sees stderr as it is written, to act as the user on what a waiting command printed. */
  onStderr?: (text: string) => void;
}

/** `mxs ARGV…` for one definition: argv as typed after the command id (global flags may stand first, as bin/run.js allows). */
export async function runCommand(command: CommandDefinition, argv: string[], opts: CommandRunOptions = {}): Promise<CommandRun> {
  const stdout = new Capture();
  stdout.isTTY = opts.tty === true;
  const stderr = new Capture(opts.onStderr);
  const out = new Output(stdout, stderr);
  const env = { ...opts.env } as NodeJS.ProcessEnv;
  const [, ...args] = normalizeArgv([command.id, ...argv]);
  let exitCode: number;
  try {
    const parsed = await withEnv(env, () => parseCommandLine(command, args, (a) => parse(command, a)));
    const stdin = Readable.from([Buffer.from(opts.stdin ?? '')]) as unknown as NodeJS.ReadStream;
    exitCode = await runDefinition(command, parsed, { out, env, stdin: () => stdin, interrupts: opts.interrupts });
  } catch (err) {
    // What oclif's front end reports from its catch: the command line did not parse.
    const e = isParseError(err) ? parseError(err as Error, args, command) : err;
    exitCode = reportError(e, out, { json: args.includes('--json'), verbose: args.includes('--verbose'), hints: { defaultProfile: null } });
  }
  return {
    stdout: stdout.text,
    stderr: stderr.text,
    exitCode,
    json() {
      return JSON.parse(stdout.text);
    },
  };
}

function parse(command: CommandDefinition, argv: string[]): Promise<ParsedInput & { argv: unknown[] }> {
  return Parser.parse(argv, {
    flags: oclifFlags({ ...GLOBAL_FLAGS, ...(command.flags as Record<string, FlagSpec>) }),
    args: oclifArgs(command.args ?? {}),
    strict: command.passThrough === undefined,
  }) as unknown as Promise<ParsedInput & { argv: unknown[] }>;
}

/** oclif reads a flag's env var (MXS_PROFILE, MXS_STORAGE, MXS_TIMEOUT) from process.env while it parses. */
async function withEnv<T>(env: NodeJS.ProcessEnv, fn: () => Promise<T>): Promise<T> {
  const names = Object.values(GLOBAL_FLAGS).flatMap((f) => (f.env ? [f.env] : []));
  const saved = names.map((n) => [n, process.env[n]] as const);
  for (const n of names) {
    if (env[n] === undefined) delete process.env[n];
    else process.env[n] = env[n];
  }
  try {
    return await fn();
  } finally {
    for (const [n, v] of saved) {
      if (v === undefined) delete process.env[n];
      else process.env[n] = v;
    }
  }
}

class Capture extends Writable {
  text = '';
  isTTY = false;
  constructor(private readonly onText?: (text: string) => void) {
    super();
  }
  override _write(chunk: Buffer | string, _encoding: BufferEncoding, done: () => void): void {
    this.text += chunk.toString();
    this.onText?.(this.text);
    done();
  }
}

/** What a device-code login needs of a double: its authorizations, and approving one as a user. */
interface DeviceCodeServer {
  deviceAuthorizations(): { userCode: string; status: string }[];
  approveDevice(userCode: string, localpart?: string): void;
}

/**
 * `mxs login ARGV…` in this process on a device-code server (the double), approved as `localpart` as soon
 * as the code is issued; the finished run, whatever its exit code. Fails at once if the login ends first.
 */
export async function deviceCodeLogin(hs: DeviceCodeServer, argv: string[], opts: CommandRunOptions & { as?: string } = {}): Promise<RunResult> {
  const before = hs.deviceAuthorizations().length;
  let ended = false;
  const run = mxsInProcess(['login', ...argv], opts).finally(() => (ended = true));
  while (hs.deviceAuthorizations().length === before) {
    if (ended) throw new Error(`the login ended before it asked for a device code: ${(await run).stderr}`);
    await new Promise((r) => setTimeout(r, 5));
  }
  hs.approveDevice(hs.deviceAuthorizations()[before]!.userCode, opts.as ?? 'alice');
  return run;
}
