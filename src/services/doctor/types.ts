import { formatDuration } from '../../duration.js';
import { MxsError, type ErrorKind, type Hint } from '../../errors.js';
import type { SessionRecord, SessionSecret } from '../../model.js';
import type { StatePaths } from '../../store/paths.js';
import type { Deps } from '../deps.js';

// The vocabulary of `mxs doctor`: what a check finds, as data. Every check is a function of the
// facts and dependencies it is given; the order, the concurrency and the skipping live in index.ts.

export const CHECK_IDS = ['config', 'storage', 'lock', 'server', 'discovery', 'auth', 'clock', 'token', 'refresh', 'device'] as const;
export type CheckId = (typeof CHECK_IDS)[number];
export type CheckStatus = 'ok' | 'warning' | 'failure' | 'skipped';

/** The kinds a failed check can have, and so the exit codes doctor can end with (3, 4, 6). */
export type FailureKind = Extract<ErrorKind, 'network' | 'auth' | 'storage'>;

export interface Finding {
  id: CheckId;
  status: CheckStatus;
  /** What the check found, one line, in mxs's words (server text already escaped). */
  detail: string;
  /** What to do, under a warning or failure; null when there is nothing to do. */
  fix: Hint | null;
  /** A failure's kind: the exit code when it is the first failure. */
  kind?: FailureKind;
}

/** What doctor needs beyond a command's usual dependencies: where the state lives. */
export interface DoctorDeps extends Deps {
  paths: StatePaths;
  /** The config directory (MXS_CONFIG_DIR or the platform's). */
  root: string;
}

/** The facts the later checks are given by the earlier ones. */
export interface SessionFacts {
  record: SessionRecord;
  secret: SessionSecret | null;
}

export const ok = (id: CheckId, detail: string): Finding => ({ id, status: 'ok', detail, fix: null });
export const warning = (id: CheckId, detail: string, fix: Hint): Finding => ({ id, status: 'warning', detail, fix });
export const failure = (id: CheckId, kind: FailureKind, detail: string, fix: Hint): Finding => ({ id, status: 'failure', detail, fix, kind });
export const skipped = (id: CheckId, why: string): Finding => ({ id, status: 'skipped', detail: why, fix: null });

/** An error met by a check, as its failure: the error's own message and hint, its kind kept where doctor knows it. */
export function failureOf(id: CheckId, err: unknown, fallbackKind: FailureKind, fallbackFix: Hint): Finding {
  const e = err instanceof MxsError ? err : null;
  const kind: FailureKind = e && (e.kind === 'network' || e.kind === 'auth' || e.kind === 'storage') ? e.kind : fallbackKind;
  const message = e ? e.message : `Unexpected error: ${err instanceof Error ? err.message : String(err)}`;
  return failure(id, kind, message, e?.hint ?? fallbackFix);
}

/** Runs a check bounded in time: one that does not finish within `ms` is a failure of `kind`, never a hang. */
export async function bounded(id: CheckId, ms: number, kind: FailureKind, fix: Hint, check: () => Promise<Finding>): Promise<Finding> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<Finding>((resolve) => {
    timer = setTimeout(() => resolve(failure(id, kind, `Did not finish within ${formatMs(ms)}.`, fix)), ms);
    timer.unref();
  });
  try {
    return await Promise.race([check(), late]);
  } finally {
    clearTimeout(timer);
  }
}

/** A duration as a person reads it (`4m 12s`, `850ms`). */
export const formatMs = formatDuration;
