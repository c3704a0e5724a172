import { asMxsError, loginHint, type ErrorKind, type Hint, type MxsError } from '../errors.js';
import { renderHint, type HintView } from '../ui/hints.js';
import type { Output } from '../ui/output.js';

export interface ReportOptions {
  json: boolean;
  verbose: boolean;
  /** The invocation as far as it was resolved: a failure to resolve it knows no profile yet. */
  hints: HintView;
}

/** The single error exit: one line of what happened, one of what to do, the contract's exit code. */
export function reportError(err: unknown, out: Output, opts: ReportOptions): number {
  const e = asMxsError(err);
  out.error(e, opts.verbose, renderHint(e.hint ?? defaultHint(e.kind) ?? '', opts.hints));
  if (opts.json) out.json({ error: e.toJSON() });
  return e.exitCode;
}

/** The error line and hint of a failure whose result is already on stdout (`api --json`): nothing more on stdout. */
export function reportAfterResult(e: MxsError, out: Output, hints: HintView): number {
  out.error(e, false, renderHint(e.hint ?? defaultHint(e.kind) ?? '', hints));
  return e.exitCode;
}

/**
 * "What to do next" for errors whose site had nothing more specific to say (most of them are
 * decoded server answers: the protocol layers say what happened, this says what to run).
 */
function defaultHint(kind: ErrorKind): Hint | undefined {
  switch (kind) {
    case 'auth':
      return loginHint();
    case 'network':
      return 'Retry later; --verbose shows the exchange.';
    case 'usage':
      return 'See: mxs --help, or mxs COMMAND --help';
    case 'storage':
      return 'Check the config directory (MXS_CONFIG_DIR) and the keychain.';
    case 'http':
      return 'The response body is on stdout; --verbose shows the exchange.';
    case 'bug':
      return 'This is a bug in mxs. Run again with --verbose and report the output.';
    case 'cancelled':
      return undefined;
  }
}
