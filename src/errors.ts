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
} as const;
export type ExitCode = (typeof Exit)[keyof typeof Exit];

export interface MxsErrorInit {
  code: string;
  message: string;
  hint?: string;
  exitCode: ExitCode;
  status?: number;
  softLogout?: boolean;
  retryAfterMs?: number;
  cause?: unknown;
}

export class MxsError extends Error {
  readonly code: string;
  readonly hint: string | undefined;
  readonly exitCode: ExitCode;
  /** HTTP status when the error came from a server answer. */
  readonly status: number | undefined;
  readonly softLogout: boolean;
  readonly retryAfterMs: number | undefined;

  constructor(init: MxsErrorInit) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = 'MxsError';
    this.code = init.code;
    this.hint = init.hint;
    this.exitCode = init.exitCode;
    this.status = init.status;
    this.softLogout = init.softLogout ?? false;
    this.retryAfterMs = init.retryAfterMs;
  }

  /** The same error with a clearer message or hint for the situation it arose in. */
  with(changes: Partial<Pick<MxsErrorInit, 'message' | 'hint' | 'exitCode' | 'code'>>): MxsError {
    return new MxsError({
      code: changes.code ?? this.code,
      message: changes.message ?? this.message,
      hint: changes.hint ?? this.hint,
      exitCode: changes.exitCode ?? this.exitCode,
      status: this.status,
      softLogout: this.softLogout,
      retryAfterMs: this.retryAfterMs,
      cause: this.cause,
    });
  }

  toJSON(): { code: string; message: string; exitCode: number } {
    return { code: this.code, message: this.message, exitCode: this.exitCode };
  }
}

export function usageError(message: string, hint = 'Run: mxs --help'): MxsError {
  return new MxsError({ code: 'usage', message, hint, exitCode: Exit.usage });
}

export function storageError(message: string, hint: string, cause?: unknown): MxsError {
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

export function loginHint(profile: string, server?: string): string {
  const target = server ?? 'SERVER';
  return profile === 'default' ? `Run: mxs login ${target}` : `Run: mxs login ${target} --profile ${profile}`;
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
