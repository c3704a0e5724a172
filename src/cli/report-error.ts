import { asMxsError, Exit, MxsError, usageError } from '../errors.js';
import type { Output } from '../ui/output.js';

/** The single error exit: one line of what happened, one of what to do, the contract's exit code. */
export function reportError(err: unknown, out: Output, opts: { json: boolean; verbose: boolean; argv: string[] }): number {
  const e = toMxsError(err, opts.argv);
  out.error(e, opts.verbose);
  if (opts.json) out.json({ error: e.toJSON() });
  return e.exitCode;
}

function toMxsError(err: unknown, argv: string[]): MxsError {
  if (err instanceof MxsError) return err;
  const e = err as Error & { oclif?: unknown };
  if (e && (e.oclif !== undefined || /Flag|Arg/.test(e.constructor?.name ?? ''))) return parseError(e, argv);
  return asMxsError(err);
}

/** oclif's parser errors become usage errors; a secret-looking flag never gets its value echoed. */
function parseError(err: Error, argv: string[]): MxsError {
  if (argv.some((a) => /^--?(password|pass|pw|P|token|access-token)(=|$)/i.test(a))) {
    return usageError(
      'Secrets are never accepted as flag values (they would show in the process list and shell history).',
      'Use --password-stdin or --token-stdin, or let mxs prompt for the password.',
    );
  }
  const first = err.message.split('\n')[0]!.trim();
  return new MxsError({ code: 'usage', message: first, hint: 'See: mxs --help, or mxs COMMAND --help', exitCode: Exit.usage, cause: err });
}
