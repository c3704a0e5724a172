import { Args, Command, Flags, type Interfaces } from '@oclif/core';
import { Output } from '../ui/output.js';
import { GLOBAL_FLAGS, type ArgSpec, type CommandDefinition, type FlagSpec } from './command.js';
import { isParseError, parseError } from './parse-error.js';
import { reportError } from './report-error.js';
import { runDefinition, type ParsedInput } from './run.js';

/**
 * The oclif front end of a command definition (src/cli/command.ts): help, flags, args and the
 * manifest come from its declarations, the behaviour from its run function through src/cli/run.ts,
 * as on the fast path. src/commands/ID.ts is `export default oclifCommand(definition)`.
 */
export function oclifCommand(command: CommandDefinition): typeof Command {
  return class extends MxsCommand {
    static override summary = command.summary;
    static override description = command.description;
    static override examples = command.examples;
    static override usage = command.usage;
    static override flags = oclifFlags(command.flags as Record<string, FlagSpec>);
    static override args = oclifArgs((command.args ?? {}) as Record<string, ArgSpec>);
    static override strict = command.passThrough === undefined;
    static definition: CommandDefinition = command;

    async run(): Promise<void> {
      const parsed = await parseCommandLine(command, [...this.argv], (argv) => this.parse(undefined, argv));
      process.exitCode = await runDefinition(command, parsed, { out: this.out, env: process.env, stdin: () => process.stdin, host: { oclif: this.config }, interrupts: true });
    }
  };
}

type Parse = (argv: string[]) => Promise<{ flags: Record<string, unknown>; args: Record<string, unknown>; argv: unknown[] }>;

/** The command line through oclif's parser (`parse`), with what follows `--` kept from it for passThrough commands. */
export async function parseCommandLine(command: CommandDefinition, argv: string[], parse: Parse): Promise<ParsedInput> {
  if (!command.passThrough) {
    const { flags, args } = await parse(argv);
    return { flags, args };
  }
  const dashes = argv.indexOf('--');
  const { missing } = command.passThrough;
  const { flags, args, argv: stray } = await parse(dashes === -1 ? argv : argv.slice(0, dashes)).catch((err) => {
    throw dashes === -1 ? missing() : err;
  });
  if (stray.length > 0) throw missing();
  return { flags, args, rest: dashes === -1 ? [] : argv.slice(dashes + 1) };
}

/** Global flags, wiring and the parse-error exit of every command. */
abstract class MxsCommand extends Command {
  static override enableJsonFlag = true;
  static override baseFlags = oclifFlags(Object.fromEntries(Object.entries(GLOBAL_FLAGS).filter(([name]) => name !== 'json')));

  protected out = new Output(process.stdout, process.stderr);

  override async init(): Promise<void> {
    await super.init();
    this.out = await Output.create(process.stdout, process.stderr, process.env);
  }

  /** runDefinition reports every error of a run; what reaches here failed before it (the command line). */
  override async catch(err: Error): Promise<void> {
    // The command line was read and refused: oclif would otherwise warn (under NODE_ENV=development or
    // test) that the command "did not parse its arguments", a third line after the error and its hint.
    this.parsed = true;
    const { definition } = this.constructor as unknown as { definition?: CommandDefinition };
    const e = isParseError(err) ? parseError(err, this.argv, definition) : err;
    process.exitCode = reportError(e, this.out, { json: this.jsonEnabled(), verbose: this.argv.includes('--verbose'), hints: { defaultProfile: null } });
  }
}

export function oclifFlags(specs: Record<string, FlagSpec>): Interfaces.FlagInput {
  return Object.fromEntries(Object.entries(specs).map(([name, spec]) => [name, oclifFlag(spec)]));
}

function oclifFlag(spec: FlagSpec) {
  const common = {
    ...(spec.summary !== undefined && { summary: spec.summary }),
    ...(spec.char !== undefined && { char: spec.char as 'p' }),
    ...(spec.env !== undefined && { env: spec.env }),
    ...(spec.exclusive !== undefined && { exclusive: [...spec.exclusive] }),
    ...(spec.helpGroup !== undefined && { helpGroup: spec.helpGroup }),
    ...(spec.helpValue !== undefined && { helpValue: spec.helpValue }),
  };
  if (spec.type === 'boolean') return Flags.boolean({ ...common, ...(spec.allowNo && { allowNo: true }), ...(typeof spec.default === 'boolean' && { default: spec.default }) });
  // The declaration decides multiple/default at run time, which oclif's overloads cannot see.
  const value: Record<string, unknown> = {
    ...common,
    ...(spec.multiple && { multiple: true as const }),
    ...(typeof spec.default === 'string' && { default: spec.default }),
  };
  if (spec.options) return Flags.option({ ...value, options: spec.options } as never)();
  return Flags.string(value as never);
}

/** ignoreStdin on every arg: oclif would read a missing argument from standard input, where mxs's stdin is a password or a body. */
export function oclifArgs(specs: Record<string, ArgSpec>): Interfaces.ArgInput {
  return Object.fromEntries(
    Object.entries(specs).map(([name, spec]) => [
      name,
      Args.string({
        description: spec.description,
        ignoreStdin: true,
        ...(spec.required && { required: true }),
        ...(spec.multiple && { multiple: true }),
        ...(spec.options && { options: [...spec.options] }),
      }),
    ]),
  );
}
