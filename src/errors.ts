// The one error type of mxs. Every failure that reaches the user is an MxsError:
// a stable `code` (a Matrix errcode when the server sent one), a one-line message,
// a hint naming the next step, and the contract's exit code.

export const Exit = {
  ok: 0,
  bug: 1,
  usage: 2,
  network: 3,
  auth: 4,
  expired: 5,
  storage: 6,
  http: 7,
  cancelled: 130,
} as const;
export type ExitCode = (typeof Exit)[keyof typeof Exit];

/**
 * What kind of failure an error is. Protocol decoders (Matrix, OAuth) say only this and the server's
 * fields; the exit code follows from the kind here, and the "what to run next" hint, when the error
 * site did not give a specific one, is chosen at report time (src/cli/report-error.ts), where the
 * invocation is known.
 */
export type ErrorKind = 'bug' | 'usage' | 'network' | 'auth' | 'storage' | 'http' | 'cancelled';

const EXIT_FOR_KIND: Record<ErrorKind, ExitCode> = {
  bug: Exit.bug,
  usage: Exit.usage,
  network: Exit.network,
  auth: Exit.auth,
  storage: Exit.storage,
  http: Exit.http,
  cancelled: Exit.cancelled,
};

const KIND_FOR_EXIT: Partial<Record<ExitCode, ErrorKind>> = Object.fromEntries(
  Object.entries(EXIT_FOR_KIND).map(([k, v]) => [v, k as ErrorKind]),
);

export interface MxsErrorInit {
  code: string;
  message: string;
  hint?: Hint;
  /** Give either the kind or the exit code; the other follows. */
  kind?: ErrorKind;
  exitCode?: ExitCode;
  status?: number;
  /**
   * What went wrong in the words of whoever said it, without the sentence around it, one line,
   * unescaped: the server's (Matrix `error`, OAuth `error_description`), the OS's ("permission denied
   * on /x (EACCES)"), the keychain's. For a caller that says it in its own sentence. Default: none.
   */
  detail?: string;
  /** Whether sending the same request again may get past it (network trouble, 5xx, 429). Default false. */
  retryable?: boolean;
  /** 429: how long the server asked to wait. */
  retryAfterMs?: number;
  cause?: unknown;
}

export class MxsError extends Error {
  readonly code: string;
  readonly hint: Hint | undefined;
  readonly kind: ErrorKind;
  readonly exitCode: ExitCode;
  /** HTTP status when the error came from a server answer. */
  readonly status: number | undefined;
  readonly detail: string | undefined;
  readonly retryable: boolean;
  readonly retryAfterMs: number | undefined;

  constructor(init: MxsErrorInit) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = 'MxsError';
    this.code = init.code;
    this.hint = init.hint;
    this.kind = init.kind ?? (init.exitCode !== undefined ? KIND_FOR_EXIT[init.exitCode] : undefined) ?? 'bug';
    this.exitCode = init.exitCode ?? EXIT_FOR_KIND[this.kind];
    this.status = init.status;
    this.detail = init.detail;
    this.retryable = init.retryable ?? false;
    this.retryAfterMs = init.retryAfterMs;
  }

  /** The same error with a clearer message or hint for the situation it arose in. */
  with(changes: Partial<Pick<MxsErrorInit, 'message' | 'hint' | 'exitCode' | 'code' | 'kind' | 'detail' | 'retryable'>>): MxsError {
    const exitCode = changes.exitCode ?? (changes.kind ? EXIT_FOR_KIND[changes.kind] : this.exitCode);
    return new MxsError({
      code: changes.code ?? this.code,
      message: changes.message ?? this.message,
      hint: changes.hint ?? this.hint,
      kind: changes.kind ?? (changes.exitCode !== undefined ? KIND_FOR_EXIT[changes.exitCode] : this.kind),
      exitCode,
      status: this.status,
      detail: changes.detail ?? this.detail,
      retryable: changes.retryable ?? this.retryable,
      retryAfterMs: this.retryAfterMs,
      cause: this.cause,
    });
  }

  toJSON(): { code: string; message: string; exitCode: number } {
    return { code: this.code, message: this.message, exitCode: this.exitCode };
  }
}

export function usageError(message: string, hint: Hint = 'Run: mxs --help'): MxsError {
  return new MxsError({ code: 'usage', message, hint, exitCode: Exit.usage });
}

export function storageError(message: string, hint: Hint, cause?: unknown): MxsError {
  return new MxsError({ code: 'storage', message, hint, exitCode: Exit.storage, cause });
}

export function badResponse(message: string, cause?: unknown): MxsError {
  return new MxsError({
    code: 'bad_response',
    message,
    hint: 'Retry later; if it persists, check the homeserver URL and the server itself (--verbose shows the exchange).',
    exitCode: Exit.network,
    cause,
  });
}

/**
 * A command a hint tells the user to run: `mxs NEXT [SERVER] [FLAGS]`. Its profile is named with
 * --profile only when it is not the default one, and that is known only where the invocation is
 * (src/ui/hints.ts renders it); without a profile, the hint is about the invocation's own.
 */
export interface NextStep {
  next: 'login' | 'refresh' | 'token' | 'devices' | 'logout' | 'exec' | 'proxy';
  profile?: string | undefined;
  /** login: the server (SERVER when unknown). */
  server?: string | undefined;
  /** Flags after the command (`--local`). */
  flags?: string;
  /** What stands after the profile flag (exec's `-- …`). */
  rest?: string;
}

/**
 * What to do next, as data: plain advice, one command to run (rendered "Run: mxs …"), or advice with
 * commands inside it. No hint is ever edited as a string: its parts are.
 */
export type Hint = string | NextStep | readonly (string | NextStep)[];

export function loginHint(profile?: string, server?: string): NextStep {
  return { next: 'login', profile, server };
}

/** Ctrl-C or end of input at a prompt: one line, exit 130, no hint (the user knows what they did). */
export function cancelled(what = 'Cancelled.'): MxsError {
  return new MxsError({ code: 'cancelled', message: what, kind: 'cancelled' });
}

export function notLoggedIn(profile: string): MxsError {
  return new MxsError({
    code: 'not_logged_in',
    message: `Not logged in (profile "${profile}").`,
    hint: loginHint(profile),
    exitCode: Exit.auth,
  });
}

/** Anything thrown that is not an MxsError is a bug: say so, keep the detail for --verbose. */
export function asMxsError(err: unknown): MxsError {
  if (err instanceof MxsError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new MxsError({
    code: 'unexpected',
    message: `Unexpected error: ${message}`,
    hint: 'This is a bug in mxs. Run again with --verbose and report the output.',
    exitCode: Exit.bug,
    cause: err,
  });
}
