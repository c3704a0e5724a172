import { asMxsError, getImplicitProfile, loginHint, MxsError, usageError, type ErrorKind } from '../errors.js';
import type { Output } from '../ui/output.js';

/** The single error exit: one line of what happened, one of what to do, the contract's exit code. */
export function reportError(err: unknown, out: Output, opts: { json: boolean; verbose: boolean; argv: string[]; env?: NodeJS.ProcessEnv }): number {
  let e = toMxsError(err, opts.argv);
  if (e.hint === undefined) e = e.with({ hint: defaultHint(e.kind, profileOf(opts.argv, opts.env ?? process.env)) });
  out.error(e, opts.verbose);
  if (opts.json) out.json({ error: e.toJSON() });
  return e.exitCode;
}

/**
 * "What to do next" for errors whose site had nothing more specific to say (most of them are
 * decoded server answers: the protocol layers say what happened, this says what to run).
 */
function defaultHint(kind: ErrorKind, profile: string): string | undefined {
  switch (kind) {
    case 'auth':
      return loginHint(profile);
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

/** The profile a hint should name: --profile/-p as given, else MXS_PROFILE, else the default (`mxs switch`). */
function profileOf(argv: string[], env: NodeJS.ProcessEnv): string {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if ((a === '-p' || a === '--profile') && argv[i + 1]) return argv[i + 1]!;
    const m = /^(?:--profile=|-p=?)(.+)$/.exec(a);
    if (m) return m[1]!;
  }
  return env.MXS_PROFILE || (getImplicitProfile() ?? 'default');
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
  // oclif puts the substance after a generic first line ("The following error occurred:").
  const lines = err.message
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !/^The following errors? occurred:?$/i.test(l) && !/^See more help with/i.test(l));
  const clash = lines.map((l) => /^(--[\w-]+)(?:=\S*)? cannot also be provided when using (--[\w-]+)/.exec(l)).find(Boolean);
  if (clash) return usageError(`${clash[2]} and ${clash[1]} cannot be used together.`, 'Drop one of them; see: mxs COMMAND --help');
  return usageError(lines[0] ?? 'Invalid arguments.', 'See: mxs --help, or mxs COMMAND --help');
}
