import { mkdtemp, rm } from 'node:fs/promises';
import { constants } from 'node:os';
import { join } from 'node:path';
import { asMxsError, MxsError, storageError } from '../errors.js';
import { formatDuration } from '../duration.js';
import type { SessionRecord, SessionSecret } from '../model.js';
import { writeFileAtomic } from '../store/atomic.js';
import type { Deps } from './deps.js';
import { SessionKeeper } from './keeper.js';
import { ensureFresh, refreshWhenBelow, type LoadedSession } from './session.js';

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
    // Empty for a client-credentials session, which has neither.
    MATRIX_USER_ID: record.userId ?? '',
    MATRIX_DEVICE_ID: record.deviceId ?? '',
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
      await writeFileAtomic(tokenFile, first.secret.accessToken).catch((err) => {
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

    const keeper = new SessionKeeper(deps, { profile: req.profile, holder: 'exec', minValidMs: req.minValidMs, first, notice: deps.notice });
    const running = child;
    const file = tokenFile;
    const publish = async (token: string) => {
      await writeFileAtomic(file, token);
      if (req.reloadSignal) running.kill(req.reloadSignal);
    };
    const ended: ChildExit | MxsError = await Promise.race<ChildExit | MxsError>([
      running.exited,
      keeper.keepFresh(publish).then((death): ChildExit | MxsError | Promise<ChildExit> => death ?? running.exited),
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
