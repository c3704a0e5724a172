// `mxs exec` as a service (src/services/exec.ts): a scripted command instead of a process, the unit world's
// clock (every wait moves it on at once), an undici MockAgent for the refresh endpoint, real files for the
// session and the token file.
import { readFile, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { describe, expect, it } from '@jest/globals';
import type { MxsError } from '../../src/errors.js';
import { execService, type ChildExit, type ChildLauncher, type ExecRequest, type StartedChild } from '../../src/services/exec.js';
import { HS, rejectionOf, replyJson, T0, worldPerTest, type UnitWorld } from '../support/unit-deps.js';

const V3 = '/_matrix/client/v3/refresh';
const SEC = 1000;
const MIN = 60_000;

let w: UnitWorld;
worldPerTest((made) => (w = made));

/**
 * A command that does what the test says when signalled. It records every signal with the clock at
 * that moment and, for SIGHUP, the token file's content then.
 */
class ScriptedChild implements StartedChild {
  pid = 4242;
  signals: NodeJS.Signals[] = [];
  seen: { signal: NodeJS.Signals; at: number; token?: string; mode?: number }[] = [];
  exited: Promise<ChildExit>;
  private end!: (exit: ChildExit) => void;
  private done = false;

  constructor(
    readonly env: NodeJS.ProcessEnv,
    private readonly onSignal: (signal: NodeJS.Signals, child: ScriptedChild) => void | Promise<void>,
  ) {
    this.exited = new Promise((resolve) => (this.end = resolve));
  }

  kill(signal: NodeJS.Signals): void {
    if (this.done) return;
    this.signals.push(signal);
    void this.onSignal(signal, this);
  }

  exit(exit: ChildExit): void {
    this.done = true;
    this.end(exit);
  }

  async readTokenFile(signal: NodeJS.Signals): Promise<void> {
    const file = this.env.MXS_TOKEN_FILE!;
    this.seen.push({ signal, at: w.clock.now(), token: await readFile(file, 'utf8'), mode: (await stat(file)).mode & 0o777 });
  }
}

interface Scripted {
  launcher: ChildLauncher;
  started: { command: string; args: string[] }[];
  child(): ScriptedChild;
  /** mxs receives `signal`. */
  receive(signal: NodeJS.Signals): void;
}

/** A launcher whose command runs `script` when started and `onSignal` when signalled (default: dies of it). */
function scripted(
  opts: {
    script?: (child: ScriptedChild) => void | Promise<void>;
    onSignal?: (signal: NodeJS.Signals, child: ScriptedChild) => void | Promise<void>;
    startError?: NodeJS.ErrnoException;
  } = {},
): Scripted {
  const started: { command: string; args: string[] }[] = [];
  let child: ScriptedChild | undefined;
  let forward: ((signal: NodeJS.Signals) => void) | undefined;
  // The unit clock runs as fast as the loop asks: it stands still until the command's script has run
  // (its file writes take real time), so that what the script does happens at the moment it says.
  let scriptDone: Promise<void> = new Promise(() => {});
  const sleep = w.deps.sleep;
  w.deps.sleep = async (ms, signal) => {
    await scriptDone;
    return sleep(ms, signal);
  };
  return {
    started,
    child: () => child!,
    receive: (signal) => forward!(signal),
    launcher: {
      async start(command, args, env) {
        started.push({ command, args });
        if (opts.startError) throw opts.startError;
        child = new ScriptedChild(env, opts.onSignal ?? ((signal, c) => c.exit({ code: null, signal })));
        scriptDone = Promise.resolve().then(() => opts.script?.(child!));
        return child;
      },
      onSignal(f) {
        forward = f;
        return () => {
          forward = undefined;
        };
      },
    },
  };
}

const request = (over: Partial<ExecRequest> = {}): ExecRequest => ({
  profile: 'default',
  command: 'job',
  args: ['--flag', 'value'],
  minValidMs: 60 * SEC,
  keepFresh: false,
  reloadSignal: null,
  baseEnv: { PATH: '/usr/bin', HOME: '/home/alice' },
  tokenDirParent: w.dir,
  killGraceMs: 10 * SEC,
  ...over,
});

/** The refresh endpoint answers once with a new token pair `n`, living `lifetimeMs`. */
const replyRefresh = (n: number, lifetimeMs = 5 * MIN) =>
  replyJson(w.agent, HS, 'POST', V3, 200, { access_token: `syt_access_${n}`, refresh_token: `syr_refresh_${n}`, expires_in_ms: lifetimeMs });
const refreshRequests = () => w.requests().filter((r) => r.path === V3);

describe('before the command starts', () => {
  it('gives the command the session in its environment, on top of mxs\'s own, and its argv as given', async () => {
    const { secret, record } = await w.seed();
    const s = scripted({ script: (c) => c.exit({ code: 0, signal: null }) });
    const result = await execService(request({ baseEnv: { PATH: '/usr/bin', MXS_TOKEN_FILE: '/outer/token', MATRIX_ACCESS_TOKEN: 'stale' } }), w.deps, s.launcher);
    expect(result).toEqual({ outcome: 'exited', exitCode: 0, signal: null, refreshes: 0 });
    expect(s.started).toEqual([{ command: 'job', args: ['--flag', 'value'] }]);
    expect(s.child().env).toEqual({
      PATH: '/usr/bin',
      MATRIX_HOMESERVER: HS,
      MATRIX_USER_ID: record.userId,
      MATRIX_DEVICE_ID: record.deviceId,
      MATRIX_ACCESS_TOKEN: secret.accessToken,
      MXS_PROFILE: 'default',
      MXS_EXPIRES_AT: secret.expiresAt,
    });
    expect(w.requests()).toEqual([]);
  });

  it('MXS_EXPIRES_AT is empty for a token that never expires', async () => {
    await w.seed({ lifetimeMs: null, refreshToken: null });
    const s = scripted({ script: (c) => c.exit({ code: 0, signal: null }) });
    await execService(request(), w.deps, s.launcher);
    expect(s.child().env.MXS_EXPIRES_AT).toBe('');
  });

  it.each([
    ['61 s left of 5 minutes: no refresh', 5 * MIN - 61 * SEC, 0],
    ['59 s left of 5 minutes: refreshed first', 5 * MIN - 59 * SEC, 1],
    ['expired: refreshed first', 6 * MIN, 1],
  ])('applies --min-valid 60s as `token` does (%s)', async (_name, elapsed, refreshes) => {
    await w.seed();
    w.clock.advance(elapsed);
    if (refreshes) replyRefresh(1);
    const s = scripted({ script: (c) => c.exit({ code: 0, signal: null }) });
    await execService(request(), w.deps, s.launcher);
    expect(refreshRequests()).toHaveLength(refreshes);
    expect(s.child().env.MATRIX_ACCESS_TOKEN).toBe(refreshes ? 'syt_access_1' : 'syt_old_access');
  });

  it('fails with the cause and "The command was not started." when the session is missing; nothing is started', async () => {
    const s = scripted();
    const err: MxsError = await rejectionOf(() => execService(request({ keepFresh: true }), w.deps, s.launcher));
    expect(err).toMatchObject({ exitCode: 4, code: 'not_logged_in', message: 'Not logged in (profile "default"). The command was not started.' });
    expect(s.started).toEqual([]);
  });

  it('a refresh refused before the start: exit 4, not started', async () => {
    await w.seed();
    w.clock.advance(6 * MIN);
    replyJson(w.agent, HS, 'POST', V3, 401, { errcode: 'M_UNKNOWN_TOKEN', error: 'refresh token does not exist' });
    const s = scripted();
    const err: MxsError = await rejectionOf(() => execService(request(), w.deps, s.launcher));
    expect(err.exitCode).toBe(4);
    expect(err.message).toMatch(/has ended: .* The command was not started\.$/);
    expect(s.started).toEqual([]);
  });

  it.each([
    ['ENOENT', 127, 'command_not_found', 'job: command not found'],
    ['EACCES', 126, 'command_not_executable', 'job: cannot run it: permission denied'],
  ])('a command that cannot start (%s) is answered like a shell (exit %i), and the token file is removed', async (code, exitCode, errcode, message) => {
    await w.seed();
    const s = scripted({ startError: Object.assign(new Error(code), { code }) });
    const result = await execService(request({ keepFresh: true }), w.deps, s.launcher);
    expect(result).toEqual({ outcome: 'not-started', exitCode, code: errcode, message });
    expect(await tokenDirs()).toEqual([]);
  });
});

describe('while the command runs', () => {
  it.each([
    ['exit code 0: mxs exits 0', { code: 0, signal: null }, 0],
    ['exit code 3: mxs exits 3', { code: 3, signal: null }, 3],
    ['SIGTERM: mxs exits 143 (128+15)', { code: null, signal: 'SIGTERM' }, 143],
    ['SIGKILL: mxs exits 137 (128+9)', { code: null, signal: 'SIGKILL' }, 137],
    ['SIGHUP: mxs exits 129 (128+1)', { code: null, signal: 'SIGHUP' }, 129],
  ] as const)('a command that ended with %s', async (_name, exit, code) => {
    await w.seed();
    const s = scripted({ script: (c) => c.exit(exit) });
    expect(await execService(request(), w.deps, s.launcher)).toMatchObject({ outcome: 'exited', exitCode: code });
  });

  it('passes on the signals mxs receives; the command\'s reaction decides the exit code', async () => {
    await w.seed();
    const s = scripted({
      script: () => {
        s.receive('SIGHUP');
        s.receive('SIGINT');
      },
      onSignal: (signal, c) => {
        if (signal === 'SIGINT') c.exit({ code: 0, signal: null });
      },
    });
    expect(await execService(request(), w.deps, s.launcher)).toMatchObject({ exitCode: 0 });
    expect(s.child().signals).toEqual(['SIGHUP', 'SIGINT']);
  });
});

/** The private directories exec made for token files that still exist. */
const tokenDirs = async () => (await import('node:fs/promises')).readdir(w.dir).then((names) => names.filter((n) => n.startsWith('mxs-exec-')));

describe('--keep-fresh', () => {
  it('refreshes when the token rule turns due (not before), rewrites the 0600 file, signals after each refresh, and removes the file at the end', async () => {
    await w.seed(); // a 5-minute token issued at T0: due 60 s before expiry
    replyRefresh(1);
    replyRefresh(2);
    const s = scripted({
      onSignal: async (signal, c) => {
        await c.readTokenFile(signal);
        if (c.seen.length === 2) c.exit({ code: 0, signal: null });
      },
    });
    const result = await execService(request({ keepFresh: true, reloadSignal: 'SIGHUP' }), w.deps, s.launcher);
    expect(result).toEqual({ outcome: 'exited', exitCode: 0, signal: null, refreshes: 2 });
    const file = s.child().env.MXS_TOKEN_FILE!;
    expect(file).toBe(`${w.dir}/${dirname(file).split('/').pop()}/token`);
    expect(s.child().seen).toEqual([
      { signal: 'SIGHUP', at: expect.any(Number), token: 'syt_access_1', mode: 0o600 },
      { signal: 'SIGHUP', at: expect.any(Number), token: 'syt_access_2', mode: 0o600 },
    ]);
    const [first, second] = s.child().seen;
    // Due once less than min(60 s, half the lifetime) is left: at 4 minutes, then 4 minutes after that.
    expect(first!.at - T0).toBeGreaterThanOrEqual(4 * MIN);
    expect(first!.at - T0).toBeLessThan(4 * MIN + 2 * SEC);
    expect(second!.at - first!.at).toBeGreaterThanOrEqual(4 * MIN - 2 * SEC);
    expect(second!.at - first!.at).toBeLessThan(4 * MIN + 2 * SEC);
    expect((await w.stored()).secret).toMatchObject({ accessToken: 'syt_access_2', refreshToken: 'syr_refresh_2' });
    expect(await tokenDirs()).toEqual([]);
  });

  it('without --signal, only the file changes', async () => {
    await w.seed();
    replyRefresh(1);
    const s = scripted({
      // The command watches its file (in real time, beside the loop) and ends once it holds the refreshed token.
      script: (c) =>
        void (async () => {
          for (;;) {
            await new Promise((r) => setTimeout(r, 5));
            if ((await readFile(c.env.MXS_TOKEN_FILE!, 'utf8').catch(() => '')) === 'syt_access_1') return c.exit({ code: 0, signal: null });
          }
        })(),
      onSignal: () => {},
    });
    expect(await execService(request({ keepFresh: true }), w.deps, s.launcher)).toMatchObject({ exitCode: 0, refreshes: 1 });
    expect(s.child().signals).toEqual([]);
  });

  it('picks up a token that another mxs process stored, without a request of its own', async () => {
    const { record, secret } = await w.seed();
    const s = scripted({
      script: async () => {
        // Another process refreshes a minute in: new secret, then the sessions file.
        w.clock.advance(MIN);
        const issuedAt = new Date(w.clock.now()).toISOString();
        const expiresAt = new Date(w.clock.now() + 5 * MIN).toISOString();
        await w.deps.secretStores.keychain.set('default', { ...secret, accessToken: 'syt_from_elsewhere', issuedAt, expiresAt });
        await w.deps.sessions.write({ ...record, issuedAt, expiresAt });
      },
      onSignal: async (signal, c) => {
        await c.readTokenFile(signal);
        c.exit({ code: 0, signal: null });
      },
    });
    const result = await execService(request({ keepFresh: true, reloadSignal: 'SIGUSR1' }), w.deps, s.launcher);
    expect(result).toMatchObject({ exitCode: 0, refreshes: 0 });
    expect(s.child().seen).toEqual([{ signal: 'SIGUSR1', at: expect.any(Number), token: 'syt_from_elsewhere', mode: 0o600 }]);
    expect(w.requests()).toEqual([]);
  });

  it('retries network trouble with growing waits while the command keeps its token, says so once, then carries on', async () => {
    await w.seed();
    w.agent.get(HS).intercept({ method: 'POST', path: V3 }).replyWithError(new Error('socket hang up')).times(6); // two refreshes' worth of attempts
    replyRefresh(1);
    const s = scripted({
      onSignal: async (signal, c) => {
        await c.readTokenFile(signal);
        c.exit({ code: 0, signal: null });
      },
    });
    const result = await execService(request({ keepFresh: true, reloadSignal: 'SIGHUP' }), w.deps, s.launcher);
    expect(result).toMatchObject({ exitCode: 0, refreshes: 1 });
    expect(s.child().signals).toEqual(['SIGHUP']);
    expect(s.child().seen[0]).toMatchObject({ token: 'syt_access_1' });
    expect(w.notices).toEqual([
      expect.stringMatching(/^could not refresh the access token of profile "default": [^;]*[^.]; the current token stays in use \(\d+s left\)\. Retrying\.$/),
      'the access token is fresh again.',
    ]);
    // Two failed refreshes (3 attempts each, the HTTP layer's), then one that worked: 1 s and 2 s apart,
    // well before the token expired.
    expect(refreshRequests()).toHaveLength(7);
    expect(s.child().seen[0]!.at - (T0 + 4 * MIN)).toBeGreaterThanOrEqual(3 * SEC);
    expect(s.child().seen[0]!.at - (T0 + 4 * MIN)).toBeLessThan(4 * SEC);
  });

  it.each([
    ['stops on SIGTERM', (signal: NodeJS.Signals, c: ScriptedChild) => c.exit({ code: null, signal }), ['SIGTERM'], 'SIGTERM'],
    [
      'ignores SIGTERM (SIGKILL after the grace period)',
      (signal: NodeJS.Signals, c: ScriptedChild) => {
        if (signal === 'SIGKILL') c.exit({ code: null, signal });
      },
      ['SIGTERM', 'SIGKILL'],
      'SIGTERM, then SIGKILL after 10s',
    ],
  ])('when the refresh is refused, a command that %s is stopped, and mxs fails with exit 4 and the reason', async (_name, onSignal, signals, how) => {
    await w.seed();
    replyJson(w.agent, HS, 'POST', V3, 403, { errcode: 'M_FORBIDDEN', error: 'The supplied refresh token has expired' });
    const s = scripted({ onSignal });
    const err: MxsError = await rejectionOf(() => execService(request({ keepFresh: true, reloadSignal: 'SIGHUP' }), w.deps, s.launcher));
    expect(err).toMatchObject({ exitCode: 4, code: 'M_FORBIDDEN' });
    expect(err.message).toBe(
      `The session of profile "default" has ended: the server refused its refresh token: The supplied refresh token has expired (M_FORBIDDEN). The command was stopped (${how}).`,
    );
    expect(s.child().signals).toEqual(signals);
    expect((await w.stored()).record).toMatchObject({ refreshable: false });
    expect(await tokenDirs()).toEqual([]);
  });

  it('a session without a refresh token: the command keeps its token until it expires, and is stopped then', async () => {
    await w.seed({ refreshToken: null });
    const s = scripted();
    const err: MxsError = await rejectionOf(() => execService(request({ keepFresh: true }), w.deps, s.launcher));
    expect(err).toMatchObject({ exitCode: 4, code: 'M_UNKNOWN_TOKEN' });
    expect(w.clock.now()).toBeGreaterThanOrEqual(T0 + 5 * MIN);
    expect(s.child().signals).toEqual(['SIGTERM']);
    expect(w.requests()).toEqual([]);
  });

  it.each([
    ['the profile was logged out', async () => w.deps.sessions.remove('default'), 'not_logged_in', /^Profile "default" was logged out while the command ran\. The command was stopped/],
    [
      'the profile now holds another device\'s session',
      async () => {
        const { record } = await w.stored();
        await w.deps.sessions.write({ ...record!, deviceId: 'OTHER' });
      },
      'not_logged_in',
      /^Profile "default" now holds another session \(@alice:example.org, device OTHER\)/,
    ],
  ])('when %s, the command is stopped and mxs fails with exit 4', async (_name, change, code, message) => {
    await w.seed();
    const s = scripted({ script: change });
    const err: MxsError = await rejectionOf(() => execService(request({ keepFresh: true }), w.deps, s.launcher));
    expect(err).toMatchObject({ exitCode: 4, code });
    expect(err.message).toMatch(message);
    expect(s.child().signals).toEqual(['SIGTERM']);
  });

  it('a token that never expires is written once and never refreshed', async () => {
    await w.seed({ lifetimeMs: null });
    const s = scripted({
      script: async (c) => {
        expect(await readFile(c.env.MXS_TOKEN_FILE!, 'utf8')).toBe('syt_old_access');
        c.exit({ code: 5, signal: null });
      },
    });
    expect(await execService(request({ keepFresh: true, reloadSignal: 'SIGHUP' }), w.deps, s.launcher)).toMatchObject({ exitCode: 5, refreshes: 0 });
    expect(w.sleeps).toEqual([]);
    expect(s.child().signals).toEqual([]);
    expect(await tokenDirs()).toEqual([]);
  });
});
