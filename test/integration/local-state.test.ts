// Issue 10, local state, through the built CLI: file-system failures (item 12), non-regular files
// planted as state (item 13), a holder and a waiter with different clocks (item 14), profile names
// in errors (item 15) and duration bounds (item 16). Every failure is the contract's exit code with
// a two-line message (what happened, what to do), never exit 1 "Unexpected error … bug".
//
// Read-only and full file systems are real mounts in a private mount namespace (`unshare -m`, as
// root); where that is not allowed the cases are skipped with the reason (under CI=true they fail).
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, constants, openSync } from 'node:fs';
import { mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BIN, doublePerTest, haveFaketime, homePerTest, runMxs, type Home, type RunResult } from '../support/cli.js';
import { type HomeserverDouble } from '../support/homeserver-double.js';
import { mxsInProcess } from '../support/run-command.js';

const PW = 'alice-pw';
const REFRESH = 'POST /_matrix/client/v3/refresh';
let hs: HomeserverDouble;
let home: Home;
const fifos: string[] = [];

const config = () => home.env.MXS_CONFIG_DIR!;
const sessionFile = (profile = 'default') => join(config(), 'sessions', `${profile}.json`);
const secretFile = (profile = 'default') => join(config(), 'secrets', `${profile}.json`);

function mxs(args: string[], extra: { input?: string; env?: Record<string, string | undefined>; timeoutMs?: number } = {}): Promise<RunResult> {
  return runMxs(args, { input: extra.input, env: { MXS_PROFILE: undefined, ...home.env, ...extra.env }, timeoutMs: extra.timeoutMs });
}

/** The set-up login, in this process (test/support/run-command.ts): the cases under test run the CLI. */
async function login(args: string[] = []): Promise<RunResult> {
  const r = await mxsInProcess(['login', hs.url, '-u', 'alice', '--password-stdin', '--json', ...args], { stdin: PW + '\n', env: home.env });
  expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: expect.any(String) });
  return r;
}

const logins = () => hs.requests.filter((q) => q.method === 'POST' && /\/login$/.test(q.path.split('?')[0]!)).length;

/** The contract's error shape: exit code, two lines on stderr, no "bug", no raw control characters. */
function expectError(r: RunResult, exitCode: number, ...mentions: (string | RegExp)[]): void {
  expect({ code: r.code, stderr: r.stderr }).toEqual({ code: exitCode, stderr: expect.any(String) });
  const lines = r.stderr.trimEnd().split('\n');
  expect(lines).toHaveLength(2);
  expect(r.stderr).not.toMatch(/Unexpected error|This is a bug/);
  expect(r.stderr.replace(/\n/g, '')).not.toMatch(/[\u0000-\u001f\u007f-\u009f]/);
  for (const m of mentions) expect(r.stderr).toMatch(typeof m === 'string' ? new RegExp(m.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')) : m);
}

afterEach(() => {
  // A reader stuck in a blocking open() of a FIFO: open the other end to let it go.
  for (const f of fifos.splice(0)) {
    try {
      closeSync(openSync(f, constants.O_WRONLY | constants.O_NONBLOCK));
    } catch {
      // nobody waiting
    }
  }
});
doublePerTest({ accessTokenLifetimeMs: 60_000 }, (d) => (hs = d));
homePerTest((h) => (home = h));

const PATHS: [string, Record<string, string>][] = [
  ['fast path', {}],
  ['oclif', { MXS_NO_FAST_PATH: '1' }],
];

// ---------------------------------------------------------------------------------------------

describe('profile names are never echoed raw (item 15)', () => {
  it.each(PATHS)('%s: `status -p $"a\\nb"` is a two-line usage error (exit 2) that shows the name escaped', async (_p, env) => {
    const r = await mxs(['status', '-p', 'a\nb'], { env });
    expectError(r, 2, 'a\\nb');
  });

  it.each(PATHS)('%s: an escape sequence in MXS_PROFILE reaches neither stderr nor the --json error raw', async (_p, env) => {
    const r = await mxs(['token', '--json'], { env: { ...env, MXS_PROFILE: 'x\u001b]0;pwned\u0007\u001b[2J' } });
    expectError(r, 2, '\\x1b]0;pwned\\x07');
    expect(r.stdout).not.toMatch(/\u001b|\u0007/);
    expect(r.json()).toMatchObject({ error: { code: 'usage', exitCode: 2 } });
  });
});

describe('duration flags are bounded (item 16)', () => {
  it('`whoami --timeout 1000h` is refused (exit 2, naming the flag and 1h): no TimeoutOverflowWarning, no request', async () => {
    await login();
    const before = hs.requests.length;
    const r = await mxs(['whoami', '--timeout', '1000h']);
    expectError(r, 2, '--timeout', '1h');
    expect(r.stderr).not.toContain('TimeoutOverflowWarning');
    expect(hs.requests.length).toBe(before);
  });

  it.each([
    [['status', '--timeout', '2h'], '--timeout', '1h'],
    [['token', '--min-valid', '2d'], '--min-valid', '1d'],
    [['refresh', '--lifetime', '400d'], '--lifetime', '366d'],
  ])('%j is refused with exit 2 naming %s and its maximum %s', async (args, flag, max) => {
    await login();
    const refreshes = hs.count('/refresh');
    const r = await mxs(args);
    expectError(r, 2, flag, max);
    expect(hs.count('/refresh')).toBe(refreshes);
  });

  it('MXS_TIMEOUT=1000h is refused the same way', async () => {
    const r = await mxs(['status'], { env: { MXS_TIMEOUT: '1000h' } });
    expectError(r, 2, '--timeout', '1h');
  });
});

describe('non-regular files planted as state (item 13)', () => {
  const plantFifo = (path: string) => {
    spawnSync('rm', ['-f', path]);
    expect(spawnSync('mkfifo', ['-m', '600', path]).status).toBe(0);
    fifos.push(path);
  };

  it.each([['status'], ['token'], ['status', '--all'], ['refresh']])('a FIFO as the sessions file: `mxs %s` is exit 6 at once, naming the file (it used to hang)', async (...args) => {
    await mkdir(join(config(), 'sessions'), { recursive: true, mode: 0o700 });
    plantFifo(sessionFile());
    const r = await mxs(args, { timeoutMs: 15_000 });
    expect(r.signal).toBeNull(); // not killed by the runner's timeout
    expectError(r, 6, sessionFile(), /FIFO|named pipe/);
    expect(r.ms).toBeLessThan(10_000);
  });

  it.each([['token'], ['refresh'], ['whoami']])('a FIFO as the secrets file: `mxs %s` is exit 6 at once, naming the file', async (...args) => {
    await login();
    plantFifo(secretFile());
    const r = await mxs(args, { timeoutMs: 15_000 });
    expect(r.signal).toBeNull();
    expectError(r, 6, secretFile());
    expect(hs.count('/refresh')).toBe(0);
  });

  it('a symlink to /dev/zero as the sessions file: exit 6 at once, no endless read', async () => {
    await mkdir(join(config(), 'sessions'), { recursive: true, mode: 0o700 });
    await symlink('/dev/zero', sessionFile());
    const r = await mxs(['status'], { timeoutMs: 15_000 });
    expectError(r, 6, sessionFile(), 'not a regular file');
    expect(r.ms).toBeLessThan(10_000);
  });
});

// ---------------------------------------------------------------------------------------------

describe('file-system failures while creating or writing state (item 12)', () => {
  const broken: [string, () => Promise<string>][] = [
    [
      'the config dir’s parent is a regular file (ENOTDIR)',
      async () => {
        await writeFile(join(home.dir, 'file'), 'x');
        home.env.MXS_CONFIG_DIR = join(home.dir, 'file', 'config');
        return join(home.dir, 'file');
      },
    ],
    [
      'the config dir is a dangling symlink',
      async () => {
        await symlink(join(home.dir, 'gone'), join(home.dir, 'link'));
        home.env.MXS_CONFIG_DIR = join(home.dir, 'link');
        return join(home.dir, 'link');
      },
    ],
  ];

  it.each(broken)('%s: login fails with exit 6 naming the path, before the password is sent', async (_case, breakIt) => {
    const culprit = await breakIt();
    const r = await mxs(['login', hs.url, '-u', 'alice', '--password-stdin'], { input: PW + '\n' });
    expectError(r, 6, culprit, 'MXS_CONFIG_DIR');
    expect(logins()).toBe(0);
    expect(hs.sessions()).toHaveLength(0);
  });

  it.each(broken)('%s: status is exit 6 naming the path (not "not logged in", not a bug)', async (_case, breakIt) => {
    const culprit = await breakIt();
    expectError(await mxs(['status']), 6, culprit);
  });

  it('a regular file where the locks directory belongs (EEXIST): refresh is exit 6 naming it, the session untouched', async () => {
    await login();
    const before = await readFile(secretFile(), 'utf8');
    await rm(join(config(), 'locks'), { recursive: true, force: true });
    await writeFile(join(config(), 'locks'), 'in the way');
    const r = await mxs(['refresh']);
    expectError(r, 6, join(config(), 'locks'), 'where mxs needs a directory');
    expect(hs.count('/refresh')).toBe(0);
    expect(await readFile(secretFile(), 'utf8')).toBe(before);
  });

  it('a regular file where the locks directory belongs: login fails up front (exit 6), before the password is sent', async () => {
    await mkdir(config(), { recursive: true });
    await writeFile(join(config(), 'locks'), 'in the way');
    const r = await mxs(['login', hs.url, '-u', 'alice', '--password-stdin'], { input: PW + '\n' });
    expectError(r, 6, join(config(), 'locks'));
    expect(logins()).toBe(0);
  });

  // Real read-only and full file systems, in a private mount namespace.
  const mountReason = (() => {
    if (process.platform !== 'linux') return 'mount namespaces are Linux-only';
    const r = spawnSync('unshare', ['-m', 'sh', '-c', 'd=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs "$d" && umount "$d"; rc=$?; rmdir "$d"; exit $rc'], { encoding: 'utf8' });
    return r.status === 0 ? null : `cannot mount in a private mount namespace (unshare -m as root): ${(r.stderr || r.error?.message || '').trim()}`;
  })();
  const withMounts = (name: string, fn: () => Promise<void>, timeout?: number) =>
    it(name, async () => {
      if (mountReason) {
        if (process.env.CI === 'true') throw new Error(`${mountReason} (CI=true: a missing capability fails the run)`);
        process.stderr.write(`skipped "${name}": ${mountReason}\n`);
        return;
      }
      await fn();
    }, timeout);

  /** Runs mxs in its own mount namespace, after `setup` (a shell snippet, with $CFG the config dir). */
  function mxsMounted(setup: string, args: string[], input = ''): Promise<RunResult> {
    const started = Date.now();
    const env = { ...process.env, NO_COLOR: '1', MXS_PROFILE: '', ...home.env, CFG: config(), DBUS_SESSION_BUS_ADDRESS: 'unix:path=/nonexistent/mxs-test-bus' };
    delete (env as Record<string, string | undefined>).MXS_PROFILE;
    const child = spawn('unshare', ['-m', 'sh', '-c', `set -e; ${setup}; exec "$0" "$@"`, process.execPath, BIN, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    return new Promise((resolve, reject) => {
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      child.on('error', reject);
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        resolve({ code, signal, stdout, stderr, ms: Date.now() - started, json: () => JSON.parse(stdout) });
      });
      child.stdin.on('error', () => {});
      child.stdin.end(input);
    });
  }

  const READ_ONLY = 'mount --bind "$CFG" "$CFG"; mount -o remount,ro,bind "$CFG"';
  // A 64 KiB tmpfs, filled to the last byte.
  const FULL = 'mount -t tmpfs -o size=64k,mode=700 tmpfs "$CFG"; dd if=/dev/zero of="$CFG/filler" bs=1k count=1024 2>/dev/null || true';
  const FULL_KEEPING_STATE =
    'mkdir -p /tmp/.mxs-keep; cp -a "$CFG/." /tmp/.mxs-keep/; ' + FULL.replace(/; dd .*/, '') + '; cp -a /tmp/.mxs-keep/. "$CFG/"; rm -rf /tmp/.mxs-keep; dd if=/dev/zero of="$CFG/filler" bs=1k count=1024 2>/dev/null || true';

  withMounts('a read-only config dir (EROFS): login is exit 6 before the password is sent', async () => {
    await mkdir(config(), { recursive: true, mode: 0o700 });
    const r = await mxsMounted(READ_ONLY, ['login', hs.url, '-u', 'alice', '--password-stdin'], PW + '\n');
    expectError(r, 6, config(), /read-only/);
    expect(logins()).toBe(0);
  });

  withMounts('a read-only config dir (EROFS): status still reads; refresh is exit 6 saying read-only, the session untouched', async () => {
    await login();
    const before = await readFile(secretFile(), 'utf8');
    const s = await mxsMounted(READ_ONLY, ['status', '--json']);
    expect({ code: s.code, stderr: s.stderr }).toEqual({ code: 0, stderr: '' });
    const r = await mxsMounted(READ_ONLY, ['refresh']);
    expectError(r, 6, /read-only/, config());
    expect(hs.count('/refresh')).toBe(0);
    expect(await readFile(secretFile(), 'utf8')).toBe(before);
  });

  withMounts('a read-only config dir (EROFS): logout --local is exit 6 saying read-only, nothing forgotten', async () => {
    await login();
    const before = await readFile(secretFile(), 'utf8');
    const r = await mxsMounted(READ_ONLY, ['logout', '--local']);
    expectError(r, 6, /read-only/, config());
    expect(await readFile(secretFile(), 'utf8')).toBe(before);
  });

  withMounts('a full config dir (ENOSPC): login is exit 6 before the password is sent', async () => {
    await mkdir(config(), { recursive: true, mode: 0o700 });
    const r = await mxsMounted(FULL, ['login', hs.url, '-u', 'alice', '--password-stdin'], PW + '\n');
    expectError(r, 6, /no space left/i, config());
    expect(logins()).toBe(0);
  });

  withMounts('a full config dir (ENOSPC): refresh is exit 6 saying so, before any refresh request', async () => {
    await login();
    const r = await mxsMounted(FULL_KEEPING_STATE, ['refresh']);
    expectError(r, 6, /no space left/i);
    expect(hs.count('/refresh')).toBe(0);
  });
});

// ---------------------------------------------------------------------------------------------

describe('a holder and a waiter with different clocks (item 14)', () => {

  it.each([
    ['the waiter’s clock is an hour ahead', [], ['-f', '+1h']],
    ['the holder’s clock is an hour behind', ['-f', '-1h'], []],
  ])('%s: the waiter does not take over the live holder’s lock: one refresh, both exit 0, the stored token valid', async (_case, holderClock, waiterClock) => {
    if (!haveFaketime()) {
      process.stderr.write('skipped: faketime is not installed (Debian: apt-get install faketime)\n');
      return;
    }
    await login();
    hs.inject(REFRESH, { delayMs: 8000 }); // the holder holds the lock for 8 s, longer than staleMs (6 s)
    // Each side under its own clock (`faketime -f OFFSET`, or the real one).
    const run = (clock: string[], args: string[]) =>
      runMxs(args, { env: { ...home.env, MXS_PROFILE: undefined }, faketime: clock.length ? clock[1] : undefined, timeoutMs: 40_000 });
    const holder = run(holderClock, ['refresh', '--json']);
    const deadline = Date.now() + 15_000;
    while (hs.count('/refresh') < 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(hs.count('/refresh')).toBe(1);
    const waiter = run(waiterClock, ['refresh', '--json']);
    const [h, w] = await Promise.all([holder, waiter]);
    expect({ holder: h.code, waiter: w.code, stderr: w.stderr.match(/Unexpected|bug/) }).toEqual({ holder: 0, waiter: 0, stderr: null });
    // One refresh: the waiter waited for the holder and reported its result, instead of refreshing
    // with the same refresh token at the same time (which would have revoked one of the two pairs).
    expect(hs.count('/refresh')).toBe(1);
    expect(hs.usedRefreshTokens).toHaveLength(1);
    const stored = JSON.parse(await readFile(secretFile(), 'utf8')).accessToken as string;
    expect(hs.accessTokenStatus(stored)).toBe('valid');
  }, 60_000);
});
