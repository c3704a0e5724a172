import type { Hook, Interfaces } from '@oclif/core';
import { closest, distance } from 'fastest-levenshtein';
import { usageError, type MxsError } from '../errors.js';
import { printable } from '../printable.js';
import { renderHint } from '../ui/hints.js';

/**
 * An unknown command is a usage error like any other: one line, one hint, exit 2, the error object
 * on stdout under --json; a typo gets the nearest command. Commands are named as users type them
 * (`devices delete`), never in oclif's colon form.
 */
const hook: Hook<'command_not_found'> = async function (opts) {
  reportUnknownCommand(opts.id, opts.argv ?? [], opts.config);
};

/** Prints the unknown-command error (also for `mxs help foo`) and exits 2. */
export function reportUnknownCommand(id: string, argv: string[], config: Interfaces.Config): never {
  const known = config.commands.filter((c) => !c.hidden).map((c) => c.id.replace(/:/g, ' ')).sort();
  const err = unknownCommand(id.replace(/:/g, ' '), known);
  process.stderr.write(`Error: ${err.message}\n${renderHint(err.hint ?? '', { defaultProfile: null })}\n`);
  if (argv.includes('--json')) process.stdout.write(JSON.stringify({ error: err.toJSON() }, null, 2) + '\n');
  process.exit(err.exitCode);
}

/** `typed` (words separated by spaces) is no command among `known` (the same form). */
export function unknownCommand(typed: string, known: string[]): MxsError {
  const words = typed.split(' ');
  const shown = printable(typed);
  // A subcommand mistyped (`devices delet`): the nearest of that topic's commands.
  const siblings = known.filter((k) => k.startsWith(`${words[0]} `));
  const nearSibling = words.length > 1 && siblings.length > 0 ? near(typed, siblings) : undefined;
  if (nearSibling) return usageError(`Unknown command "${shown}".`, `Did you mean: mxs ${nearSibling}?`);
  if (known.includes(words[0]!)) {
    return usageError(`"${printable(words[0]!)}" takes no argument "${printable(words.slice(1).join(' '))}".`, `See: mxs ${printable(words[0]!)} --help`);
  }
  const nearest = near(typed, known) ?? near(words[0]!, known);
  return usageError(`Unknown command "${shown}".`, nearest ? `Did you mean: mxs ${nearest}? (mxs --help lists ${known.join(', ')})` : `Commands: ${known.join(', ')}. See: mxs --help`);
}

function near(typed: string, candidates: string[]): string | undefined {
  const nearest = closest(typed, candidates);
  return distance(typed, nearest) <= Math.max(2, Math.floor(nearest.length / 3)) ? nearest : undefined;
}

export default hook;
