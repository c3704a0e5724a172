import { watch, type FSWatcher } from 'node:fs';
import { link, lstat, open, rename, rm, unlink, utimes, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { MxsError, Exit } from '../errors.js';
import { ensurePrivateDir, fsFailure } from './atomic.js';
import { holderState, me, parseOwner, type LockOwner } from './lock-owner.js';
import { readSmallFile } from './small-file.js';
import { uniqueId } from './unique.js';

// The per-profile lock. Staleness must not depend on two processes' wall clocks agreeing.
//
// The lock is a small regular file, `locks/PROFILE.lock`, created atomically with its content in
// place (written to a temp file, then hard-linked to the lock path: link(2) fails with EEXIST when
// the lock exists, and a lock is never seen half-written). The content says who holds it
// (src/store/lock-owner.ts: PID, process start time, hostname, boot id, PID namespace, a nonce). While it holds the lock, the holder touches the file's
// mtime (a heartbeat) every staleMs/4.
//
// A waiter takes a lock over only when:
// - its holder is provably dead: same host (hostname, boot id and PID namespace all equal) and the
//   PID is gone, or the PID now belongs to a process with another start time (reused). A live
//   holder on this host is never taken over, whatever the clocks say;
// - or, when that cannot be checked (another host sharing the directory, a PID alive but no start
//   time to compare, an unreadable lock, a directory lock from mxs 0.1), the lock has not changed
//   (inode, mtime, size) for staleMs as measured by the waiter's MONOTONIC clock. File times are
//   compared only with earlier file times, never with any clock: a clock step on either side
//   cannot make a fresh lock look old. (Directory locks from mxs 0.1, touched every 1.5 s by their
//   holders, are given staleMs/2.)
// Removal of a stale lock is serialised by `<lock>.takeover` (created the same atomic way, and
// itself recovered the same way), and re-checked under it, so one waiter removes one stale lock
// and never a fresh one (the race of proper-lockfile issue #121; proper-lockfile also judges
// staleness by mtime against the local wall clock, which this design never reads).

export interface LockOptions {
  /** How long to wait for another process before giving up (measured on the monotonic clock). */
  waitMs: number;
  /** A lock whose holder cannot be checked for life is taken over after this long without a heartbeat. */
  staleMs?: number;
  sleep?: (ms: number) => Promise<void>;
  /** The monotonic clock, in ms (default process.hrtime: `performance` costs a waiter a dozen modules). */
  monotonic?: () => number;
}

const DEFAULT_STALE_MS = 6000;

/**
 * Runs `critical` holding the per-profile lock. While another process holds it, `whileWaiting`
 * is polled: when it returns a value (the holder already did the work, e.g. stored a fresh
 * token), that value is returned without ever taking the lock. Never runs `critical` unlocked.
 * File-system failures (read-only, full, a path in the way) are exit 6, naming the path.
 */
export async function withLock<T>(
  lockPath: string,
  opts: LockOptions,
  critical: () => Promise<T>,
  whileWaiting?: () => Promise<T | undefined>,
): Promise<T> {
  const clock = opts.monotonic ?? (() => Number(process.hrtime.bigint()) / 1e6);
  const staleMs = opts.staleMs ?? DEFAULT_STALE_MS;
  const deadline = clock() + opts.waitMs;
  await ensureLockDir(lockPath);
  const wake = new LockWatch(lockPath);
  try {
    for (let attempt = 0; ; attempt++) {
      const held = await tryAcquire(lockPath, staleMs);
      if (held) {
        try {
          return await critical();
        } finally {
          await held.release();
        }
      }
      wake.arm();
      if (await takeOverIfStale(lockPath, staleMs, clock)) continue;
      if (whileWaiting) {
        const done = await whileWaiting();
        if (done !== undefined) return done;
      }
      if (clock() >= deadline) {
        throw new MxsError({
          code: 'timeout',
          message: `Another mxs process held the session lock for more than ${Math.round(opts.waitMs / 1000)}s.`,
          hint: `Retry; if no other mxs is running, remove ${lockPath}`,
          exitCode: Exit.network,
        });
      }
      // Jittered, growing poll: many waiters must not wake in step. The lock's removal (or
      // replacement) wakes a waiter at once where the file system reports it (inotify); the poll
      // stays for file systems that do not (NFS) and for a holder that dies without a trace.
      // With the watch, the poll is only the fallback (a holder that died, an event missed): rarer
      // polls leave the CPU to the holder when many processes wait (50 concurrent `mxs token`),
      // and a dead holder is still noticed within staleMs/4 (at most 1 s).
      const base = wake.live ? Math.min(1000, staleMs / 4, 200 * 1.5 ** Math.min(attempt, 8)) : Math.min(250, 20 * 1.5 ** Math.min(attempt, 8));
      await wake.sleep(base / 2 + Math.random() * base, opts.sleep);
    }
  } finally {
    wake.close();
  }
}

/**
 * Wakes a waiter when the lock it waits for is released (or replaced), so it does not sleep out its
 * poll interval after the holder has finished. It watches the lock file itself, not the directory:
 * every waiter's temp files would otherwise wake every other waiter (50 waiters, 2,500 events a
 * round). Best effort: where fs.watch fails (inotify limits, some network file systems) waiting is
 * the poll alone.
 */
class LockWatch {
  private watcher: FSWatcher | undefined;
  private wakeUp: (() => void) | undefined;
  private changed = false;
  private failed = false;

  constructor(private readonly lockPath: string) {}

  /** Watches the lock as it is now (call after finding it held). */
  arm(): void {
    if (this.watcher || this.failed) return;
    try {
      this.watcher = watch(this.lockPath, { persistent: false }, (event) => {
        if (event !== 'rename') return; // 'change': the holder's heartbeat
        this.wake();
      });
      this.watcher.on('error', () => this.wake());
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') this.changed = true; // released meanwhile
      else this.failed = true;
    }
  }

  /** Whether the lock is being watched (else waiting is the poll alone). */
  get live(): boolean {
    return !this.failed;
  }

  /** Sleeps `ms`, or less when the lock went away meanwhile (or since the last sleep). */
  async sleep(ms: number, sleep?: (ms: number) => Promise<void>): Promise<void> {
    if (this.changed) {
      this.changed = false;
      return;
    }
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      this.wakeUp = resolve;
      if (sleep) void sleep(ms).then(resolve);
      else timer = setTimeout(resolve, ms);
    });
    clearTimeout(timer); // woken early: no timer left to hold the process
    this.wakeUp = undefined;
    this.changed = false;
  }

  close(): void {
    this.watcher?.close();
    this.watcher = undefined;
    this.wakeUp?.();
  }

  private wake(): void {
    this.watcher?.close(); // the file it watched is gone: the next wait watches its successor
    this.watcher = undefined;
    this.changed = true;
    this.wakeUp?.();
  }
}

/**
 * Proves that locks can be taken in `locksDir` (creating it, 0700): takes and releases a probe
 * lock there. Exit 6, naming the path and what to fix, when it cannot.
 */
export async function probeLockDir(locksDir: string): Promise<void> {
  const probe = join(locksDir, `.probe.${process.pid}.${uniqueId()}.lock`);
  await ensureLockDir(probe);
  const held = await tryAcquire(probe, DEFAULT_STALE_MS);
  if (!held) throw fsFailure(Object.assign(new Error('a probe lock already exists'), { code: 'EEXIST' }), probe, `Cannot take a lock in ${locksDir}`);
  await held.release();
}

async function ensureLockDir(lockPath: string): Promise<void> {
  try {
    await ensurePrivateDir(dirname(lockPath));
  } catch (err) {
    throw fsFailure(err, lockPath, `Cannot take the session lock ${lockPath}`, dirname(lockPath));
  }
}


// ---------------------------------------------------------------------------------------------
// Taking and releasing.

interface Held {
  release(): Promise<void>;
}

async function tryAcquire(lockPath: string, staleMs: number): Promise<Held | null> {
  const owner: LockOwner = { ...me(), nonce: uniqueId(), since: new Date().toISOString() };
  const created = await createExclusive(lockPath, JSON.stringify(owner) + '\n');
  if (!created) return null;
  const { ino } = created;
  // Ours only while it is the same file (inode numbers are reused: also check the nonce in it).
  const ours = async () => {
    const st = await lstat(lockPath).catch(() => null);
    if (!st || st.ino !== ino || !st.isFile()) return false;
    return (await readSmall(lockPath)).includes(`"nonce":"${owner.nonce}"`);
  };
  // Heartbeat: a strictly increasing mtime (so it changes even if the clock stands still or steps
  // back). Waiters only compare it with what they saw before, never with a clock.
  let beat = Date.now();
  const timer = setInterval(() => {
    beat = Math.max(Date.now(), beat + 1000);
    void (async () => {
      if (!(await ours())) return clearInterval(timer); // taken over: not ours to touch
      await utimes(lockPath, beat / 1000, beat / 1000).catch(() => {});
    })();
  }, Math.max(250, Math.floor(staleMs / 4)));
  timer.unref();
  return {
    async release() {
      clearInterval(timer);
      // Remove only our own lock: after a takeover (we were judged dead), the file is someone else's.
      if (await ours()) await unlink(lockPath).catch(() => {});
    },
  };
}

/**
 * Creates `path` holding `content`, atomically and only if nothing is there: the content goes to a
 * temp file, which is then hard-linked to `path` (so no one ever reads a half-written lock). On a
 * file system without hard links, falls back to O_EXCL. Null when `path` exists; exit 6 on any
 * other failure.
 */
async function createExclusive(path: string, content: string): Promise<{ ino: number } | null> {
  const tmp = `${path}.${process.pid}.${uniqueId()}.tmp`;
  const action = `Cannot take the session lock ${path}`;
  let fh: FileHandle | undefined;
  try {
    fh = await open(tmp, 'wx', 0o600);
    await fh.writeFile(content);
    const { ino } = await fh.stat();
    await fh.close();
    fh = undefined;
    try {
      await link(tmp, path);
      return { ino };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') return null;
      if (!['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'EXDEV', 'EMLINK'].includes(code ?? '')) throw err;
    }
    return await createWithExcl(path, content);
  } catch (err) {
    throw fsFailure(err, path, action);
  } finally {
    await fh?.close().catch(() => {});
    await unlink(tmp).catch(() => {});
  }
}

async function createWithExcl(path: string, content: string): Promise<{ ino: number } | null> {
  let fh: FileHandle;
  try {
    fh = await open(path, 'wx', 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return null;
    throw err;
  }
  try {
    await fh.writeFile(content);
    return { ino: (await fh.stat()).ino };
  } finally {
    await fh.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Staleness.

/** What a waiter saw of a lock: it changes whenever the holder beats, or the lock is replaced. */
interface Sighting {
  key: string;
  /** Monotonic time at which this key was first seen. */
  since: number;
}

/** Per lock path, in this process: shared by every waiter here, so they agree on what they saw. */
const sightings = new Map<string, Sighting>();

interface Judgement {
  stale: boolean;
  /** Identity of the lock judged, to remove exactly it. */
  ino: number;
  dir: boolean;
}

async function judge(lockPath: string, staleMs: number, clock: () => number): Promise<Judgement | null> {
  const st = await lstat(lockPath).catch(() => null);
  if (!st) {
    sightings.delete(lockPath);
    return null;
  }
  let owner: LockOwner | null = null;
  if (st.isFile() && st.size <= 4096) owner = parseOwner(await readSmall(lockPath));
  const verdict = owner ? holderState(owner) : 'unknown';
  if (verdict === 'dead') return { stale: true, ino: st.ino, dir: st.isDirectory() };
  if (verdict === 'alive') {
    sightings.delete(lockPath);
    return { stale: false, ino: st.ino, dir: false };
  }
  // Cannot tell: watch for a heartbeat on our own monotonic clock.
  const key = `${st.dev}:${st.ino}:${st.mtimeMs}:${st.size}:${owner?.nonce ?? ''}`;
  const now = clock();
  const seen = sightings.get(lockPath);
  if (!seen || seen.key !== key) {
    sightings.set(lockPath, { key, since: now });
    return { stale: false, ino: st.ino, dir: st.isDirectory() };
  }
  // mxs 0.1's directory locks were touched every 1.5 s (staleMs/4): two missed beats are enough.
  const limit = st.isDirectory() && !owner ? staleMs / 2 : staleMs;
  return { stale: now - seen.since >= limit, ino: st.ino, dir: st.isDirectory() };
}

/** A lock file's content ('' when it is gone or is not a small regular file: a FIFO planted there must not block a waiter). */
async function readSmall(path: string): Promise<string> {
  try {
    return (await readSmallFile(path, { what: 'the lock', maxBytes: 4096 }))?.text ?? '';
  } catch {
    return '';
  }
}

/**
 * Removes the lock if it is stale, serialised by `<lock>.takeover` and re-checked under it: one
 * waiter removes one stale lock, never a fresh one. Returns true when it removed the lock (the
 * caller then tries to take it at once).
 */
async function takeOverIfStale(lockPath: string, staleMs: number, clock: () => number): Promise<boolean> {
  const first = await judge(lockPath, staleMs, clock);
  if (!first?.stale) return false;
  const guardPath = `${lockPath}.takeover`;
  const guard = await tryAcquire(guardPath, staleMs);
  if (!guard) {
    // Another waiter is taking over. A guard left by one that died meanwhile is recovered the same way.
    const g = await judge(guardPath, staleMs, clock);
    if (g?.stale) await removeExactly(guardPath, g.ino, g.dir);
    return false;
  }
  try {
    const again = await judge(lockPath, staleMs, clock);
    if (!again?.stale || again.ino !== first.ino) return false;
    sightings.delete(lockPath);
    return await removeExactly(lockPath, again.ino, again.dir);
  } finally {
    await guard.release();
  }
}

/**
 * Removes `path` only if it is still the file (inode) judged stale: it is first renamed aside,
 * atomically, then checked; something else renamed by a race is put back.
 */
async function removeExactly(path: string, ino: number, isDir: boolean): Promise<boolean> {
  const aside = join(dirname(path), `.${basename(path)}.${process.pid}.${uniqueId()}.stale`);
  try {
    await rename(path, aside);
  } catch {
    return false;
  }
  const st = await lstat(aside).catch(() => null);
  if (st && st.ino !== ino) {
    // Not the one we judged: give it back (link fails if yet another appeared; then it stays aside and its holder loses it).
    if (!st.isDirectory()) await link(aside, path).catch(() => {});
    else await rename(aside, path).catch(() => {});
    await rm(aside, { recursive: false, force: true }).catch(() => {});
    return false;
  }
  await rm(aside, { recursive: isDir, force: true }).catch(() => {});
  return true;
}
