// `mxs exec` as a real process: against the homeserver double (environment, exit codes and signals passed
// through, --keep-fresh with short-lived tokens, session death, a command that ignores SIGTERM, usage and
// hostile input), then --keep-fresh against the real legacy Synapse and the real OAuth homeserver.
//
// The command under mxs is a `node -e` script (process.execPath, so no PATH lookup) that prints what it
// sees as JSON lines on stdout; tests wait for those lines while mxs runs, and then check mxs's exit code,
// its stderr, the stored session and what the server saw.
import { randomBytes } from 'node:crypto';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { homesForSuite, type Home, type RunResult } from '../support/cli.js';
import { exists, startMxs, useIsolatedBuild, waitFor, type Started } from '../support/fault-kit.js';
import { startHomeserverDouble, type HomeserverDouble } from '../support/homeserver-double.js';
import { describeWithOAuthHomeserver, oauthHomeserverFromEnv, type OAuthHomeserverHandle } from '../support/oauth-homeserver.js';
import { describeWithSynapse, freshSynapseUser, testSynapseUrl } from '../support/synapse.js';

const NODE = process.execPath;
const PW = 'alice-pw';

interface Secret {
  accessToken: string;
  refreshToken: string | null;
  issuedAt: string;
  expiresAt: string | null;
}

// Other engineers rebuild dist/ while suites run: spawn a private copy of the build (fault-kit).
useIsolatedBuild();

const newHome = homesForSuite();

/** A running mxs whose stdout is collected as it comes; `lines()` are the child's JSON lines. */
interface Running extends Started {
  stdout(): string;
  lines(): any[];
  /** Waits for the n-th JSON line (1-based) matching `pred`, and returns it. */
  line(pred: (l: any) => boolean, n?: number, timeoutMs?: number): Promise<any>;
}

function spawnMxs(home: Home, args: string[], opts: { env?: Record<string, string | undefined>; input?: string } = {}): Running {
  const run = startMxs(args, { env: { ...home.env, ...opts.env }, input: opts.input, timeoutMs: 90_000 });
  let text = '';
  run.child.stdout!.on('data', (d) => (text += d));
  const lines = () =>
    text
      .split('\n')
      .filter((l) => l.startsWith('{"'))
      .map((l) => JSON.parse(l));
  return {
    ...run,
    stdout: () => text,
    lines,
    async line(pred, n = 1, timeoutMs = 30_000) {
      await waitFor(`line ${n} matching ${pred} on stdout (so far: ${text})`, () => lines().filter(pred).length >= n, timeoutMs, 20);
      return lines().filter(pred)[n - 1];
    },
  };
}

const run = (home: Home, args: string[], opts: { env?: Record<string, string | undefined>; input?: string } = {}): Promise<RunResult> =>
  spawnMxs(home, args, opts).done;

const secretOf = async (home: Home, profile = 'default'): Promise<Secret> =>
  JSON.parse(await readFile(join(home.env.MXS_CONFIG_DIR!, 'secrets', `${profile}.json`), 'utf8'));
const recordOf = async (home: Home, profile = 'default') => JSON.parse(await readFile(join(home.env.MXS_CONFIG_DIR!, 'sessions', `${profile}.json`), 'utf8'));
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

// ---------------------------------------------------------------------------------------------------------------
// The commands run under mxs

/** Prints the session variables as one JSON line. */
const PRINT_ENV = `
const names = ['MATRIX_HOMESERVER', 'MATRIX_USER_ID', 'MATRIX_DEVICE_ID', 'MATRIX_ACCESS_TOKEN', 'MXS_PROFILE', 'MXS_EXPIRES_AT', 'MXS_TOKEN_FILE'];
console.log(JSON.stringify(Object.fromEntries(names.map((n) => [n, process.env[n] ?? null]))));`;

/**
 * Reports `{event: 'ready', pid, file, ...}` and then, on every SIGHUP, reads the token file, calls whoami with
 * it and reports `{event: 'hup', token, status, body, mode}`; exits 0 after `hups` of them. Signals in `report`
 * are reported ({event: 'signal', name}) and then end it with exit code `exitOnSignal` (unless null: ignored).
 */
function keepFreshChild(opts: { hups?: number; report?: string[]; exitOnSignal?: number | null } = {}): string {
  return `
const fs = require('fs');
const path = require('path');
const file = process.env.MXS_TOKEN_FILE;
const say = (o) => console.log(JSON.stringify(o));
const modeOf = (p) => fs.statSync(p).mode & 0o777;
let hups = 0;
process.on('SIGHUP', async () => {
  const token = fs.readFileSync(file, 'utf8');
  const mode = modeOf(file);
  const r = await fetch(process.env.MATRIX_HOMESERVER + '/_matrix/client/v3/account/whoami', { headers: { authorization: 'Bearer ' + token } });
  say({ event: 'hup', token, mode, status: r.status, body: await r.json() });
  if (++hups === ${opts.hups ?? 2}) process.exit(0);
});
for (const name of ${JSON.stringify(opts.report ?? [])}) {
  process.on(name, () => {
    say({ event: 'signal', name });
    ${opts.exitOnSignal === null ? '' : `process.exit(${opts.exitOnSignal ?? 0});`}
  });
}
say({ event: 'ready', pid: process.pid, file, token: file && fs.readFileSync(file, 'utf8'), env: process.env.MATRIX_ACCESS_TOKEN,
  mode: file && modeOf(file), dirMode: file && modeOf(path.dirname(file)) });
setInterval(() => {}, 1000);`;
}

/** Reports ready, then reports each of `names` it receives and exits with `code`. */
const signalChild = (names: string[], code: number) => `
for (const name of ${JSON.stringify(names)}) process.on(name, () => { console.log(JSON.stringify({ event: 'signal', name })); process.exit(${code}); });
console.log(JSON.stringify({ event: 'ready', pid: process.pid }));
setInterval(() => {}, 1000);`;

const ready = (l: any) => l.event === 'ready';
const hup = (l: any) => l.event === 'hup';

// ---------------------------------------------------------------------------------------------------------------

describe('mxs exec against the homeserver double', () => {
  let hs: HomeserverDouble;
  let home: Home;
  const start = async (opts: Parameters<typeof startHomeserverDouble>[0] = {}) => {
    hs = await startHomeserverDouble(opts);
  };
  beforeEach(async () => {
    home = await newHome();
  });
  afterEach(async () => {
    await hs?.close();
  });

  async function login(args: string[] = []) {
    const r = await run(home, ['login', hs.url, '-u', 'alice', '--password-stdin', '--json', ...args], { input: `${PW}\n` });
    expect({ code: r.code, stdout: r.stdout }).toEqual({ code: 0, stdout: expect.stringContaining('"userId"') });
    return r.json();
  }

  describe('the environment', () => {
    it('gives the command the session (MATRIX_*, MXS_PROFILE, MXS_EXPIRES_AT), drops an inherited MXS_TOKEN_FILE, and prints nothing of its own', async () => {
      await start({ accessTokenLifetimeMs: 120_000 });
      await login();
      const r = await run(home, ['exec', '--', NODE, '-e', PRINT_ENV], { env: { MXS_TOKEN_FILE: '/tmp/stale-from-an-outer-run' } });
      const secret = await secretOf(home);
      const record = await recordOf(home);
      expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
      expect(r.stdout).toBe(
        JSON.stringify({
          MATRIX_HOMESERVER: hs.url,
          MATRIX_USER_ID: '@alice:localhost',
          MATRIX_DEVICE_ID: record.deviceId,
          MATRIX_ACCESS_TOKEN: secret.accessToken,
          MXS_PROFILE: 'default',
          MXS_EXPIRES_AT: secret.expiresAt,
          MXS_TOKEN_FILE: null,
        }) + '\n',
      );
      expect(secret.expiresAt).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      expect(hs.count('/refresh')).toBe(0); // 2 minutes left: nothing to refresh
    });

    it('names the profile in use (--profile), and leaves MXS_EXPIRES_AT empty for a token that never expires', async () => {
      await start({ accessTokenLifetimeMs: 120_000 });
      await login(['--profile', 'work', '--no-refresh']);
      const r = await run(home, ['exec', '--profile', 'work', '--', NODE, '-e', PRINT_ENV]);
      expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
      expect(JSON.parse(r.stdout)).toMatchObject({ MXS_PROFILE: 'work', MXS_EXPIRES_AT: '', MATRIX_ACCESS_TOKEN: (await secretOf(home, 'work')).accessToken });
    });

    it('refreshes a token with less than --min-valid left before the command starts, and the command\'s token works', async () => {
      await start({ accessTokenLifetimeMs: 1500 });
      await login();
      const before = await secretOf(home);
      await sleep(Date.parse(before.expiresAt!) - Date.now() + 100); // expired
      const child = `fetch(process.env.MATRIX_HOMESERVER + '/_matrix/client/v3/account/whoami', { headers: { authorization: 'Bearer ' + process.env.MATRIX_ACCESS_TOKEN } })
        .then(async (r) => console.log(JSON.stringify({ status: r.status, token: process.env.MATRIX_ACCESS_TOKEN })))`;
      const r = await run(home, ['exec', '--', NODE, '-e', child]);
      expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
      const after = await secretOf(home);
      expect(after.accessToken).not.toBe(before.accessToken);
      expect(JSON.parse(r.stdout)).toEqual({ status: 200, token: after.accessToken });
      expect(hs.count('/refresh')).toBe(1);
    });

    it('passes standard input through to the command', async () => {
      await start();
      await login();
      const r = await run(home, ['exec', '--', NODE, '-e', 'process.stdin.pipe(process.stdout)'], { input: 'line one\nline two\n' });
      expect(r).toMatchObject({ code: 0, stdout: 'line one\nline two\n', stderr: '' });
    });
  });

  describe('exit codes and signals', () => {
    it.each([
      ['exits 0: mxs exits 0', 'process.exit(0)', 0],
      ['exits 3: mxs exits 3 (and says nothing of its own)', 'process.exit(3)', 3],
      ['exits 255: mxs exits 255', 'process.exit(255)', 255],
      ['kills itself with SIGTERM: mxs exits 143 (128+15)', "process.kill(process.pid, 'SIGTERM')", 143],
      ['kills itself with SIGKILL: mxs exits 137 (128+9)', "process.kill(process.pid, 'SIGKILL')", 137],
    ])('a command that %s', async (_name, script, code) => {
      await start();
      await login();
      const r = await run(home, ['exec', '--', NODE, '-e', `${script}; setInterval(() => {}, 1000)`]);
      expect({ code: r.code, stdout: r.stdout, stderr: r.stderr }).toEqual({ code, stdout: '', stderr: '' });
    });

    it.each(['SIGINT', 'SIGTERM', 'SIGHUP'] as const)('%s sent to mxs reaches the command, and the command\'s exit code is mxs\'s', async (signal) => {
      await start();
      await login();
      const mxs = spawnMxs(home, ['exec', '--', NODE, '-e', signalChild([signal], 7)]);
      await mxs.line(ready);
      mxs.child.kill(signal);
      const r = await mxs.done;
      expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 7, stderr: '' });
      expect(mxs.lines()).toEqual([{ event: 'ready', pid: expect.any(Number) }, { event: 'signal', name: signal }]);
    });

    it.each([
      ['SIGINT', 130],
      ['SIGTERM', 143],
    ] as const)('%s sent to mxs ends a command that does not handle it: mxs exits %i', async (signal, code) => {
      await start();
      await login();
      const mxs = spawnMxs(home, ['exec', '--', NODE, '-e', signalChild([], 0)]);
      const { pid } = await mxs.line(ready);
      mxs.child.kill(signal);
      const r = await mxs.done;
      expect({ code: r.code, stderr: r.stderr }).toEqual({ code, stderr: '' });
      expect(alive(pid)).toBe(false);
    });
  });

  describe('--keep-fresh', () => {
    it('keeps the token file current across refreshes of a short-lived token, signalling the command after each; the file is 0600 in a 0700 dir and gone after exit', async () => {
      await start({ accessTokenLifetimeMs: 2000 });
      await login();
      const mxs = spawnMxs(home, ['exec', '--keep-fresh', '--signal', 'HUP', '--', NODE, '-e', keepFreshChild({ hups: 2 })]);
      const start0 = await mxs.line(ready);
      const r = await mxs.done;
      expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });

      const [first, second] = mxs.lines().filter(hup);
      // The file held the token the command started with, then each refreshed one, each working on the server.
      expect(start0).toMatchObject({ mode: 0o600, dirMode: 0o700, token: start0.env });
      expect(start0.file).toMatch(/\/mxs-exec-[^/]+\/token$/);
      expect(first).toMatchObject({ status: 200, mode: 0o600, body: { user_id: '@alice:localhost' } });
      expect(second).toMatchObject({ status: 200, mode: 0o600, body: { user_id: '@alice:localhost' } });
      expect(new Set([start0.token, first.token, second.token]).size).toBe(3);
      // What the server saw: one refresh per token, each refresh token used once, and the last token is the stored one.
      expect(hs.count('/refresh')).toBeGreaterThanOrEqual(2);
      expect(new Set(hs.usedRefreshTokens).size).toBe(hs.usedRefreshTokens.length);
      expect((await secretOf(home)).accessToken).toBe(second.token);
      expect(await exists(start0.file)).toBe(false);
      expect(await exists(join(start0.file, '..'))).toBe(false);
    });

    it('picks up a token another mxs process refreshed: rewrites the file and signals, without refreshing itself', async () => {
      await start({ accessTokenLifetimeMs: 120_000 });
      await login();
      const mxs = spawnMxs(home, ['exec', '--keep-fresh', '--signal', 'HUP', '--', NODE, '-e', keepFreshChild({ hups: 1 })]);
      const started = await mxs.line(ready);
      const refreshed = await run(home, ['refresh']);
      expect(refreshed.code).toBe(0);
      const got = await mxs.line(hup, 1, 10_000);
      const r = await mxs.done;
      expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
      const stored = await secretOf(home);
      expect(got).toMatchObject({ token: stored.accessToken, status: 200 });
      expect(got.token).not.toBe(started.token);
      expect(hs.count('/refresh')).toBe(1); // mxs refresh's; none from exec (2 minutes left)
    });

    it.each([
      ['mxs gets SIGTERM (passed on, the command dies of it: exit 143)', 'mxs', 143],
      ['the command is killed from outside (SIGKILL: exit 137)', 'command', 137],
    ] as const)('removes the token file when %s', async (_name, target, code) => {
      await start({ accessTokenLifetimeMs: 120_000 });
      await login();
      const mxs = spawnMxs(home, ['exec', '--keep-fresh', '--', NODE, '-e', keepFreshChild()]);
      const { pid, file } = await mxs.line(ready);
      expect(await exists(file)).toBe(true);
      if (target === 'mxs') mxs.child.kill('SIGTERM');
      else process.kill(pid, 'SIGKILL');
      const r = await mxs.done;
      expect({ code: r.code, stderr: r.stderr }).toEqual({ code, stderr: '' });
      expect(await exists(join(file, '..'))).toBe(false);
      expect(alive(pid)).toBe(false);
    });

    it.each([
      ['its tokens are revoked', (d: HomeserverDouble) => d.revokeAll(), 'M_UNKNOWN_TOKEN'],
      ['its refresh token expires', (d: HomeserverDouble) => d.expireRefreshTokens(), 'M_FORBIDDEN'],
    ])('when the session dies (%s), the command gets SIGTERM and mxs exits 4 once it has ended', async (_name, kill, errcode) => {
      await start({ accessTokenLifetimeMs: 2000 });
      await login();
      const mxs = spawnMxs(home, ['exec', '--keep-fresh', '--json', '--', NODE, '-e', keepFreshChild({ report: ['SIGTERM'], exitOnSignal: 0 })]);
      const { file, pid } = await mxs.line(ready);
      kill(hs);
      const r = await mxs.done;
      expect(r.code).toBe(4);
      expect(mxs.lines().filter((l) => l.event === 'signal')).toEqual([{ event: 'signal', name: 'SIGTERM' }]);
      const lines = r.stderr.trim().split('\n');
      expect(lines).toEqual([
        expect.stringMatching(/^Error: The session of profile "default" has ended: the server refused its refresh token.* The command was stopped \(SIGTERM\)\.$/),
        `Run: mxs login ${hs.url}`,
      ]);
      expect(r.stdout).toContain(`"code": "${errcode}"`); // --json: the error object after the command's output
      expect(await recordOf(home)).toMatchObject({ refreshable: false });
      expect(await exists(join(file, '..'))).toBe(false);
      expect(alive(pid)).toBe(false);
    });

    it('a command that ignores SIGTERM gets SIGKILL after the grace period (MXS_EXEC_KILL_GRACE_MS), then mxs exits 4', async () => {
      await start({ accessTokenLifetimeMs: 2000 });
      await login();
      const mxs = spawnMxs(home, ['exec', '--keep-fresh', '--', NODE, '-e', keepFreshChild({ report: ['SIGTERM'], exitOnSignal: null })], {
        env: { MXS_EXEC_KILL_GRACE_MS: '1000' },
      });
      const { pid, file } = await mxs.line(ready);
      hs.revokeAll();
      await mxs.line((l) => l.event === 'signal');
      const termAt = Date.now();
      const r = await mxs.done;
      expect(Date.now() - termAt).toBeGreaterThanOrEqual(900);
      expect(r.code).toBe(4);
      expect(r.stderr).toContain('mxs: the command ignored SIGTERM for 1s: sending SIGKILL.');
      expect(r.stderr).toMatch(/has ended: .* The command was stopped \(SIGTERM, then SIGKILL after 1s\)\.\n/);
      expect(alive(pid)).toBe(false);
      expect(await exists(join(file, '..'))).toBe(false);
    });

    it('puts no token in any argv: neither mxs\'s nor the command\'s /proc/PID/cmdline holds one; only the command\'s environment does', async () => {
      await start({ accessTokenLifetimeMs: 120_000 });
      await login();
      const mxs = spawnMxs(home, ['exec', '--keep-fresh', '--', NODE, '-e', keepFreshChild()]);
      const { pid } = await mxs.line(ready);
      const secret = await secretOf(home);
      const read = (p: number, f: string) => readFile(`/proc/${p}/${f}`, 'latin1');
      const [mxsArgv, mxsEnv, childArgv, childEnv] = await Promise.all([read(mxs.child.pid!, 'cmdline'), read(mxs.child.pid!, 'environ'), read(pid, 'cmdline'), read(pid, 'environ')]);
      for (const text of [mxsArgv, mxsEnv, childArgv]) {
        expect(text).not.toContain(secret.accessToken);
        expect(text).not.toContain(secret.refreshToken!);
      }
      expect(childEnv).toContain(`MATRIX_ACCESS_TOKEN=${secret.accessToken}\0`);
      expect(childEnv).not.toContain(secret.refreshToken!);
      process.kill(pid, 'SIGTERM');
      const r = await mxs.done;
      expect(r.code).toBe(143);
      expect(r.stderr).toBe('');
    });
  });

  describe('failures before the command starts, and hostile input', () => {
    /** A command that leaves a mark when it runs. */
    const marking = () => {
      const mark = join(home.dir, `ran-${randomBytes(4).toString('hex')}`);
      return { mark, argv: [NODE, '-e', `require('fs').writeFileSync(${JSON.stringify(mark)}, 'ran')`] };
    };

    it.each([
      ['no command after --', [] as string[], ['--'], /^Error: No command to run after --\.$/],
      ['no -- at all', [], [], /^Error: No command to run after --\.$/],
      ['the command without -- before it', [], ['CMD'], /^Error: mxs exec takes its own flags before -- and the command after it\.$/],
      ['--signal without --keep-fresh', ['--signal', 'HUP'], ['--', 'CMD'], /^Error: --signal is sent after each refresh, which only --keep-fresh does\.$/],
      ['an unknown signal', ['--keep-fresh', '--signal', 'NOPE'], ['--', 'CMD'], /^Error: Unknown signal "NOPE" for --signal\.$/],
      ['a malformed --min-valid', ['--min-valid', 'soon'], ['--', 'CMD'], /^Error: Invalid --min-valid "soon"/],
    ])('%s: usage error (exit 2), two lines, nothing run', async (_name, flags, rest, message) => {
      await start();
      await login();
      const { mark, argv } = marking();
      const r = await run(home, ['exec', ...flags, ...rest.flatMap((a) => (a === 'CMD' ? argv : [a]))]);
      expect({ code: r.code, stdout: r.stdout }).toEqual({ code: 2, stdout: '' });
      const lines = r.stderr.trim().split('\n');
      expect(lines).toHaveLength(2);
      expect(lines[0]).toMatch(message);
      expect(await exists(mark)).toBe(false);
    });

    it('does not echo a secret-looking flag put before the command without --', async () => {
      await start();
      const r = await run(home, ['exec', 'curl', '-H', 'Authorization: Bearer syt_hunter2', '--token=syt_hunter2']);
      expect(r.code).toBe(2);
      expect(r.stdout + r.stderr).not.toContain('hunter2');
    });

    it('not logged in: exit 4, the message says the command was not started (also under --json), nothing run', async () => {
      await start();
      const { mark, argv } = marking();
      const r = await run(home, ['exec', '--json', '--', ...argv]);
      expect(r.code).toBe(4);
      expect(r.stderr.split('\n')[0]).toBe('Error: Not logged in (profile "default"). The command was not started.');
      expect(r.json()).toEqual({ error: { code: 'not_logged_in', message: 'Not logged in (profile "default"). The command was not started.', exitCode: 4 } });
      expect(await exists(mark)).toBe(false);
    });

    it('an expired token that cannot be refreshed (server down): exit 3, not started, the stored session untouched', async () => {
      await start({ accessTokenLifetimeMs: 1000 });
      await login();
      const before = await secretOf(home);
      await sleep(Date.parse(before.expiresAt!) - Date.now() + 50);
      await hs.close();
      const { mark, argv } = marking();
      const r = await run(home, ['exec', '--timeout', '2s', '--', ...argv]);
      expect(r.code).toBe(3);
      expect(r.stderr.split('\n')[0]).toMatch(/ The command was not started\.$/);
      expect(await secretOf(home)).toEqual(before);
      expect(await exists(mark)).toBe(false);
    });

    it.each([
      ['a command that is not found', 'no-such-command-mxs-test', 127, 'mxs: no-such-command-mxs-test: command not found'],
      ['a name with control characters (escaped, never sent to the terminal)', 'evil\x1b[2J\x07name', 127, 'mxs: evil\\x1b[2J\\x07name: command not found'],
      ['an empty command name', '', 127, 'mxs: "": command not found'],
    ])('%s: exit 127 like a shell, with one line', async (_name, command, code, line) => {
      await start();
      await login();
      const r = await run(home, ['exec', '--keep-fresh', '--', command, 'arg']);
      expect(r).toMatchObject({ code, stdout: '', stderr: `${line}\n` });
    });

    it('a file that is not executable: exit 126 like a shell; --json adds the error object', async () => {
      await start();
      await login();
      const script = join(home.dir, 'not-executable.sh');
      await writeFile(script, '#!/bin/sh\necho hi\n');
      await chmod(script, 0o644);
      const r = await run(home, ['exec', '--json', '--', script]);
      expect(r.code).toBe(126);
      expect(r.stderr).toBe(`mxs: ${script}: cannot run it: permission denied\n`);
      expect(r.json()).toEqual({ error: { code: 'command_not_executable', message: `${script}: cannot run it: permission denied`, exitCode: 126 } });
    });
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Real servers: --keep-fresh across two refreshes of 6 s tokens, the command calling whoami with the file's token.

/** Runs `mxs exec --keep-fresh --signal HUP` until the command saw two refreshed tokens; checks them all on the server. */
async function keepFreshAcrossTwoRefreshes(home: Home, userId: string, deviceId: string) {
  const first = await secretOf(home);
  const mxs = spawnMxs(home, ['exec', '--keep-fresh', '--signal', 'HUP', '--', NODE, '-e', keepFreshChild({ hups: 2 })]);
  const started = await mxs.line(ready);
  const r = await mxs.done;
  expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
  const hups = mxs.lines().filter(hup);
  expect(hups).toHaveLength(2);
  for (const h of hups) expect(h).toMatchObject({ status: 200, mode: 0o600, body: { user_id: userId, device_id: deviceId } });
  expect(new Set([started.token, ...hups.map((h) => h.token)]).size).toBe(3);
  expect(started.token).toBe(first.accessToken);
  expect((await secretOf(home)).accessToken).toBe(hups[1].token);
  expect(await exists(join(started.file, '..'))).toBe(false);
}

describeWithSynapse('mxs exec --keep-fresh against the real legacy Synapse (6 s tokens)', () => {
  test('the command calls whoami with the token from MXS_TOKEN_FILE after each of two refreshes, and Synapse accepts each', async () => {
    const home = await newHome();
    // A user of its own: other files share this Synapse and count alice's devices.
    const { user, password, userId } = await freshSynapseUser('exec');
    const login = await run(home, ['login', testSynapseUrl(), '-u', user, '--password-stdin', '--json'], { input: `${password}\n` });
    expect({ code: login.code, stdout: login.stdout }).toEqual({ code: 0, stdout: expect.stringContaining('"deviceId"') });
    await keepFreshAcrossTwoRefreshes(home, userId, login.json().deviceId);
  });
});

describeWithOAuthHomeserver('mxs exec --keep-fresh against the real OAuth homeserver (Synapse delegating to oidc-provider, 6 s tokens)', () => {
  let hs: OAuthHomeserverHandle;
  beforeAll(() => {
    hs = oauthHomeserverFromEnv();
  });

  test('the command calls whoami with the token from MXS_TOKEN_FILE after each of two refreshes, and Synapse accepts each', async () => {
    const home = await newHome();
    // Log in as alice through --browser, playing the browser (see oauth-synapse.test.ts).
    const login = spawnMxs(home, ['login', hs.baseUrl, '--browser', '--user', 'alice', '--json'], { env: { MXS_NO_BROWSER: '1' } });
    let stderr = '';
    login.child.stderr!.on('data', (d) => (stderr += d));
    await waitFor('the authorization URL', () => /Open this URL in a browser to log in:\r?\n\s+http\S+/.test(stderr), 20_000, 20);
    const url = /Open this URL in a browser to log in:\r?\n\s+(http\S+)/.exec(stderr)![1]!;
    await hs.authorize(url, 'alice');
    const r = await login.done;
    expect(r.code).toBe(0);
    const { deviceId } = r.json();
    expect(Date.parse((await secretOf(home)).expiresAt!) - Date.parse((await secretOf(home)).issuedAt)).toBe(hs.accessTokenTTL * 1000);
    await keepFreshAcrossTwoRefreshes(home, '@alice:localhost', deviceId);
    const { grants } = await hs.grantCounts((await recordOf(home)).auth.clientId);
    expect(grants.refresh_token).toBeGreaterThanOrEqual(2);
  });
});
