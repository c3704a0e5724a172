import type { Hook } from '@oclif/core';
import { closest, distance } from 'fastest-levenshtein';
import { usageError } from '../errors.js';
import { printable } from '../printable.js';
import { renderHint } from '../ui/hints.js';

/**
 * An unknown command is a usage error like any other: one line, one hint, exit 2, the error object
 * on stdout under --json; a typo gets the nearest command.
 */
const hook: Hook<'command_not_found'> = async function (opts) {
  const words = opts.id.split(':');
  const known = opts.config.commands.filter((c) => !c.hidden).map((c) => c.id).sort();
  const name = printable(words[0]!);
  let err;
  if (known.includes(words[0]!)) {
    err = usageError(`"${name}" takes no argument "${printable(words.slice(1).join(' '))}".`, `See: mxs ${name} --help`);
  } else {
    const nearest = closest(words[0]!, known);
    const near = distance(words[0]!, nearest) <= Math.max(2, Math.floor(nearest.length / 3));
    err = usageError(`Unknown command "${printable(words.join(' '))}".`, near ? `Did you mean: mxs ${nearest}? (mxs --help lists ${known.join(', ')})` : `Commands: ${known.join(', ')}. See: mxs --help`);
  }
  process.stderr.write(`Error: ${err.message}\n${renderHint(err.hint ?? '', { defaultProfile: null })}\n`);
  if ((opts.argv ?? []).includes('--json')) process.stdout.write(JSON.stringify({ error: err.toJSON() }, null, 2) + '\n');
  process.exit(err.exitCode);
};

export default hook;
