import type { Config } from '@oclif/core';
import type { MxsError } from '../errors.js';
import type { CommandContext } from './context.js';

// Every command has one shape, as gh's do: its metadata, flags and args declared once, and a run
// function that returns its result. The definitions are in src/cli/commands/; oclif serves them
// through src/cli/oclif-command.ts (src/commands/*.ts are one-line adapters for oclif's discovery),
// the start-up fast path (src/cli/fast-path.ts) serves the hot ones without loading oclif, and tests
// run them in-process (test/support/run-command.ts). All three go through src/cli/run.ts.

/** A flag, as every front end reads it: oclif builds its parser and help from it, the fast path its own parser. */
export interface FlagSpec {
  type: 'boolean' | 'option';
  summary?: string;
  char?: string;
  env?: string;
  default?: string | boolean;
  /** The only values accepted (`--storage auto|keychain|file`). */
  options?: readonly string[];
  /** Flags this one cannot be used with. */
  exclusive?: readonly string[];
  /** May be given more than once (`-H a -H b`): the value is a list. */
  multiple?: boolean;
  /** A boolean with a --no- form (`--no-refresh`). */
  allowNo?: boolean;
  /** The value's name in help (`--older-than DURATION`). */
  helpValue?: string;
  helpGroup?: string;
}

/**
 * A positional argument. No mxs argument ever comes from standard input (it carries passwords and
 * request bodies): every front end leaves stdin alone when an argument is missing.
 */
export interface ArgSpec {
  description: string;
  /** Its name in messages (`Missing PATH`); default: the key in capitals. */
  name?: string;
  /** Its part of the usage line in messages (`[METHOD] PATH`); default: NAME, or [NAME] when optional. */
  usage?: string;
  required?: boolean;
  /** Takes the rest of the positionals (only the last arg). */
  multiple?: boolean;
  options?: readonly string[];
}

export interface CommandInput<F, A> {
  flags: F;
  args: A;
  json: boolean;
  /** What followed `--` (only for commands that declare passThrough). */
  rest: string[];
}

export interface Outcome<R> {
  result: R;
  /** The contract's exit code for a run that did not throw (`status`: 4 and 5 are results, not errors). */
  exitCode: number;
  /**
   * A failure to report after the result, when the result already says it on stdout (`api --json`
   * with a 4xx: the {status, headers, body} shape, then the error line on stderr and its exit code).
   */
  error?: MxsError;
}

/**
 * How the result is printed under --json: 'redacted' (the default: Output.json, secrets hidden),
 * 'unredacted' (the result is the secret or the server's own answer: `token`, `api`), 'streamed' (the
 * command wrote its own stdout while it ran: `proxy`'s start line). An undefined result prints nothing.
 */
export type JsonPrinting = 'redacted' | 'unredacted' | 'streamed';

export interface CommandDefinition<F = any, A = any, R = any> {
  id: string;
  summary: string;
  description: string;
  examples: string[];
  usage?: string;
  /** The command's own flags; the global ones (GLOBAL_FLAGS) come with every command. */
  flags: { [K in keyof F]: FlagSpec };
  /** In order. */
  args?: { [K in keyof A]: ArgSpec };
  /**
   * Everything after `--` belongs to another program (`exec`): never parsed, given as input.rest.
   * Without `--`, or with stray words before it, `missing()` is thrown instead of a parse error,
   * which would echo what stood there (it may be the program's secret).
   */
  passThrough?: { missing(): MxsError };
  /** The arg naming the profile the command is about (`switch PROFILE`): validated like --profile, the default never read. */
  profileArg?: keyof A & string;
  /**
   * 'in-process': this command may run keytar in its own process where the process can always end on
   * time (see src/store/keytar-direct.ts); others keep the helper process.
   */
  keychain?: 'in-process';
  /**
   * Ctrl-C: by default the run is cancelled (exit 130, `cancelled` as the one line; every network
   * exchange and wait ends at once). 'own': the command handles SIGINT itself (exec passes it on,
   * the proxy drains, status --watch stops its countdown).
   */
  sigint?: 'own';
  /** The line a Ctrl-C ends the run with (default "Cancelled."): what was left undone. */
  cancelled?: string;
  /** The behaviour: stderr chatter and streams as it goes, the result returned. */
  run(ctx: CommandContext, input: CommandInput<F, A>): Promise<Outcome<R>>;
  /** What a person reads on stdout (not under --json), after run. */
  text?(ctx: CommandContext, result: R): void;
  /** The --json document made from the result (default: the result itself), when a person's text needs more than it. */
  jsonShape?(result: R): unknown;
  json?: JsonPrinting;
}

/** What the oclif front end hands a command beyond the parsed argv (autocomplete writes oclif's scripts). */
export interface Host {
  oclif?: Config;
}

/**
 * The global flags, declared once: the fast path parses them, oclif's baseFlags are built from them
 * (src/cli/oclif-command.ts; `--json` is oclif's own enableJsonFlag, declared here for the fast path).
 */
export const GLOBAL_FLAGS: Record<'json' | 'profile' | 'verbose' | 'storage' | 'timeout', FlagSpec> = {
  json: { type: 'boolean' },
  // No fixed default: without --profile or MXS_PROFILE the invocation uses the profile chosen with `mxs switch`, else `default`.
  profile: { type: 'option', char: 'p', env: 'MXS_PROFILE', helpGroup: 'GLOBAL', summary: 'Named session to use (default: the one chosen with mxs switch, else default).' },
  verbose: { type: 'boolean', helpGroup: 'GLOBAL', summary: 'Trace HTTP exchanges on stderr (tokens redacted) and show error details.' },
  storage: {
    type: 'option',
    env: 'MXS_STORAGE',
    default: 'auto',
    options: ['auto', 'keychain', 'file'],
    helpGroup: 'GLOBAL',
    summary: 'Where secrets live: the OS keychain, a 0600 file, or auto (keychain, else file).',
  },
  timeout: { type: 'option', env: 'MXS_TIMEOUT', default: '30s', helpGroup: 'GLOBAL', summary: 'Longest one HTTP exchange may take, e.g. 10s or 1m.' },
};

export interface GlobalFlags {
  json?: boolean;
  /** As given with --profile or MXS_PROFILE; undefined when neither names one. */
  profile?: string | undefined;
  verbose: boolean;
  storage: string;
  timeout: string;
}
