import type { CommandContext } from './context.js';
import type { Output } from '../ui/output.js';

// The commands that run in shell loops and prompts (`status`, `token`) have one shape, as gh's do:
// metadata plus a run function that returns its result. oclif serves them through
// src/cli/oclif-command.ts, the start-up fast path (src/cli/fast-path.ts) calls the same run
// function without loading oclif; both print the result and the errors the same way.

/** A flag, as both front ends read it: oclif builds its parser and help from it, the fast path its own parser. */
export interface FlagSpec {
  type: 'boolean' | 'option';
  summary?: string;
  char?: string;
  env?: string;
  default?: string;
  /** The only values accepted (`--storage auto|keychain|file`). */
  options?: readonly string[];
  /** Flags this one cannot be used with. */
  exclusive?: readonly string[];
  helpGroup?: string;
}

export interface Outcome<R> {
  result: R;
  /** The contract's exit code for a run that did not throw (`status`: 4 and 5 are results, not errors). */
  exitCode: number;
}

export interface HotCommand<F, R> {
  id: string;
  summary: string;
  description: string;
  examples: string[];
  /** The command's own flags; the global ones (GLOBAL_FLAGS) come with every command. */
  flags: { [K in keyof F]: FlagSpec };
  /**
   * 'in-process': this command may run keytar in its own process where the process can always end on
   * time (see src/store/keytar-direct.ts); others keep the helper process.
   */
  keychain?: 'in-process';
  /** Prints the text output (not under --json) and returns the result. */
  run(ctx: CommandContext, flags: F, json: boolean): Promise<Outcome<R>>;
  /** Prints the result under --json; without it, Output.json (redacted) does. */
  printJson?(out: Output, result: R): void;
}

/**
 * The global flags as the fast path parses them. oclif's own definitions are in src/base-command.ts
 * (and `--json` comes from enableJsonFlag); test/integration/front-ends.test.ts checks that the two agree.
 */
export const GLOBAL_FLAGS: Record<string, FlagSpec> = {
  json: { type: 'boolean' },
  profile: { type: 'option', char: 'p', env: 'MXS_PROFILE' },
  verbose: { type: 'boolean' },
  storage: { type: 'option', env: 'MXS_STORAGE', default: 'auto', options: ['auto', 'keychain', 'file'] },
  timeout: { type: 'option', env: 'MXS_TIMEOUT', default: '30s' },
};

/** How a front end prints a command's result under --json. */
export function printJsonResult<R>(command: HotCommand<unknown, R>, out: Output, result: R): void {
  if (command.printJson) command.printJson(out, result);
  else out.json(result);
}
