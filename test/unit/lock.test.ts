// The per-profile lock (issue 10 item 14): a lock is taken over only when its holder is provably dead
// on this host, or (when that cannot be told) after its heartbeat has been silent for staleMs on the
// waiter's monotonic clock. Never because two processes' wall clocks disagree.
//
// Holders and waiters run as separate processes, some under libfaketime (`faketime -f +1h`, Debian's
// faketime package) so that their wall clocks differ from each other's and from the file system's.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, readlinkSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it, jest } from '@jest/globals';
import { MxsError } from '../../src/errors.js';
import { withLock } from '../../src/store/lock.js';
import { holderState, processStart, type LockOwner } from '../../src/store/lock-owner.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const FAKETIME = spawnSync('faketime', ['-f', '+0', 'true']).status === 0;
const needFaketime = (): boolean => {
  if (FAKETIME) return true;
  const reason = 'faketime is not installed (Debian: apt-get install faketime): skipping the different-clocks lock tests';
  if (process.env.CI === 'true') throw new Error(`${reason} (CI=true: a missing tool fails the run)`);
  process.stderr.write(`${reason}\n`);
  return false;
};

// ---------------------------------------------------------------------------------------------
// src/store/lock.ts and what it imports, transpiled to plain ES modules that a child `node` runs.

let build: string;
const works: string[] = [];

async function transpileClosure(entry: string, outRoot: string): Promise<void> {
  const { default: ts } = await import('typescript');
  const seen = new Set<string>();
  const queue = [entry];
  while (queue.length > 0) {
    const file = queue.pop()!;
    if (seen.has(file)) continue;
    seen.add(file);
    const source = readFileSync(file, 'utf8');
    for (const m of source.matchAll(/from\s+'(\.{1,2}\/[^']+)\.js'/g)) queue.push(resolve(dirname(file), `${m[1]}.ts`));
    const { outputText } = ts.transpileModule(source, {
      compilerOptions: { module: ts.ModuleKind.ES2022, target: ts.ScriptTarget.ES2022 },
      fileName: file,
    });
    const out = join(outRoot, relative(REPO, file)).replace(/\.ts$/, '.js');
    await mkdir(dirname(out), { recursive: true });
    await writeFile(out, outputText);
  }
}

const CHILD = `
import { withLock } from './src/store/lock.js';
import { appendFileSync } from 'node:fs';
const [mode, lock, staleMs, extra] = process.argv.slice(2);
const say = (m) => process.stdout.write(m + '\\n');
say('pid ' + process.pid); // under faketime, the node process is a child of faketime's
if (mode === 'hold') {
  // Takes the lock and keeps it until killed (the timer keeps the process alive).
  setInterval(() => {}, 1 << 30);
  await withLock(lock, { waitMs: 60_000, staleMs: Number(staleMs) }, async () => {
    say('locked');
    await new Promise(() => {});
  });
} else if (mode === 'wait') {
  say('waiting');
  await withLock(lock, { waitMs: 120_000, staleMs: Number(staleMs) }, async () => say('got'));
  process.exit(0);
} else if (mode === 'loop') {
  // Takes the lock N times, logging enter/exit: overlaps would mean two holders at once.
  const n = Number(extra);
  for (let i = 0; i < n; i++) {
    await withLock(lock, { waitMs: 120_000, staleMs: Number(staleMs) }, async () => {
      appendFileSync(lock + '.log', 'enter ' + process.pid + '\\n');
      await new Promise((r) => setTimeout(r, 15));
      appendFileSync(lock + '.log', 'exit ' + process.pid + '\\n');
    });
  }
  process.exit(0);
}
`;

beforeAll(async () => {
  build = mkdtempSync(join(tmpdir(), 'mxs-lock-build-'));
  await transpileClosure(join(REPO, 'src', 'store', 'lock.ts'), build);
  await symlink(join(REPO, 'node_modules'), join(build, 'node_modules'), 'dir');
  await writeFile(join(build, 'child.mjs'), CHILD);
});
afterAll(async () => {
  await rm(build, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const children: ChildProcess[] = [];
const nodePids: Promise<number>[] = [];
afterEach(async () => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  // Under faketime the node process is faketime's child: kill it by its own PID.
  const pids = await Promise.race([Promise.all(nodePids.splice(0)), sleep(500).then(() => [] as number[])]);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  for (const dir of works.splice(0)) await rm(dir, { recursive: true, force: true });
});

interface Child {
  proc: ChildProcess;
  /** SIGKILLs the node process itself (under faketime, proc is faketime's process). */
  kill(): Promise<void>;
  /** Whether the node process is still running. */
  alive(): boolean;
  /** Resolves when the child has printed `line`. */
  said(line: string): Promise<void>;
  lines: string[];
  exited: Promise<number | null>;
}

function child(args: string[], opts: { clock?: string } = {}): Child {
  const argv = [process.execPath, join(build, 'child.mjs'), ...args];
  const proc = opts.clock ? spawn('faketime', ['-f', opts.clock, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] }) : spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(proc);
  const lines: string[] = [];
  let killed = false;
  const waiters: { line: string; resolve: () => void }[] = [];
  let buf = '';
  let stderr = '';
  proc.stderr!.on('data', (d) => (stderr += d));
  proc.stdout!.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      lines.push(line);
      for (const w of waiters.filter((x) => x.line === line)) w.resolve();
    }
  });
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  const pid = new Promise<number>((resolve) => {
    const check = () => {
      const line = lines.find((l) => l.startsWith('pid '));
      if (line) resolve(Number(line.slice(4)));
      else setTimeout(check, 5);
    };
    check();
  });
  nodePids.push(pid);
  void exited.then((code) => {
    if (code !== 0 && code !== null && !killed) process.stderr.write(`lock test child ${args.join(' ')} exited ${code}: ${stderr}\n`);
  });
  return {
    proc,
    kill: async () => {
      killed = true;
      process.kill(await pid, 'SIGKILL');
    },
    alive: () => {
      const line = lines.find((l) => l.startsWith('pid '));
      if (!line) return proc.exitCode === null;
      try {
        process.kill(Number(line.slice(4)), 0);
        return true;
      } catch {
        return false;
      }
    },
    lines,
    exited,
    said: (line) =>
      lines.includes(line)
        ? Promise.resolve()
        : new Promise<void>((resolve, reject) => {
            waiters.push({ line, resolve });
            void exited.then(() => reject(new Error(`child exited before saying ${line}: ${stderr}`)));
          }),
  };
}

async function newLockPath(): Promise<string> {
  const work = await mkdtemp(join(tmpdir(), 'mxs-lock-'));
  works.push(work);
  return join(work, 'locks', 'default.lock');
}

/** Resolves with how long `p` took, or rejects after `ms`. */
async function within(ms: number, p: Promise<unknown>, what: string): Promise<number> {
  const t0 = performance.now();
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([p, new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
  return performance.now() - t0;
}

function ownerOf(overrides: Partial<LockOwner>): LockOwner {
  const boot = (() => {
    try {
      return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    } catch {
      return null;
    }
  })();
  let pidns: string | null = null;
  try {
    pidns = readlinkSync('/proc/self/ns/pid');
  } catch {
    pidns = null;
  }
  return { v: 1, pid: process.pid, start: processStart(process.pid), host: hostname(), boot, pidns, nonce: 'planted', since: new Date().toISOString(), ...overrides };
}

async function plantLock(lock: string, owner: LockOwner | string): Promise<void> {
  await mkdir(dirname(lock), { recursive: true, mode: 0o700 });
  await writeFile(lock, typeof owner === 'string' ? owner : JSON.stringify(owner) + '\n', { mode: 0o600 });
}

/** A PID that belonged to a process that has exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(r.stdout);
}

// ---------------------------------------------------------------------------------------------

describe('holder and waiter with different clocks', () => {
  // [case, holder's clock, waiter's clock]
  const pairs: [string, string | undefined, string | undefined][] = [
    ['the waiter’s clock is an hour ahead', undefined, '+1h'],
    ['the waiter’s clock is a day ahead', undefined, '+1d'],
    ['the holder’s clock is an hour behind (its heartbeats look old)', '-1h', undefined],
    ['the holder’s clock is an hour ahead and the waiter’s an hour behind', '+1h', '-1h'],
  ];
  // The pairs run side by side, each on its own lock: the 4 s watch is the same for all.
  it(`${pairs.map((p) => p[0]).join('; ')}: the waiter never takes over the live holder, and takes over promptly once the holder is SIGKILLed`, async () => {
    if (!needFaketime()) return;
    const staleMs = 1000; // short, so that a clock-based judgement would show within the test
    const outcomes = await Promise.all(
      pairs.map(async ([name, holderClock, waiterClock]) => {
        const lock = await newLockPath();
        const holder = child(['hold', lock, String(staleMs)], { clock: holderClock });
        await within(15_000, holder.said('locked'), `${name}: the holder to take the lock`);
        const waiter = child(['wait', lock, String(staleMs)], { clock: waiterClock });
        await within(15_000, waiter.said('waiting'), `${name}: the waiter to start`);
        await sleep(4 * staleMs); // many stale periods: a clock-based waiter would have taken over long ago
        const tookOverLiveHolder = waiter.lines.includes('got');
        const holderAlive = holder.alive();
        await holder.kill();
        const took = await within(5000, waiter.said('got'), `${name}: the waiter to take over after the SIGKILL`);
        // A dead holder on this host is known dead: no need to wait out staleMs.
        return { name, tookOverLiveHolder, holderAlive, promptly: took < staleMs, waiterExit: await waiter.exited };
      }),
    );
    expect(outcomes).toEqual(pairs.map(([name]) => ({ name, tookOverLiveHolder: false, holderAlive: true, promptly: true, waiterExit: 0 })));
  }, 40_000);

  it('processes under clocks an hour apart, taking one lock in turn: never two holders at once', async () => {
    if (!needFaketime()) return;
    const lock = await newLockPath();
    const clocks = [undefined, '+1h', '-1h', '+1d', undefined, '-2h'];
    const procs = clocks.map((clock) => child(['loop', lock, '500', '6'], { clock }));
    await within(60_000, Promise.all(procs.map((p) => p.exited)), 'every process to finish');
    expect(await Promise.all(procs.map((p) => p.exited))).toEqual(clocks.map(() => 0));
    const log = (await readFile(lock + '.log', 'utf8')).trim().split('\n');
    expect(log).toHaveLength(clocks.length * 6 * 2);
    let inside = 0;
    let most = 0;
    for (const line of log) {
      inside += line.startsWith('enter') ? 1 : -1;
      most = Math.max(most, inside);
    }
    expect(most).toBe(1);
    expect(await lstat(lock).catch(() => null)).toBeNull();
  }, 90_000);
});

describe('what a waiter concludes from the lock file', () => {
  it('a lock whose holder PID is gone (same host) is taken over at once, however long staleMs is', async () => {
    const lock = await newLockPath();
    await plantLock(lock, ownerOf({ pid: deadPid(), start: '1' }));
    const t0 = performance.now();
    await withLock(lock, { waitMs: 30_000, staleMs: 60_000 }, async () => {});
    expect(performance.now() - t0).toBeLessThan(2000);
  });

  it('a lock whose PID now belongs to another process (another start time) is taken over at once', async () => {
    const lock = await newLockPath();
    // Our own PID, but "started" at another time: the PID was reused, its holder is dead.
    await plantLock(lock, ownerOf({ start: 'not-our-start' }));
    expect(holderState(ownerOf({ start: 'not-our-start' }))).toBe(processStart(process.pid) === null ? 'unknown' : 'dead');
    if (processStart(process.pid) === null) return; // no /proc: start identity cannot be compared
    const t0 = performance.now();
    await withLock(lock, { waitMs: 30_000, staleMs: 60_000 }, async () => {});
    expect(performance.now() - t0).toBeLessThan(2000);
  });

  it('a live holder on this host is alive whatever its file times say', async () => {
    expect(holderState(ownerOf({}))).toBe(processStart(process.pid) === null ? 'unknown' : 'alive');
    const lock = await newLockPath();
    await plantLock(lock, ownerOf({}));
    const longAgo = new Date(Date.now() - 86_400_000);
    await utimes(lock, longAgo, longAgo);
    const err = await withLock(lock, { waitMs: 1500, staleMs: 300 }, async () => 'ran').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MxsError);
    expect(err).toMatchObject({ code: 'timeout' });
    expect(await lstat(lock).catch(() => null)).not.toBeNull();
  });

  it('a lock from another host is kept while its heartbeat goes on (even with times far in the past), then taken over after staleMs of silence', async () => {
    const lock = await newLockPath();
    await plantLock(lock, ownerOf({ host: 'another-host.example', pid: 1 }));
    // The other host's clock is years behind ours: its heartbeats set mtimes long past.
    let t = Date.UTC(2001, 0, 1) / 1000;
    const beat = setInterval(() => void utimes(lock, (t += 1), t).catch(() => {}), 100);
    let ran = false;
    const waiting = withLock(lock, { waitMs: 30_000, staleMs: 800 }, async () => {
      ran = true;
    });
    await sleep(2500);
    expect(ran).toBe(false);
    clearInterval(beat);
    const silentAt = performance.now();
    await waiting;
    const after = performance.now() - silentAt;
    expect(ran).toBe(true);
    expect(after).toBeGreaterThanOrEqual(700);
    expect(after).toBeLessThan(3000);
  });

  it('staleness is measured on the monotonic clock it is given, never on the wall clock', async () => {
    const lock = await newLockPath();
    await plantLock(lock, ownerOf({ host: 'another-host.example' }));
    let mono = 0;
    const sleeps: number[] = [];
    let ran = false;
    await withLock(
      lock,
      {
        waitMs: 60_000,
        staleMs: 10_000,
        monotonic: () => mono,
        // Each poll advances the monotonic clock by 1 s.
        sleep: async (ms) => {
          sleeps.push(ms);
          mono += 1000;
        },
      },
      async () => {
        ran = true;
      },
    );
    expect(ran).toBe(true);
    // Taken over once 10 s of silence had been seen (the first sighting starts the count).
    expect(sleeps.length).toBeGreaterThanOrEqual(10);
    expect(sleeps.length).toBeLessThanOrEqual(12);
  });

  it('a wall clock that jumps forward neither cuts the wait short nor makes a live lock stale', async () => {
    const lock = await newLockPath();
    await plantLock(lock, ownerOf({}));
    // Date.now jumps an hour ahead after its first call: a deadline on the wall clock would expire at once.
    const realNow = Date.now.bind(Date);
    let calls = 0;
    const jumpy = jest.spyOn(Date, 'now').mockImplementation(() => realNow() + (calls++ > 0 ? 3_600_000 : 0));
    const t0 = performance.now();
    const err = await withLock(lock, { waitMs: 1200, staleMs: 200 }, async () => 'ran')
      .catch((e: unknown) => e)
      .finally(() => jumpy.mockRestore());
    expect(err).toMatchObject({ code: 'timeout' });
    expect(performance.now() - t0).toBeGreaterThanOrEqual(1100);
  });

  it('an ownerless directory lock (mxs 0.1) is not taken over at first sight, but after its mtime stood still for staleMs/2', async () => {
    const lock = await newLockPath();
    await mkdir(lock, { recursive: true });
    const longAgo = new Date(Date.now() - 3_600_000);
    await utimes(lock, longAgo, longAgo);
    const t0 = performance.now();
    await withLock(lock, { waitMs: 30_000, staleMs: 1200 }, async () => {});
    const took = performance.now() - t0;
    expect(took).toBeGreaterThanOrEqual(550);
    expect(took).toBeLessThan(4000);
  });

  it('an unreadable lock file is judged by its heartbeat: kept while it changes, taken over after staleMs of silence', async () => {
    const lock = await newLockPath();
    await plantLock(lock, 'garbage');
    let n = 0;
    const beat = setInterval(() => void writeFile(lock, `garbage ${n++}`).catch(() => {}), 100);
    let ran = false;
    const waiting = withLock(lock, { waitMs: 30_000, staleMs: 600 }, async () => {
      ran = true;
    });
    await sleep(1500);
    expect(ran).toBe(false);
    clearInterval(beat);
    await waiting;
    expect(ran).toBe(true);
  });

  it('a FIFO planted as the lock file neither hangs a waiter nor blocks it forever: taken over after staleMs', async () => {
    const lock = await newLockPath();
    await mkdir(dirname(lock), { recursive: true, mode: 0o700 });
    expect(spawnSync('mkfifo', ['-m', '600', lock]).status).toBe(0);
    const t0 = performance.now();
    await withLock(lock, { waitMs: 10_000, staleMs: 500 }, async () => {});
    expect(performance.now() - t0).toBeLessThan(3000);
  });

  it('a takeover guard left by a dead waiter is recovered, and the stale lock taken over', async () => {
    const lock = await newLockPath();
    await plantLock(lock, ownerOf({ pid: deadPid(), start: '1' }));
    await plantLock(`${lock}.takeover`, ownerOf({ pid: deadPid(), start: '1' }));
    const t0 = performance.now();
    await withLock(lock, { waitMs: 30_000, staleMs: 60_000 }, async () => {});
    expect(performance.now() - t0).toBeLessThan(3000);
    expect((await readdir(dirname(lock))).filter((n) => !n.startsWith('.'))).toEqual([]);
  });
});

describe('the lock file', () => {
  it('names its holder (PID, start, host, nonce), is 0600, beats while held, and is gone after release', async () => {
    const lock = await newLockPath();
    let seen: { owner: LockOwner; mode: number; mtimes: number[] } | undefined;
    await withLock(lock, { waitMs: 5000, staleMs: 1000 }, async () => {
      const owner = JSON.parse(await readFile(lock, 'utf8')) as LockOwner;
      const mtimes = [(await stat(lock)).mtimeMs];
      await sleep(700);
      mtimes.push((await stat(lock)).mtimeMs);
      seen = { owner, mode: (await stat(lock)).mode & 0o777, mtimes };
    });
    expect(seen!.owner).toMatchObject({ v: 1, pid: process.pid, host: hostname(), nonce: expect.stringMatching(/^[0-9a-z]{12,}$/) });
    expect(seen!.mode).toBe(0o600);
    expect(seen!.mtimes[1]).not.toBe(seen!.mtimes[0]);
    expect(await lstat(lock).catch(() => null)).toBeNull();
    expect(await readdir(dirname(lock))).toEqual([]);
  });

  it('a holder that lost its lock to a takeover does not remove the new holder’s lock on release', async () => {
    const lock = await newLockPath();
    await withLock(lock, { waitMs: 5000 }, async () => {
      // Simulate a takeover: the file at the lock path is now someone else's.
      await rm(lock);
      await plantLock(lock, ownerOf({ nonce: 'someone-else' }));
    });
    expect(JSON.parse(await readFile(lock, 'utf8')).nonce).toBe('someone-else');
  });

  it('a critical section that throws releases the lock', async () => {
    const lock = await newLockPath();
    await expect(
      withLock(lock, { waitMs: 5000 }, async () => {
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    expect(await lstat(lock).catch(() => null)).toBeNull();
  });

  it('whileWaiting can end the wait with the holder’s result, without taking the lock', async () => {
    const lock = await newLockPath();
    await plantLock(lock, ownerOf({}));
    let polls = 0;
    const r = await withLock(
      lock,
      { waitMs: 5000 },
      async () => 'took the lock',
      async () => (++polls >= 2 ? 'done by the holder' : undefined),
    );
    expect(r).toBe('done by the holder');
  });

  it('a waiter wakes when the holder releases, not when its poll interval ends (fs.watch on the lock file)', async () => {
    const lock = await newLockPath();
    let release!: () => void;
    const holding = new Promise<void>((r) => (release = r));
    let held!: () => void;
    const isHeld = new Promise<void>((r) => (held = r));
    const holder = withLock(lock, { waitMs: 5000 }, async () => {
      held();
      await holding;
    });
    await isHeld;
    // The waiter's poll sleeps 20 s: only the release can wake it in time.
    const polls: number[] = [];
    const waiter = withLock(lock, { waitMs: 30_000, sleep: async (ms) => { polls.push(ms); await sleep(20_000); } }, async () => performance.now());
    await sleep(300);
    const releasedAt = performance.now();
    release();
    await holder;
    const tookAt = await waiter;
    expect(polls.length).toBeGreaterThanOrEqual(1);
    expect(tookAt - releasedAt).toBeLessThan(2000);
  });

  it('waiters poll less once they watch the lock, but still notice a holder that died without a trace', async () => {
    const lock = await newLockPath();
    await plantLock(lock, ownerOf({}));
    const polls: number[] = [];
    let n = 0;
    const r = await withLock(
      lock,
      { waitMs: 10_000, staleMs: 4000, sleep: async (ms) => void polls.push(ms) },
      async () => 'took',
      async () => (++n === 6 ? 'done' : undefined),
    );
    expect(r).toBe('done');
    // 200 ms and growing, capped at staleMs/4 (so a SIGKILLed holder is noticed within 1 s here).
    expect(Math.min(...polls)).toBeGreaterThanOrEqual(100);
    expect(Math.max(...polls)).toBeLessThanOrEqual(1000 * 1.5);
  });

  it('in-process waiters racing for a dead holder’s lock never hold it two at a time', async () => {
    const lock = await newLockPath();
    await plantLock(lock, ownerOf({ pid: deadPid(), start: '1' }));
    let inside = 0;
    let most = 0;
    await Promise.all(
      Array.from({ length: 20 }, () =>
        withLock(lock, { waitMs: 20_000, staleMs: 6000 }, async () => {
          most = Math.max(most, ++inside);
          await sleep(5);
          inside--;
        }),
      ),
    );
    expect(most).toBe(1);
  });
});
