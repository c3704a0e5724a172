import { mkdtemp, rm } from 'node:fs/promises';
import { constants } from 'node:os';
import { join } from 'node:path';
import { asMxsError, MxsError, storageError } from '../errors.js';
import { formatDuration } from '../duration.js';
import type { SessionRecord, SessionSecret } from '../model.js';
import { writeFileAtomic } from '../store/atomic.js';
import type { Deps } from './deps.js';
import { ensureFresh, refreshWhenBelow, refreshWhenExpired, remainingMs, type LoadedSession } from './session.js';

// `mxs exec -- CMD [ARGS…]`: run a command with a fresh token and the session in its environment;
// with keepFresh, stay beside it and keep its token file current (contract, section `exec`).

export interface ExecRequest {
  profile: string;
  command: string;
  args: string[];
  /** Before the command starts (and, with keepFresh, all along): refresh when less than this is left. */
  minValidMs: number;
  keepFresh: boolean;
  /** Sent to the command after each change of the token file (`--signal`); null: none. */
  reloadSignal: NodeJS.Signals | null;
  /** The environment the command inherits (mxs's own); the session's variables are added to it. */
  baseEnv: NodeJS.ProcessEnv;
  /** Where the private directory holding the token file is created. */
  tokenDirParent: string;
  /** How long a command told to stop (SIGTERM) has before SIGKILL. */
  killGraceMs: number;
}

export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface StartedChild {
  pid: number;
  exited: Promise<ChildExit>;
  /** Sends `signal`; a child that is already gone is not an error. */
  kill(signal: NodeJS.Signals): void;
}

/** The process side of exec, injected: tests replace it with a scripted child. */
export interface ChildLauncher {
  /** Starts the command with inherited stdio; rejects with the OS error (ENOENT, EACCES…) when it cannot. */
  start(command: string, args: string[], env: NodeJS.ProcessEnv): Promise<StartedChild>;
  /** Calls `forward` with every signal mxs receives that the command must get too; returns the unsubscribe. */
  onSignal(forward: (signal: NodeJS.Signals) => void): () => void;
}

export type ExecResult =
  /** The command ran: `exitCode` is its own, or 128+N when signal N ended it. */
  | { outcome: 'exited'; exitCode: number; signal: NodeJS.Signals | null; refreshes: number }
  /** The command could not be started, as a shell says it: 127 not found, 126 found but not runnable. */
  | { outcome: 'not-started'; exitCode: 126 | 127; code: 'command_not_found' | 'command_not_executable'; message: string };

/** How often a keep-fresh run looks at the sessions file for a token another mxs process stored. */
export const STORE_POLL_MS = 2000;
/** Floor between two looks at the session: a server handing out instantly-due tokens is not hammered. */
const MIN_TICK_MS = 500;
const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 30_000;

export function exitCodeOf(exit: ChildExit): number {
  if (exit.code !== null) return exit.code;
  const n = exit.signal ? constants.signals[exit.signal] : undefined;
  return n === undefined ? 1 : 128 + n;
}

/** The session in the command's environment (contract: MATRIX_*, MXS_PROFILE, MXS_EXPIRES_AT, MXS_TOKEN_FILE). */
export function childEnv(base: NodeJS.ProcessEnv, profile: string, record: SessionRecord, secret: SessionSecret, tokenFile: string | null): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    ...base,
    MATRIX_HOMESERVER: record.homeserver,
    MATRIX_USER_ID: record.userId,
    MATRIX_DEVICE_ID: record.deviceId,
    MATRIX_ACCESS_TOKEN: secret.accessToken,
    MXS_PROFILE: profile,
    MXS_EXPIRES_AT: secret.expiresAt ?? '',
  };
  // An outer `mxs exec --keep-fresh` must not leak its file into a run that keeps none.
  if (tokenFile === null) delete env.MXS_TOKEN_FILE;
  else env.MXS_TOKEN_FILE = tokenFile;
  return env;
}

/** Failures before the command starts are mxs's own (contract): the message says the command did not run. */
function notStarted(err: unknown): MxsError {
  const e = asMxsError(err);
  if (e.kind === 'usage') return e;
  return e.with({ message: `${e.message.replace(/\s+$/, '')} The command was not started.` });
}

export async function execService(req: ExecRequest, deps: Deps, launcher: ChildLauncher): Promise<ExecResult> {
  let first: LoadedSession;
  try {
    first = (await ensureFresh(req.profile, deps, refreshWhenBelow(req.minValidMs))).session;
  } catch (err) {
    throw notStarted(err);
  }

  // Signals that arrive from here on are the command's; one that comes before it runs waits for it.
  const pending: NodeJS.Signals[] = [];
  let child: StartedChild | undefined;
  const unsubscribe = launcher.onSignal((signal) => (child ? child.kill(signal) : pending.push(signal)));
  let tokenDir: string | null = null;
  try {
    let tokenFile: string | null = null;
    if (req.keepFresh) {
      tokenDir = await makeTokenDir(req.tokenDirParent).catch((err) => {
        throw notStarted(err);
      });
      tokenFile = join(tokenDir, 'token');
      await writeToken(tokenFile, first.secret.accessToken).catch((err) => {
        throw notStarted(err);
      });
    }
    const env = childEnv(req.baseEnv, req.profile, first.record, first.secret, tokenFile);
    try {
      child = await launcher.start(req.command, req.args, env);
    } catch (err) {
      return cannotStart(req.command, err);
    }
    for (const signal of pending.splice(0)) child.kill(signal);

    if (!tokenFile || first.secret.expiresAt === null) {
      // Nothing to keep fresh (or a token that never expires): wait for the command.
      return { outcome: 'exited', ...exitOf(await child.exited), refreshes: 0 };
    }

    const keeper = new TokenKeeper(req, deps, first, tokenFile, child);
    const running = child;
    const ended: ChildExit | MxsError = await Promise.race<ChildExit | MxsError>([
      running.exited,
      keeper.run().then((death): ChildExit | MxsError | Promise<ChildExit> => death ?? running.exited),
    ]);
    await keeper.stop();
    if (!(ended instanceof MxsError)) return { outcome: 'exited', ...exitOf(ended), refreshes: keeper.refreshes };

    // The session died: the command cannot go on with it. Stop it, then report (exit 4).
    const how = await terminate(child, req.killGraceMs, deps);
    throw ended.with({ message: `${ended.message.replace(/\s+$/, '')} The command was stopped (${how}).` });
  } finally {
    unsubscribe();
    if (tokenDir) await rm(tokenDir, { recursive: true, force: true }).catch(() => {});
  }
}

function exitOf(exit: ChildExit): { exitCode: number; signal: NodeJS.Signals | null } {
  return { exitCode: exitCodeOf(exit), signal: exit.signal };
}

/** ENOENT: 127, anything else that keeps it from running (EACCES, a directory…): 126, as a shell says. */
function cannotStart(command: string, err: unknown): ExecResult {
  const code = (err as NodeJS.ErrnoException)?.code;
  const name = command === '' ? '""' : command;
  if (code === 'ENOENT' || command === '') {
    return { outcome: 'not-started', exitCode: 127, code: 'command_not_found', message: `${name}: command not found` };
  }
  const why = code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'is a directory' : ((err as Error)?.message ?? String(err));
  return { outcome: 'not-started', exitCode: 126, code: 'command_not_executable', message: `${name}: cannot run it: ${why}` };
}

async function makeTokenDir(parent: string): Promise<string> {
  try {
    // mkdtemp creates the directory 0700 with a name nobody could have prepared.
    return await mkdtemp(join(parent, 'mxs-exec-'));
  } catch (err) {
    throw storageError(
      `Cannot create a private directory for the token file in ${parent}: ${(err as Error).message}.`,
      'Point TMPDIR (or XDG_RUNTIME_DIR) at a directory you can write, or run without --keep-fresh.',
      err,
    );
  }
}

async function writeToken(file: string, token: string): Promise<void> {
  try {
    await writeFileAtomic(file, token);
  } catch (err) {
    if (err instanceof MxsError) throw err;
    throw storageError(`Cannot write the token file ${file}: ${(err as Error).message}.`, 'Check the free space of that file system.', err);
  }
}

/** SIGTERM, then SIGKILL once the grace period is over; resolves when the command has ended. */
async function terminate(child: StartedChild, graceMs: number, deps: Deps): Promise<string> {
  child.kill('SIGTERM');
  const timeout = new AbortController();
  const gone = await Promise.race([
    child.exited.then(() => true),
    deps.sleep(graceMs, timeout.signal).then(
      () => false,
      () => true,
    ),
  ]);
  timeout.abort();
  if (gone) return 'SIGTERM';
  deps.notice(`the command ignored SIGTERM for ${formatDuration(graceMs)}: sending SIGKILL.`);
  child.kill('SIGKILL');
  await child.exited;
  return `SIGTERM, then SIGKILL after ${formatDuration(graceMs)}`;
}

/**
 * Keeps the token file current while the command runs: refreshes ahead of expiry through
 * ensureFresh (the rule and the lock of `mxs token`), picks up a token another mxs process stored,
 * rewrites the file atomically and signals the command. Network and storage trouble is retried with
 * backoff; `run` resolves with the reason once the session can no longer be refreshed (an auth
 * error), or with null once stopped.
 */
class TokenKeeper {
  refreshes = 0;
  private stopped = false;
  private readonly abort = new AbortController();
  private readonly rule;
  private current: SessionSecret;
  private refreshable: boolean;
  private published: string;
  private recordStamp: string;
  private failures = 0;
  private retryAt = 0;
  private toldExpired = false;
  private writing: Promise<void> = Promise.resolve();

  constructor(
    private readonly req: ExecRequest,
    private readonly deps: Deps,
    private readonly first: LoadedSession,
    private readonly tokenFile: string,
    private readonly child: StartedChild,
  ) {
    this.rule = refreshWhenBelow(req.minValidMs);
    this.current = first.secret;
    this.refreshable = canRefresh(first);
    this.published = first.secret.accessToken;
    this.recordStamp = stampOf(first.record);
  }

  async run(): Promise<MxsError | null> {
    while (!this.stopped) {
      try {
        await this.deps.sleep(this.nextWaitMs(), this.abort.signal);
      } catch {
        return null;
      }
      if (this.stopped) return null;
      // Every look starts with the sessions file alone (no keychain, no network): it says whether
      // anyone stored other tokens, or another session altogether (which must not be refreshed for us).
      const { changed, other } = await this.lookAtStore();
      if (other) return other;
      const due = this.failures > 0 || this.deps.now() >= (this.dueAt() ?? Infinity);
      if (!due && !changed) continue;
      const death = await this.tick();
      if (death) return death;
    }
    return null;
  }

  /** Ends the loop; an in-flight refresh may finish (it is crash-safe) but no longer touches the file. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.abort.abort();
    await this.writing.catch(() => {});
  }

  /**
   * When to look again: when the refresh rule turns due. A session that cannot be refreshed (no
   * refresh token, or one the server refused before) is looked at when its token expires, so the
   * command keeps working until then.
   */
  private dueAt(): number | null {
    const s = this.current;
    if (s.expiresAt === null) return null;
    const expires = Date.parse(s.expiresAt);
    if (!this.refreshable) return expires;
    const lifetime = expires - Date.parse(s.issuedAt);
    // refreshWhenBelow's threshold, plus a hair: it turns due strictly below it.
    return expires - Math.min(this.req.minValidMs, Math.max(0, lifetime / 2)) + 5;
  }

  private nextWaitMs(): number {
    const now = this.deps.now();
    if (this.failures > 0) return Math.max(MIN_TICK_MS, this.retryAt - now);
    const due = this.dueAt();
    return Math.max(MIN_TICK_MS, Math.min(STORE_POLL_MS, due === null ? STORE_POLL_MS : due - now));
  }

  private async lookAtStore(): Promise<{ changed: boolean; other: MxsError | null }> {
    try {
      const record = await this.deps.sessions.read(this.req.profile);
      if (record === null) return { changed: true, other: null }; // ensureFresh says "not logged in"
      return { changed: stampOf(record) !== this.recordStamp, other: anotherSession(this.first.record, record) };
    } catch {
      return { changed: true, other: null }; // let ensureFresh say what is wrong
    }
  }

  private async tick(): Promise<MxsError | null> {
    let fresh;
    try {
      // A session that cannot be refreshed is only given up when its token has expired.
      fresh = await ensureFresh(this.req.profile, this.deps, this.refreshable ? this.rule : refreshWhenExpired);
    } catch (err) {
      const e = asMxsError(err);
      if (e.kind === 'auth') return e;
      this.retryLater(`could not refresh the token of profile "${this.req.profile}": ${e.message}`);
      return null;
    }
    if (this.stopped) return null;
    const { session } = fresh;
    const other = anotherSession(this.first.record, session.record);
    if (other) return other;
    this.recordStamp = stampOf(session.record);
    this.current = session.secret;
    this.refreshable = canRefresh(session);
    if (fresh.refreshed) this.refreshes++;
    if (this.current.accessToken !== this.published) {
      try {
        await this.publish(this.current.accessToken);
      } catch (err) {
        this.retryLater(`could not update the token file ${this.tokenFile}: ${asMxsError(err).message}`);
        return null;
      }
    }
    if (this.failures > 0) this.deps.notice('the token is fresh again.');
    this.failures = 0;
    this.toldExpired = false;
    return null;
  }

  private async publish(token: string): Promise<void> {
    this.writing = (async () => {
      if (this.stopped) return;
      await writeToken(this.tokenFile, token);
      this.published = token;
      if (this.req.reloadSignal && !this.stopped) this.child.kill(this.req.reloadSignal);
    })();
    await this.writing;
  }

  /** Backoff 1 s, 2 s, 4 s… up to 30 s; while the token still has time, several tries fit before it expires. */
  private retryLater(what: string): void {
    const now = this.deps.now();
    let delay = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** Math.min(this.failures, 10));
    const left = remainingMs(this.current.expiresAt, now);
    const valid = left === null || left > 0;
    if (left !== null && left > 0) delay = Math.min(delay, Math.max(RETRY_FIRST_MS, left / 3));
    if (this.failures === 0) {
      const state = valid ? `the command keeps the current token${left === null ? '' : ` (${formatDuration(left)} left)`}` : 'the current token has expired';
      this.deps.notice(`${what}; ${state}. Retrying.`);
      this.toldExpired = !valid;
    } else if (!valid && !this.toldExpired) {
      this.deps.notice('the access token has expired and could not be refreshed yet; still retrying.');
      this.toldExpired = true;
    }
    this.failures++;
    this.retryAt = now + delay;
  }
}

const canRefresh = (s: LoadedSession) => s.secret.refreshToken !== null && s.record.refreshable;

/** What identifies the stored tokens and the session they belong to, as the sessions file says. */
const stampOf = (r: SessionRecord) => JSON.stringify([r.homeserver, r.userId, r.deviceId, r.issuedAt, r.expiresAt, r.refreshable]);

/** The command's environment names a user and device: a profile that now holds another session cannot serve it. */
function anotherSession(was: SessionRecord, now: SessionRecord): MxsError | null {
  if (was.homeserver === now.homeserver && was.userId === now.userId && was.deviceId === now.deviceId) return null;
  return new MxsError({
    code: 'not_logged_in',
    message: `Profile "${was.profile}" now holds another session (${now.userId}, device ${now.deviceId}) than the one the command was started with.`,
    hint: `Run the command again: mxs exec${was.profile === 'default' ? '' : ` --profile ${was.profile}`} -- …`,
    kind: 'auth',
  });
}
