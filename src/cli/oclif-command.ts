import { Flags } from '@oclif/core';
import { MxsCommand } from '../base-command.js';
import { commandContext, type GlobalFlags } from './context.js';
import { printJsonResult, type FlagSpec, type HotCommand } from './hot-command.js';

/**
 * The oclif front end of a hot command (src/cli/hot-command.ts): help, flags and the manifest come
 * from the command's metadata, the behaviour from its run function, the one the fast path calls.
 */
export function oclifCommand<F, R>(command: HotCommand<F, R>): typeof MxsCommand {
  return class extends MxsCommand {
    static override summary = command.summary;
    static override description = command.description;
    static override examples = command.examples;
    static override flags = oclifFlags(command.flags as Record<string, FlagSpec>);

    async run(): Promise<R> {
      const { flags } = await this.parse();
      const ctx = commandContext(flags as unknown as GlobalFlags, this.out, process.env, { keychain: command.keychain });
      const { result, exitCode } = await command.run(ctx, flags as F, this.jsonEnabled());
      this.exitWith(exitCode);
      return result;
    }

    override logJson(json: unknown): void {
      printJsonResult(command as HotCommand<unknown, R>, this.out, json as R);
    }
  };
}

function oclifFlags(specs: Record<string, FlagSpec>) {
  return Object.fromEntries(Object.entries(specs).map(([name, spec]) => [name, oclifFlag(spec)]));
}

function oclifFlag(spec: FlagSpec) {
  const common = {
    ...(spec.summary !== undefined && { summary: spec.summary }),
    ...(spec.char !== undefined && { char: spec.char as 'p' }),
    ...(spec.env !== undefined && { env: spec.env }),
    ...(spec.exclusive !== undefined && { exclusive: [...spec.exclusive] }),
    ...(spec.helpGroup !== undefined && { helpGroup: spec.helpGroup }),
  };
  if (spec.type === 'boolean') return Flags.boolean(common);
  if (spec.options) return Flags.option({ ...common, options: spec.options, ...(spec.default !== undefined && { default: spec.default }) })();
  return Flags.string({ ...common, ...(spec.default !== undefined && { default: spec.default }) });
}
