// Issue 5: every way the network, the server, the store and other processes can fail, run against
// the built CLI and the homeserver double. Each failure must exit with the contract's code, say what
// happened and what to do (two stderr lines), leave the stored session byte-identical, and leave it
// usable: the next run against a healthy server succeeds.
import { chmod, mkdir, readFile, rename, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startHomeserverDouble, type Fault, type HomeserverDouble } from '../support/homeserver-double.js';
import { doublePerTest, filesBelow, homePerTest, type Home, type RunResult } from '../support/cli.js';
import {
  exists,
  sessionPaths,
  snapshot,
  startCanaryProxy,
  startMxs,
  startProxy,
  useIsolatedBuild,
  waitFor,
  type Started,
  type StoredSession,
} from '../support/fault-kit.js';

const REFRESH = 'POST /_matrix/client/v3/refresh';
const WHOAMI = 'GET /_matrix/client/v3/account/whoami';
const PW = 'alice-pw';

let hs: HomeserverDouble;
let home: Home;
const closers: (() => Promise<unknown>)[] = [];
const children: Started[] = [];

const config = () => home.env.MXS_CONFIG_DIR!;
const paths = () => sessionPaths(config());

function mxs(args: string[], extra: { input?: string; env?: Record<string, string | undefined> } = {}) {
  return start(args, extra).done;
}

function start(args: string[], extra: { input?: string; env?: Record<string, string | undefined> } = {}) {
  const s = startMxs(args, { input: extra.input, env: { ...home.env, ...extra.env } });
  children.push(s);
  return s;
}

async function login(server = hs.url, password = PW, args: string[] = []) {
  const r = await mxs(['login', server, '-u', 'alice', '--password-stdin', '--json', ...args], { input: password + '\n' });
  expect(r.code).toBe(0);
  return r;
}

const readJson = async (p: string) => JSON.parse(await readFile(p, 'utf8'));

/** The stored token expired a while ago, locally and on the server. */
async function expireStored(): Promise<void> {
  const past = new Date(Date.now() - 5000).toISOString();
  const record = await readJson(paths().session);
  const secret = await readJson(paths().secret);
  await writeFile(paths().session, JSON.stringify({ ...record, expiresAt: past }, null, 2) + '\n');
  await writeFile(paths().secret, JSON.stringify({ ...secret, expiresAt: past }) + '\n', { mode: 0o600 });
  hs.expireAccessTokens();
}

async function expectUnchanged(before: StoredSession): Promise<void> {
  const after = await snapshot(config());
  expect(after.session.toString()).toBe(before.session.toString());
  expect(after.secret.toString()).toBe(before.secret.toString());
  expect(after.session.equals(before.session) && after.secret.equals(before.secret)).toBe(true);
}

/**
 * A healthy server: `mxs token` hands out a token the server accepts (refreshing it first when
 * expired), and `whoami` works. The fault matrix runs one of the two, whichever talks to the server.
 */
async function expectUsable(which: 'both' | 'token' | 'whoami' = 'both'): Promise<string> {
  let token: string = (await readJson(paths().secret)).accessToken;
  if (which !== 'whoami') {
    const t = await mxs(['token', '--min-valid', '30s']);
    expect({ code: t.code, stderr: t.stderr }).toEqual({ code: 0, stderr: '' });
    token = t.stdout.trim();
  }
  if (which !== 'token') {
    const w = await mxs(['whoami', '--json']);
    expect({ code: w.code, stderr: w.stderr }).toEqual({ code: 0, stderr: '' });
    expect(w.json().userId).toBe('@alice:localhost');
  }
  expect(hs.accessTokenStatus(token)).toBe('valid');
  return token;
}

/** One line saying what happened, one saying what to do; the same error as JSON on stdout. */
function expectFailure(r: RunResult, exitCode: number, code: string | RegExp, first: RegExp, hint: RegExp): void {
  const lines = r.stderr.trim().split('\n');
  expect({ exit: r.code, lines: lines.length }).toEqual({ exit: exitCode, lines: 2 });
  expect(lines[0]).toMatch(/^Error: /);
  expect(lines[0]).toMatch(first);
  expect(lines[1]).toMatch(hint);
  expect(r.stderr).not.toMatch(/\bat .+\.js:\d+/);
  const err = r.json().error;
  expect(err.exitCode).toBe(exitCode);
  expect(err.code).toMatch(code);
}

useIsolatedBuild();

afterEach(async () => {
  for (const c of children.splice(0)) if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill('SIGKILL');
  for (const close of closers.splice(0)) await close();
});
doublePerTest({ accessTokenLifetimeMs: 60_000 }, (d) => (hs = d));
homePerTest((h) => (home = h));

// ---------------------------------------------------------------------------------------------

// mode, command, the follow-up that proves the session usable (and talks to the server)
const MODES = [
  ['refresh', ['refresh', '--json'], 'whoami'],
  ['token on an expired session', ['token', '--min-valid', '30s', '--json'], 'token'],
] as const;

async function prepare(mode: string): Promise<StoredSession> {
  await login();
  if (mode !== 'refresh') await expireStored();
  return snapshot(config());
}

const RETRY_LATER = /retry/i;
const html502 = '<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n';
const GOOD = { access_token: 'syt_YWxpY2U_fakefakefakefakefake_000000', refresh_token: 'syr_YWxpY2U_fakefakefakefakefake_000000', expires_in_ms: 60000 };
const bad = (changes: Record<string, unknown>) => [{ json: { ...GOOD, ...changes } }];
const three = (f: Fault) => [f, f, f];

// name, faults on /refresh, refresh requests expected, error code, first line
const BAD_ANSWERS: [string, Fault[], number, string, RegExp][] = [
  ['HTTP 500 (three times)', three({ status: 500 }), 3, 'M_UNKNOWN', /Internal Server Error \(HTTP 500 M_UNKNOWN\)/],
  ['HTTP 502 with an HTML page (three times)', three({ status: 502, body: html502 }), 3, 'bad_response', /server error \(HTTP 502\)/],
  ['truncated JSON', [{ truncate: true }], 1, 'bad_response', /malformed JSON/],
  ['access_token: 5', bad({ access_token: 5 }), 1, 'bad_response', /no valid "access_token"/],
  ['expires_in_ms: "60000"', bad({ expires_in_ms: '60000' }), 1, 'bad_response', /invalid "expires_in_ms" \("60000"\)/],
  ['expires_in_ms: -1', bad({ expires_in_ms: -1 }), 1, 'bad_response', /invalid "expires_in_ms" \(-1\)/],
  ['expires_in_ms: 1.5', bad({ expires_in_ms: 1.5 }), 1, 'bad_response', /invalid "expires_in_ms" \(1\.5\)/],
  ['expires_in_ms: 1e15', bad({ expires_in_ms: 1e15 }), 1, 'bad_response', /invalid "expires_in_ms" \(1000000000000000\)/],
  ['no access_token', [{ json: { refresh_token: GOOD.refresh_token, expires_in_ms: 60000 } }], 1, 'bad_response', /no valid "access_token"/],
  ['an HTML page with 200 and text/html', [{ status: 200, body: '<html><body>Welcome to nginx!</body></html>', contentType: 'text/html' }], 1, 'bad_response', /HTTP 200 with text\/html instead of JSON/],
  ['a body over 1 MiB', [{ json: { ...GOOD, padding: 'x'.repeat(1024 * 1024 + 16) } }], 1, 'bad_response', /larger than 1024 KiB/],
];

describe.each(MODES)('a bad answer during %s', (mode, cmd, follow) => {
  it.each(BAD_ANSWERS)('%s: exit 3, session kept and usable', async (_name, faults, requests, code, first) => {
    const before = await prepare(mode);
    hs.inject(REFRESH, ...faults);
    const r = await mxs([...cmd]);
    expectFailure(r, 3, code, first, RETRY_LATER);
    expect(hs.count('/refresh')).toBe(requests);
    await expectUnchanged(before);
    await expectUsable(follow);
  });

  it('a 302 redirect to another host: exit 3, the other host never contacted', async () => {
    const other = await startHomeserverDouble();
    closers.push(() => other.close());
    const before = await prepare(mode);
    hs.inject(REFRESH, { status: 302, body: '', headers: { Location: `${other.url}/_matrix/client/v3/refresh` } });
    const r = await mxs([...cmd]);
    const otherHost = other.url.replace('http://', '');
    expectFailure(r, 3, 'bad_response', new RegExp(`redirected the request to ${otherHost.replace(/\./g, '\\.')} \\(HTTP 302\\)`), RETRY_LATER);
    expect(other.requests).toEqual([]);
    expect(hs.count('/refresh')).toBe(1);
    await expectUnchanged(before);
    await expectUsable(follow);
    expect(other.requests).toEqual([]);
  });

  it('a server that hangs past --timeout 1s: exit 3 within ~2s, no retry', async () => {
    const before = await prepare(mode);
    hs.inject(REFRESH, { delayMs: 8000 });
    const t0 = Date.now();
    const r = await mxs([...cmd, '--timeout', '1s']);
    expectFailure(r, 3, 'timeout', /did not answer within 1s\./, /--timeout/);
    // From the request reaching the server to the process exiting: the 1 s timeout plus a little.
    const sent = hs.requests.find((q) => q.path.endsWith('/refresh'))!.at;
    expect(t0 + r.ms - sent).toBeGreaterThanOrEqual(950);
    expect(t0 + r.ms - sent).toBeLessThan(2000);
    expect(hs.count('/refresh')).toBe(1);
    await expectUnchanged(before);
    await expectUsable(follow);
  });

  it('two connection resets, then success: retried, exit 0 with exactly 3 refresh requests', async () => {
    await prepare(mode);
    const oldRt = (await readJson(paths().secret)).refreshToken;
    hs.inject(REFRESH, { reset: true }, { reset: true });
    const r = await mxs([...cmd]);
    expect({ code: r.code, stderr: r.stderr }).toMatchObject({ code: 0 });
    expect(hs.count('/refresh')).toBe(3);
    expect(hs.usedRefreshTokens).toEqual([oldRt]); // the two reset attempts never reached the handler
    const secret = await readJson(paths().secret);
    expect(secret.refreshToken).not.toBe(oldRt);
    expect(hs.sessions().map((s) => s.refreshToken)).toEqual([secret.refreshToken]);
    await expectUsable(follow);
  });

  it('three connection resets: exit 3, session kept and usable', async () => {
    const before = await prepare(mode);
    hs.inject(REFRESH, ...three({ reset: true }));
    const r = await mxs([...cmd]);
    expectFailure(r, 3, 'network', /Cannot reach 127\.0\.0\.1:\d+/, /retry/);
    expect(hs.count('/refresh')).toBe(3);
    await expectUnchanged(before);
    await expectUsable(follow);
  });

  it('429 with retry_after_ms 300, then success: waits, exit 0', async () => {
    await prepare(mode);
    hs.inject(REFRESH, { status: 429, json: { errcode: 'M_LIMIT_EXCEEDED', error: 'Too Many Requests', retry_after_ms: 300 } });
    const r = await mxs([...cmd]);
    expect(r.code).toBe(0);
    const [first, second] = hs.requests.filter((q) => q.path.endsWith('/refresh'));
    expect(hs.count('/refresh')).toBe(2);
    expect(second!.at - first!.at).toBeGreaterThanOrEqual(290);
    await expectUsable(follow);
  });

  it('429 with retry_after_ms 600000: exit 3 at once, saying to retry later', async () => {
    const before = await prepare(mode);
    hs.inject(REFRESH, { status: 429, json: { errcode: 'M_LIMIT_EXCEEDED', error: 'Too Many Requests', retry_after_ms: 600_000 }, headers: { 'Retry-After': '600' } });
    const t0 = Date.now();
    const r = await mxs([...cmd]);
    expectFailure(r, 3, 'M_LIMIT_EXCEEDED', /Too Many Requests \(HTTP 429 M_LIMIT_EXCEEDED\)/, /rate-limiting; retry in 600s/);
    const sent = hs.requests.find((q) => q.path.endsWith('/refresh'))!.at;
    expect(t0 + r.ms - sent).toBeLessThan(1000); // gave up at once instead of sleeping 10 minutes
    expect(hs.count('/refresh')).toBe(1);
    await expectUnchanged(before);
    await expectUsable(follow);
  });

  it('a refresh the server committed but whose answer was lost (3 times): exit 3, the next run recovers with the old refresh token', async () => {
    const before = await prepare(mode);
    const oldRt = (await readJson(paths().secret)).refreshToken;
    hs.inject(REFRESH, ...three({ commitThenReset: true }));
    const r = await mxs([...cmd]);
    expectFailure(r, 3, 'network', /Cannot reach/, /retry/);
    expect(hs.usedRefreshTokens).toEqual([oldRt, oldRt, oldRt]);
    await expectUnchanged(before);
    // The server rotated three times, but no new access token was used, so the old refresh token still works.
    const again = await mxs([...cmd]);
    expect(again.code).toBe(0);
    expect(hs.usedRefreshTokens).toEqual([oldRt, oldRt, oldRt, oldRt]);
    const refreshes = hs.requests.filter((q) => q.path.endsWith('/refresh'));
    expect(refreshes).toHaveLength(4);
    expect(refreshes[3]!.fault).toBeUndefined();
    const secret = await readJson(paths().secret);
    expect(secret.refreshToken).not.toBe(oldRt);
    expect(hs.sessions()).toEqual([expect.objectContaining({ accessToken: secret.accessToken, refreshToken: secret.refreshToken })]);
    await expectUsable(follow);
  });

  it.each([
    ['403 M_FORBIDDEN', 403, 'M_FORBIDDEN', "refresh token isn't valid anymore"],
    ['401 M_UNKNOWN_TOKEN', 401, 'M_UNKNOWN_TOKEN', 'refresh token does not exist'],
  ])('%s from refresh: exit 4 (log in again), tokens kept, session marked not refreshable', async (_name, status, errcode, error) => {
    const before = await prepare(mode);
    hs.inject(REFRESH, { status, json: { errcode, error } });
    const r = await mxs([...cmd]);
    expectFailure(r, 4, errcode, new RegExp(`has ended: the server refused its refresh token\\W.*${error}`), /^Run: mxs login http:\/\/127\.0\.0\.1:\d+$/);
    // The secret is kept byte for byte (logout still needs it); the sessions file only learns that the
    // refresh token is dead, so that `status` sends the user to `mxs login`.
    expect((await snapshot(config())).secret.equals(before.secret)).toBe(true);
    expect(await readJson(paths().session)).toEqual({ ...JSON.parse(before.session.toString()), refreshable: false });
    const st = await mxs(['status', '--json']);
    expect(st.code).toBe(mode === 'refresh' ? 0 : 4);
    expect(st.json()).toMatchObject({ refreshable: false });
    if (mode !== 'refresh') {
      // Automatic refreshes do not send the refused token again (it would only be refused again)...
      const refreshesBefore = hs.requests.filter((q) => q.path.endsWith('/refresh')).length;
      const again = await mxs(['token', '--min-valid', '30s', '--json']);
      expect(again.code).toBe(4);
      expect(again.json().error.code).toBe('not_refreshable');
      expect(again.stderr).toMatch(/mxs refresh/);
      expect(hs.requests.filter((q) => q.path.endsWith('/refresh')).length).toBe(refreshesBefore);
      // ...but an explicit `mxs refresh` tries once more.
      expect((await mxs(['refresh'])).code).toBe(0);
    }
    // Nothing was deleted: had the refusal been a proxy's mistake, the session goes on.
    await expectUsable(follow);
  });
});

// ---------------------------------------------------------------------------------------------

describe('a refresh refused because a peer outside the lock rotated the tokens first', () => {
  // mxs's refresh is held at the server for 1.5 s; meanwhile a "peer" (this test, standing for another
  // machine or an mxs that does not lock) rotates the same refresh token and stores the new pair in the
  // secret file, after mxs has read the old one. Only then does the server answer mxs, refusing the old
  // refresh token as Synapse does: 403 once the peer's new access token has been used, 401 once the peer
  // has refreshed again (Synapse then deletes the old token).
  it.each([
    ['403 M_FORBIDDEN (the peer used its new access token)', 1, true],
    ['401 M_UNKNOWN_TOKEN (the peer refreshed twice)', 2, false],
  ])('%s: mxs re-reads the store, finds the peer\'s tokens and uses them (exit 0)', async (_name, peerRefreshes, useIt) => {
    await login();
    const old = await readJson(paths().secret);
    hs.inject(REFRESH, { delayMs: 1500 });
    const run = start(['refresh', '--json']);
    await waitFor('mxs to send its refresh', () => hs.count('/refresh') === 1);
    let peer = { access_token: '', refresh_token: old.refreshToken as string, expires_in_ms: 0 };
    for (let i = 0; i < peerRefreshes; i++) {
      const res = await fetch(`${hs.url}/_matrix/client/v3/refresh`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ refresh_token: peer.refresh_token }) });
      expect(res.status).toBe(200);
      peer = (await res.json()) as typeof peer;
    }
    if (useIt) expect((await fetch(`${hs.url}/_matrix/client/v3/account/whoami`, { headers: { authorization: `Bearer ${peer.access_token}` } })).status).toBe(200);
    const peerSecret = { accessToken: peer.access_token, refreshToken: peer.refresh_token, issuedAt: new Date().toISOString(), expiresAt: new Date(Date.now() + peer.expires_in_ms).toISOString() };
    await writeFile(paths().secret + '.peer', JSON.stringify(peerSecret) + '\n', { mode: 0o600 });
    await rename(paths().secret + '.peer', paths().secret);
    const stored = await readFile(paths().secret, 'utf8');
    const r = await run.done;
    expect({ code: r.code, stdout: r.stdout }).toEqual({ code: 0, stdout: expect.any(String) });
    expect(r.json()).toMatchObject({ refreshTokenRotated: false }); // mxs's own refresh was refused
    expect(hs.usedRefreshTokens[0]).toBe(old.refreshToken);
    expect(hs.usedRefreshTokens.at(-1)).toBe(old.refreshToken);
    expect(hs.usedRefreshTokens).toHaveLength(1 + peerRefreshes);
    expect(await readFile(paths().secret, 'utf8')).toBe(stored);
    expect((await readJson(paths().session)).refreshable).toBe(true);
    expect(await expectUsable()).toBe(peer.access_token);
  });
});

// ---------------------------------------------------------------------------------------------

describe('a crash', () => {
  it('SIGKILL while holding the lock: the next run takes the stale lock over within ~10 s', async () => {
    await login();
    const before = await snapshot(config());
    hs.inject(REFRESH, { delayMs: 10_000 });
    const victim = start(['refresh']);
    await waitFor('the lock', () => exists(paths().lock));
    await waitFor('the refresh request', () => hs.count('/refresh') === 1);
    victim.child.kill('SIGKILL');
    expect((await victim.done).signal).toBe('SIGKILL');
    expect(await exists(paths().lock)).toBe(true); // left behind
    await expectUnchanged(before);
    const r = await mxs(['refresh', '--json']);
    expect(r.code).toBe(0);
    expect(r.ms).toBeLessThan(10_000);
    expect(r.json().refreshTokenRotated).toBe(true);
    expect(await exists(paths().lock)).toBe(false);
    await expectUsable();
  }, 40_000);

  it('a stale lock left by a dead process, 20 processes at once: exactly one takes it over, one refresh', async () => {
    await login();
    await expireStored();
    // What a SIGKILLed holder leaves behind, already stale: every process finds it stale at once.
    await mkdir(paths().lock, { recursive: true });
    const longAgo = new Date(Date.now() - 60_000);
    await utimes(paths().lock, longAgo, longAgo);
    const results = await Promise.all(Array.from({ length: 20 }, () => start(['token', '--min-valid', '30s']).done));
    expect({ exits: results.map((r) => r.code), stderr: results.map((r) => r.stderr).filter(Boolean), tokens: new Set(results.map((r) => r.stdout)).size, refreshes: hs.count('/refresh') }).toEqual({
      exits: results.map(() => 0),
      stderr: [],
      tokens: 1,
      refreshes: 1,
    });
    expect(hs.accessTokenStatus(results[0]!.stdout.trim())).toBe('valid');
    expect(await exists(paths().lock)).toBe(false);
    await expectUsable();
  }, 60_000);

  it('withLock: waiters racing for a stale lock never hold it two at a time, and none fails (proper-lockfile #121)', async () => {
    const { withLock } = await import('../../src/store/lock.js');
    const report: { maxHolders: number; errors: string[] }[] = [];
    for (let trial = 0; trial < 8; trial++) {
      const lock = join(home.dir, `race-${trial}`, 'default.lock');
      await mkdir(lock, { recursive: true });
      const longAgo = new Date(Date.now() - 60_000);
      await utimes(lock, longAgo, longAgo);
      let inside = 0;
      let maxHolders = 0;
      const settled = await Promise.allSettled(
        Array.from({ length: 20 }, () =>
          withLock(lock, { waitMs: 20_000, staleMs: 6000 }, async () => {
            maxHolders = Math.max(maxHolders, ++inside);
            await new Promise((r) => setTimeout(r, 10));
            inside--;
          }),
        ),
      );
      report.push({ maxHolders, errors: settled.flatMap((r) => (r.status === 'rejected' ? [String((r.reason as Error).message)] : [])) });
    }
    expect(report).toEqual(report.map(() => ({ maxHolders: 1, errors: [] })));
  }, 60_000);

  it('SIGKILL while a committed refresh answer is on its way: the next run recovers with the old refresh token', async () => {
    await login();
    // A proxy passes the refresh to the double (which rotates) and holds the answer back.
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const proxy = await startProxy(hs.url, { response: async (res, req) => (req.path.endsWith('/refresh') ? (await held, res) : res) });
    closers.push(async () => release());
    closers.push(() => proxy.close());
    const record = await readJson(paths().session);
    await writeFile(paths().session, JSON.stringify({ ...record, homeserver: proxy.url }, null, 2) + '\n');
    const before = await snapshot(config());
    const oldRt = (await readJson(paths().secret)).refreshToken;
    const victim = start(['refresh']);
    await waitFor('the double to commit the refresh', () => hs.usedRefreshTokens.length === 1 && hs.sessions()[0]?.refreshToken !== oldRt);
    victim.child.kill('SIGKILL');
    expect((await victim.done).signal).toBe('SIGKILL');
    release();
    await expectUnchanged(before);
    const r = await mxs(['refresh', '--json']);
    expect(r.code).toBe(0);
    expect(r.ms).toBeLessThan(10_000);
    expect(hs.usedRefreshTokens).toEqual([oldRt, oldRt]);
    await expectUsable();
  }, 40_000);

  it('SIGKILL right after the new tokens reach the secret file: the next runs carry on with them', async () => {
    await login();
    const oldSecret = await readFile(paths().secret, 'utf8');
    const victim = start(['refresh']);
    await waitFor('the new secret', async () => (await readFile(paths().secret, 'utf8').catch(() => oldSecret)) !== oldSecret, 15_000, 1);
    victim.child.kill('SIGKILL');
    await victim.done;
    const stored = await readJson(paths().secret);
    // Whatever the sessions file says, the secret is the truth; the next runs use the new token.
    const w = await mxs(['whoami', '--json']);
    expect(w.code).toBe(0);
    expect(hs.accessTokenStatus(stored.accessToken)).toBe('valid');
    const r = await mxs(['refresh', '--json']);
    expect(r.code).toBe(0);
    expect((await readJson(paths().session)).expiresAt).toBe((await readJson(paths().secret)).expiresAt);
    await expectUsable();
  }, 40_000);
});

// ---------------------------------------------------------------------------------------------

async function stampede(n: number) {
  await login();
  await expireStored();
  const t0 = Date.now();
  const runs = Array.from({ length: n }, () => start(['token', '--min-valid', '30s'], {}));
  const results = await Promise.all(runs.map((s) => s.done));
  const wallMs = Date.now() - t0;
  const tokens = new Set(results.map((r) => r.stdout));
  const summary = { exits: results.map((r) => r.code), refreshes: hs.count('/refresh'), distinctTokens: tokens.size, stderr: results.map((r) => r.stderr).filter(Boolean) };
  expect(summary).toEqual({ exits: results.map(() => 0), refreshes: 1, distinctTokens: 1, stderr: [] });
  const token = [...tokens][0]!.trim();
  expect(token).toBe((await readJson(paths().secret)).accessToken);
  expect(hs.accessTokenStatus(token)).toBe('valid');
  await expectUsable();
  expect(hs.count('/refresh')).toBe(1);
  process.stderr.write(`stampede of ${n}: ${wallMs} ms wall, ${hs.count('/refresh')} refresh request(s)\n`);
}

describe('concurrent processes', () => {
  it('20 x `mxs token --min-valid 30s` on an expired session: one refresh, one token, all exit 0', () => stampede(20), 120_000);

  it('50 x `mxs token --min-valid 30s` on an expired session: one refresh, 50/50 exit 0, session works afterwards', () => stampede(50), 120_000);

  it('5 x `mxs refresh` at once: one refresh, all exit 0', async () => {
    await login();
    const oldRt = (await readJson(paths().secret)).refreshToken;
    hs.inject(REFRESH, { delayMs: 2500 }); // the winner holds the lock long enough for all to have started
    const results = await Promise.all(Array.from({ length: 5 }, () => start(['refresh', '--json']).done));
    expect(results.map((r) => r.code)).toEqual([0, 0, 0, 0, 0]);
    expect(hs.usedRefreshTokens).toEqual([oldRt]);
    expect(results.filter((r) => r.json().refreshTokenRotated)).toHaveLength(1);
    await expectUsable();
  }, 60_000);
});

// ---------------------------------------------------------------------------------------------

describe('an unusable store', () => {
  const COMMANDS = [['status'], ['token'], ['whoami'], ['refresh'], ['logout']];

  it.each([
    ['a corrupt', () => '{"format":1,"homeserver":"http://127.0.0.1:1",,,}'],
    ['a truncated', (text: string) => text.slice(0, Math.floor(text.length / 2))],
    ['an empty', () => ''],
  ])('%s sessions file: exit 6 from every command, file left byte-identical', async (_name, damage) => {
    await login();
    const damaged = damage(await readFile(paths().session, 'utf8'));
    await writeFile(paths().session, damaged);
    const before = await snapshot(config());
    for (const cmd of COMMANDS) {
      const r = await mxs([...cmd, '--json']);
      expectFailure(r, 6, 'storage', /sessions file .*default\.json is corrupt \(.*\); it was left as it is/, /Inspect or delete it, then log in again: mxs login/);
    }
    await expectUnchanged(before);
    expect(hs.count('/refresh') + hs.count('/whoami') + hs.count('/logout')).toBe(0);
  });

  it('a corrupt secret file: exit 6, left byte-identical', async () => {
    await login();
    await writeFile(paths().secret, '{"accessToken":');
    const before = await snapshot(config());
    for (const cmd of [['token'], ['whoami'], ['refresh']]) {
      const r = await mxs([...cmd, '--json']);
      expectFailure(r, 6, 'storage', /stored tokens in .*unreadable/, /log in again/i);
    }
    await expectUnchanged(before);
  });

  it('a secret file with mode 0644: exit 6 with a chmod 600 hint, then usable once fixed', async () => {
    await login();
    await chmod(paths().secret, 0o644);
    const before = await snapshot(config());
    for (const cmd of [['token'], ['whoami'], ['refresh']]) {
      const r = await mxs([...cmd, '--json']);
      expectFailure(r, 6, 'storage', /other users can read it \(mode 0644\)/, /^Run: chmod 600 /);
    }
    await expectUnchanged(before);
    expect(hs.count('/refresh')).toBe(0);
    await chmod(paths().secret, 0o600);
    await expectUsable();
  });

  it('keychain unavailable (D-Bus pointing nowhere): exit 6 fast', async () => {
    const env = { DBUS_SESSION_BUS_ADDRESS: 'unix:path=/nonexistent/mxs-no-bus' };
    // "Fast" is < 5 s on an idle machine; on a loaded one, allow what a plain start-up costs beyond 1 s.
    const baseline = await mxs(['refresh', '--json']); // not logged in: exit 4, no network, no keychain
    expect(baseline.code).toBe(4);
    const fast = 5000 + Math.max(0, baseline.ms - 1000);
    const r = await mxs(['login', hs.url, '-u', 'alice', '--password-stdin', '--storage', 'keychain', '--json'], { input: PW, env });
    expectFailure(r, 6, 'storage', /keychain is unusable/, /--storage file/);
    expect(r.ms).toBeLessThan(fast);
    expect(await exists(paths().session)).toBe(false);
    // A stored session whose secrets live in the keychain.
    await login();
    const record = await readJson(paths().session);
    await writeFile(paths().session, JSON.stringify({ ...record, storage: 'keychain' }, null, 2) + '\n');
    const before = await snapshot(config());
    for (const cmd of [['token'], ['whoami'], ['refresh']]) {
      const t = await mxs([...cmd, '--json'], { env });
      expectFailure(t, 6, 'storage', /keychain is unusable/, /--storage file/);
      expect(t.ms).toBeLessThan(fast);
    }
    await expectUnchanged(before);
  });
});

// ---------------------------------------------------------------------------------------------

describe('clock skew', () => {
  it('a server clock 5 minutes ahead is mentioned by whoami and then by status', async () => {
    await login();
    hs.setDateSkewMs(5 * 60_000);
    const w = await mxs(['whoami']);
    expect(w.code).toBe(0);
    expect(w.stdout + w.stderr).toMatch(/clock is (4m 5\ds|5m( 0s)?) behind the server's/);
    const s = await mxs(['status']);
    expect(s.code).toBe(0);
    expect(s.stdout + s.stderr).toMatch(/clock is (4m 5\ds|5m( 0s)?) behind the server's/);
  });

  it('with no skew, neither mentions the clock', async () => {
    await login();
    const w = await mxs(['whoami']);
    const s = await mxs(['status']);
    expect(w.code).toBe(0);
    expect(s.code).toBe(0);
    expect(w.stdout + w.stderr + s.stdout + s.stderr).not.toMatch(/clock/i);
  });
});

// ---------------------------------------------------------------------------------------------

describe('stdin is read only where a flag asks for it', () => {
  // Regression: oclif read piped stdin into the optional SERVER argument, so a piped token (or
  // password) became SERVER. Fixed with `ignoreStdin: true` on both SERVER args.
  it('`mxs whoami --token-stdin` with a stored session and no SERVER checks the piped token', async () => {
    await login();
    const token = (await readJson(paths().secret)).accessToken;
    const r = await mxs(['whoami', '--token-stdin', '--json'], { input: token + '\n' });
    expect(r.code).toBe(0);
    expect(r.json()).toMatchObject({ userId: '@alice:localhost' });
  });
});

describe('no secret leaks', () => {
  it('no password or token in any output (but `mxs token` stdout), any file but the secret file, or any argv/env', async () => {
    const password = `CANARYPW${Math.random().toString(36).slice(2, 12)}Q`;
    const wrongPassword = `CANARYWRONG${Math.random().toString(36).slice(2, 12)}Q`;
    const canaryHs = await startHomeserverDouble({ users: { alice: password } });
    closers.push(() => canaryHs.close());
    const proxy = await startCanaryProxy(canaryHs.url);
    closers.push(() => proxy.close());
    const seen: { what: string; text: string }[] = [];
    const procs: Awaited<Started['procInfo']>[] = [];
    const argvs: string[][] = [];
    const scanFiles = async (when: string) => {
      for (const f of await filesBelow(home.dir)) if (f.path !== paths().secret) seen.push({ what: `${when}: ${f.path}`, text: f.content });
    };
    const run = async (args: string[], expected: number | number[], input?: string) => {
      const s = start(args, { input });
      argvs.push(s.argv);
      procs.push(await s.procInfo);
      const r = await s.done;
      const what = args.join(' ');
      if (args[0] !== 'token') seen.push({ what: `${what} (stdout)`, text: r.stdout });
      seen.push({ what: `${what} (stderr)`, text: r.stderr });
      await scanFiles(what);
      const ok = ([] as number[]).concat(expected);
      if (!ok.includes(r.code!)) expect({ what, code: r.code, stdout: r.stdout, stderr: r.stderr }).toEqual({ what, code: ok[0] });
      return r;
    };

    for (const flags of [[], ['--json'], ['--verbose'], ['--json', '--verbose']]) {
      await run(['login', proxy.url, '-u', 'alice', '--password-stdin', ...flags], 0, password + '\n');
      for (const cmd of [['refresh'], ['status'], ['status', '--all'], ['whoami'], ['token'], ['token', '--json']]) {
        await run([...cmd, ...flags], 0);
      }
      // Failing runs (plain and with every flag, to keep the suite's time down).
      if (flags.length === 1) {
        await run(['logout', ...flags], 0);
        continue;
      }
      canaryHs.inject(REFRESH, { status: 403, json: { errcode: 'M_FORBIDDEN', error: "refresh token isn't valid anymore" } });
      await run(['refresh', ...flags], 4);
      canaryHs.inject(WHOAMI, ...three({ status: 500 }));
      await run(['whoami', ...flags], 3);
      canaryHs.inject(REFRESH, { truncate: true });
      await run(['refresh', ...flags], 3); // an explicit refresh tries the refused token again
      await run(['refresh', ...flags], 0); // ...and the server takes it: the session is refreshable again
      canaryHs.expireAccessTokens();
      await run(['whoami', ...flags], 0); // 401 soft logout, refresh, retry
      await run(['login', proxy.url, '-u', 'alice', '--password-stdin', '--profile', 'wrong', ...flags], 4, wrongPassword + '\n');
      const token = (await readJson(paths().secret)).accessToken as string;
      expect(token).toMatch(/^CANARYAT/); // the test is only meaningful if mxs really got canaries
      await run(['whoami', proxy.url, '--token-stdin', ...flags], 0, token + '\n');
      await run(['whoami', proxy.url, '--token-stdin', ...flags], 4, 'CANARYAT999xnosuchtokenQ\n');
      // No SERVER: the stored homeserver is used; the piped password is never taken for SERVER.
      await run(['login', '-u', 'alice', '--password-stdin', ...flags], 0, password + '\n');
      await run(['logout', ...flags], 0);
      await run(['token', ...flags], 4);
    }

    const secrets = [password, wrongPassword, 'CANARYAT999xnosuchtokenQ', ...proxy.canaries()];
    expect(proxy.canaries().length).toBeGreaterThanOrEqual(12);
    // The --verbose runs really traced their exchanges (so the trace was scanned too).
    expect(seen.some(({ what, text }) => what.startsWith('refresh --verbose') && /POST http:\/\/127\.0\.0\.1:\d+\/_matrix\/client\/v3\/refresh → 200/.test(text))).toBe(true);
    const leaks = seen.flatMap(({ what, text }) => secrets.filter((s) => text.includes(s)).map((s) => `${s} in ${what}`));
    expect(leaks).toEqual([]);
    // Also no real (double) token made it through un-swapped, and nothing is shaped like one.
    expect(seen.filter(({ text }) => /sy[tr]_[A-Za-z0-9]/.test(text)).map((s) => s.what)).toEqual([]);
    const onArgv = [...argvs.map((a) => a.join(' ')), ...procs.map((p) => p.cmdline + '\n' + p.environ)].filter((text) => secrets.some((s) => text.includes(s)));
    expect(onArgv).toEqual([]);
    expect(procs.filter((p) => p.cmdline.includes('run.js')).length).toBeGreaterThan(procs.length / 2); // /proc was really read
  }, 120_000);
});
