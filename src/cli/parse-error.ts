import { closest, distance } from 'fastest-levenshtein';
import { MxsError, usageError } from '../errors.js';
import { printable } from '../printable.js';
import { GLOBAL_FLAGS, type ArgSpec } from './command.js';

// oclif's parser errors as the contract's usage errors. Only oclif's front end (and the tests' run of
// it) parses with oclif: the start-up fast path never loads this file (report-error.ts is its error exit).

/** Whether oclif threw this while parsing the command line. */
export function isParseError(err: unknown): boolean {
  const e = err as Error & { oclif?: unknown };
  return !(err instanceof MxsError) && Boolean(e) && (e.oclif !== undefined || /Flag|Arg/.test(e.constructor?.name ?? ''));
}

/** The command a parse error is about, as far as its message needs it. */
export interface ParsedCommand {
  id: string;
  flags: Record<string, unknown>;
  args?: Record<string, ArgSpec>;
}

/** oclif's parser errors become usage errors; a secret-looking flag never gets its value echoed. */
export function parseError(err: Error, argv: string[], command?: ParsedCommand): MxsError {
  if (argv.some((a) => /^--?(password|pass|pw|P|token|access-token)(=|$)/i.test(a))) {
    return usageError(
      'Secrets are never accepted as flag values (they would show in the process list and shell history).',
      'Use --password-stdin or --token-stdin, or let mxs prompt for the password.',
    );
  }
  // oclif puts the substance after a generic first line ("The following error occurred:").
  const lines = err.message
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !/^The following errors? occurred:?$/i.test(l) && !/^See more help with/i.test(l));
  if (command) {
    const typed = commandWords(command.id);
    const missing = (err as Error & { args?: { name?: string }[] }).args;
    if (/^Missing \d+ required args?/.test(lines[0] ?? '') && Array.isArray(missing) && missing.length > 0) {
      const names = missing.map((a) => argName(a.name ?? '', command.args?.[a.name ?? '']));
      return usageError(`Missing ${names.join(' and ')}. Usage: ${usageLine(command)}`, `See: mxs ${typed} --help`);
    }
    const unknown = (err as Error & { flags?: string[] }).flags;
    if (/^Nonexistent flags?:/.test(lines[0] ?? '') && Array.isArray(unknown) && unknown.length > 0) {
      const flag = printable(unknown[0]!);
      const nearest = nearestFlag(unknown[0]!, command);
      return usageError(`Unknown flag ${flag}.`, `${nearest ? `Did you mean ${nearest}? ` : ''}See: mxs ${typed} --help`);
    }
  }
  const clash = lines.map((l) => /^(--[\w-]+)(?:=\S*)? cannot also be provided when using (--[\w-]+)/.exec(l)).find(Boolean);
  if (clash) return usageError(`${clash[2]} and ${clash[1]} cannot be used together.`, 'Drop one of them; see: mxs COMMAND --help');
  return usageError(lines[0] ?? 'Invalid arguments.', 'See: mxs --help, or mxs COMMAND --help');
}

/** A command id as users type it: `devices delete`, not oclif's `devices:delete`. */
export function commandWords(id: string): string {
  return id.replace(/:/g, ' ');
}

function argName(key: string, spec: ArgSpec | undefined): string {
  return spec?.name ?? key.toUpperCase();
}

/** `mxs devices rename ID NAME`: the command and its positional arguments, optional ones in brackets. */
export function usageLine(command: ParsedCommand): string {
  const args = Object.entries(command.args ?? {}).map(([key, spec]) => {
    if (spec.usage !== undefined) return spec.usage;
    const name = `${argName(key, spec)}${spec.multiple ? '...' : ''}`;
    return spec.required ? name : `[${name}]`;
  });
  return ['mxs', commandWords(command.id), ...args].filter((w) => w !== '').join(' ');
}

/** The command's (or a global) flag nearest to a mistyped one, when it is near enough to be the one meant. */
function nearestFlag(typed: string, command: ParsedCommand): string | undefined {
  const name = typed.replace(/^-+/, '').replace(/=.*$/, '');
  if (name === '') return undefined;
  const known = [...new Set([...Object.keys(command.flags), ...Object.keys(GLOBAL_FLAGS), 'help'])];
  const nearest = closest(name, known);
  return distance(name, nearest) <= Math.max(2, Math.floor(nearest.length / 3)) ? `--${nearest}` : undefined;
}
