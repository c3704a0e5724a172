import { mkdir, rmdir, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { MxsError, Exit } from '../errors.js';
import { ensurePrivateDir } from './atomic.js';

export interface LockOptions {
  /** How long to wait for another process before giving up. */
  waitMs: number;
  /** A lock whose holder stopped touching it this long ago is taken over (its holder died). */
  staleMs?: number;
  sleep?: (ms: number) => Promise<void>;
  now?: () => number;
}

/**
 * Runs `critical` holding the per-profile lock. While another process holds it, `whileWaiting`
 * is polled: when it returns a value (the holder already did the work, e.g. stored a fresh
 * token), that value is returned without ever taking the lock. Never runs `critical` unlocked.
 */
export async function withLock<T>(
  lockPath: string,
  opts: LockOptions,
  critical: () => Promise<T>,
  whileWaiting?: () => Promise<T | undefined>,
): Promise<T> {
  const now = opts.now ?? Date.now;
  const sleep = opts.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const staleMs = opts.staleMs ?? 6000;
  const deadline = now() + opts.waitMs;
  // Loaded here, not at start-up: only a refresh or a login needs the lock.
  const { default: lockfile } = await import('proper-lockfile');
  await ensurePrivateDir(dirname(lockPath));
  for (let attempt = 0; ; attempt++) {
    let release: (() => Promise<void>) | undefined;
    try {
      release = await lockfile.lock(lockPath, {
        realpath: false,
        lockfilePath: lockPath,
        // proper-lockfile's own stale takeover is off (see takeOverIfStale); it only keeps our lock's mtime fresh.
        stale: NEVER_STALE,
        update: Math.max(1000, Math.floor(staleMs / 4)),
        retries: 0,
        // Losing the lock (a stall past staleMs) is not a reason to fail work that already
        // finished: the critical section stores before it returns, and store writes are atomic.
        onCompromised: () => {},
      });
    } catch (err) {
      // ENOENT: the lock vanished between proper-lockfile's mkdir and its mtime probe; just try again.
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ELOCKED' && code !== 'ENOENT') throw err;
      if (code === 'ELOCKED' && (await takeOverIfStale(lockPath, staleMs))) continue;
    }
    if (release) {
      try {
        return await critical();
      } finally {
        await release().catch(() => {});
      }
    }
    if (whileWaiting) {
      const done = await whileWaiting();
      if (done !== undefined) return done;
    }
    if (now() >= deadline) {
      throw new MxsError({
        code: 'timeout',
        message: `Another mxs process held the session lock for more than ${Math.round(opts.waitMs / 1000)}s.`,
        hint: `Retry; if no other mxs is running, remove ${lockPath}`,
        exitCode: Exit.network,
      });
    }
    // Jittered, growing poll: many waiters must not wake in step.
    const base = Math.min(250, 20 * 1.5 ** Math.min(attempt, 8));
    await sleep(base / 2 + Math.random() * base);
  }
}

const NEVER_STALE = Number.MAX_SAFE_INTEGER;

/**
 * Fix (issue 5 fault suite; proper-lockfile issue #121): proper-lockfile takes a stale lock over with
 * stat -> rmdir -> mkdir, so a waiter that saw the stale lock can rmdir the fresh lock another waiter
 * has just created. With several processes waiting on a dead holder's lock, two of them then ran
 * the refresh at once (two refreshes, the first one's tokens revoked), or one died with ENOENT from
 * proper-lockfile's mtime probe (exit 1); reproduced with 10 in-process waiters on a stale lock.
 * Here a stale lock is removed only by the waiter holding `<lock>.takeover` (mkdir is atomic), after
 * re-checking under it that the lock is still stale; a fresh lock is never stale, so never removed.
 * Returns true when it removed the lock (the caller then tries to take it at once).
 */
async function takeOverIfStale(lockPath: string, staleMs: number): Promise<boolean> {
  // File times are wall-clock times: compare with the real clock, not an injected one.
  const isStale = async (p: string) => {
    try {
      return (await stat(p)).mtimeMs < Date.now() - staleMs;
    } catch {
      return false;
    }
  };
  if (!(await isStale(lockPath))) return false;
  const guard = `${lockPath}.takeover`;
  try {
    await mkdir(guard, { mode: 0o700 });
  } catch (err) {
    // Another waiter is taking over. A guard left by one that died in those few milliseconds goes once stale.
    if ((err as NodeJS.ErrnoException).code === 'EEXIST' && (await isStale(guard))) await rmdir(guard).catch(() => {});
    return false;
  }
  try {
    if (!(await isStale(lockPath))) return false;
    await rmdir(lockPath);
    return true;
  } catch {
    return false;
  } finally {
    await rmdir(guard).catch(() => {});
  }
}
