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
  let compromised: Error | undefined;
  for (let attempt = 0; ; attempt++) {
    let release: (() => Promise<void>) | undefined;
    try {
      release = await lockfile.lock(lockPath, {
        realpath: false,
        lockfilePath: lockPath,
        stale: staleMs,
        update: Math.max(1000, Math.floor(staleMs / 4)),
        retries: 0,
        onCompromised: (err) => {
          compromised = err;
        },
      });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ELOCKED') throw err;
    }
    if (release) {
      try {
        const result = await critical();
        if (compromised) throw compromised;
        return result;
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
