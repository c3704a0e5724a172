// OAuth 2.0 sessions through the real CLI against the homeserver double in its Matrix Authentication
// Service mode (403 authorization_pending, no slow_down, refresh-token replay rules, 400 invalid_grant,
// /login 404 unless compat): login with a device code and with --browser, Ctrl-C, the commands on an
// OAuth session, concurrency, faults at the token endpoint, and a leak scan.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import { startHomeserverDouble, type HomeserverDouble, type OAuthOptions } from '../support/homeserver-double.js';
import { filesBelow, homePerTest, runMxs, startMxs, type Home } from '../support/cli.js';
import { snapshot, waitFor, watchStderr } from '../support/fault-kit.js';

let hs: HomeserverDouble;
let home: Home;
const closers: (() => Promise<unknown>)[] = [];

async function start(oauth: OAuthOptions = {}) {
  hs = await startHomeserverDouble({ oauth: { deviceIntervalSec: 1, ...oauth } });
  closers.push(() => hs.close());
}
afterEach(async () => {
  while (closers.length) await closers.pop()!();
});
homePerTest((h) => (home = h));

const mxs = (args: string[], extra: { input?: string; env?: Record<string, string> } = {}) => runMxs(args, { input: extra.input, env: { ...home.env, ...extra.env } });
const spawnMxs = (args: string[]) => startMxs(args, { env: home.env });
const sessionFile = () => join(home.env.MXS_CONFIG_DIR!, 'sessions', 'default.json');
const readJson = async (p: string) => JSON.parse(await readFile(p, 'utf8'));

const USER_CODE = /enter the code: ([A-Z0-9-]+)/;

/** A device-code login approved as alice; returns the finished run. */
async function deviceLogin(args: string[] = []) {
  const run = spawnMxs(['login', hs.url, '--json', ...args]);
  const err = watchStderr(run);
  const [, code] = await err.match(USER_CODE);
  hs.approveDevice(code!, 'alice');
  const r = await run.done;
  expect(r.code).toBe(0);
  return r;
}

describe('login with a device code', () => {
  it('shows the verification URI and code, polls through 403 authorization_pending, and stores an OAuth session', async () => {
    await start();
    const run = spawnMxs(['login', hs.url, '--json']);
    const err = watchStderr(run);
    const [, code] = await err.match(USER_CODE);
    expect(err.text()).toContain(`${hs.url}/link`);
    // Let it poll (and be told "pending") at least once before approving.
    await waitFor('a pending poll', () => hs.requests.some((q) => q.path === '/oauth2/token'), 10_000, 20);
    hs.approveDevice(code!, 'alice');
    const r = await run.done;
    expect(r.code).toBe(0);
    expect(r.json()).toEqual({
      profile: 'default',
      homeserver: hs.url,
      userId: '@alice:localhost',
      deviceId: expect.stringMatching(/^[A-Za-z0-9]{10,}$/),
      method: 'oauth',
      issuer: hs.issuer,
      expiresAt: expect.any(String),
      expiresInMs: expect.any(Number),
      refreshable: true,
      storage: 'file',
    });
    const record = await readJson(sessionFile());
    expect(record).toMatchObject({ format: 2, method: 'oauth', auth: { type: 'oauth', issuer: hs.issuer, clientId: hs.clients()[0]!.clientId, tokenEndpoint: `${hs.url}/oauth2/token` } });
    expect(hs.sessions().map((s) => s.deviceId)).toEqual([r.json().deviceId]);
    // No slow_down from this server, and mxs kept to the interval: no hammering.
    const polls = hs.requests.filter((q) => q.path === '/oauth2/token').length;
    expect(polls).toBeLessThanOrEqual(Math.ceil(r.ms / 1000) + 1);
  });

  it('a denied code: exit 4, one clear line, nothing stored', async () => {
    await start();
    const run = spawnMxs(['login', hs.url, '--json']);
    const [, code] = await watchStderr(run).match(USER_CODE);
    hs.denyDevice(code!);
    const r = await run.done;
    expect(r.code).toBe(4);
    expect(r.json().error.code).toBe('access_denied');
    expect(r.stderr).toMatch(/Error: The login was denied/);
    await expect(readFile(sessionFile())).rejects.toThrow();
  });

  it('an expired code: exit 4, nothing stored', async () => {
    await start();
    const run = spawnMxs(['login', hs.url, '--json']);
    await watchStderr(run).match(USER_CODE);
    hs.expireDeviceCodes();
    const r = await run.done;
    expect(r.code).toBe(4);
    expect(r.json().error.code).toBe('expired_token');
    await expect(readFile(sessionFile())).rejects.toThrow();
  });

  it('Ctrl-C while waiting: exit 130, nothing stored, no stack trace', async () => {
    await start();
    const run = spawnMxs(['login', hs.url]);
    await watchStderr(run).match(USER_CODE);
    run.child.kill('SIGINT');
    const r = await run.done;
    expect(r.code).toBe(130);
    expect(r.stderr).toMatch(/cancelled/i);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    await expect(readFile(sessionFile())).rejects.toThrow();
  });

  it('--password-stdin on a server that only speaks OAuth: exit 2, no password sent', async () => {
    await start();
    const r = await mxs(['login', hs.url, '-u', 'alice', '--password-stdin', '--json'], { input: 'alice-pw\n' });
    expect(r.code).toBe(2);
    expect(r.json().error.code).toBe('usage');
    expect(hs.requests.some((q) => q.path.endsWith('/login') && q.method === 'POST')).toBe(false);
  });

  it("--password-stdin where the MAS compatibility layer still takes passwords: a password session", async () => {
    await start({ compat: true });
    const r = await mxs(['login', hs.url, '-u', 'alice', '--password-stdin', '--json'], { input: 'alice-pw\n' });
    expect(r.code).toBe(0);
    expect(r.json()).toMatchObject({ method: 'password', issuer: null });
  });
});

describe('login with --browser (authorization code + PKCE)', () => {
  it('prints the URL; the browser (played here) is sent back to the loopback listener; an OAuth session is stored', async () => {
    await start();
    const run = spawnMxs(['login', hs.url, '--browser', '--user', 'alice', '--json']);
    const [url] = await watchStderr(run).match(new RegExp(`${hs.url}/authorize\\?\\S+`));
    const auth = await request(url!, { method: 'GET' });
    expect(auth.statusCode).toBe(302);
    await auth.body.dump();
    const back = await request(String(auth.headers.location), { method: 'GET' });
    expect(back.statusCode).toBe(200);
    expect(await back.body.text()).toContain('Logged in');
    const r = await run.done;
    expect(r.code).toBe(0);
    expect(r.json()).toMatchObject({ method: 'oauth', userId: '@alice:localhost' });
    // A bare --user is completed with the server as typed: here a URL, so its host (MAS ignores a bare localpart).
    expect(hs.authorizationRequests[0]).toMatchObject({ loginHint: `mxid:@alice:${new URL(hs.url).host}` });
  });

  it('denied in the browser: exit 4, nothing stored', async () => {
    await start({ authorizeAs: null });
    const run = spawnMxs(['login', hs.url, '--browser', '--json']);
    const [url] = await watchStderr(run).match(new RegExp(`${hs.url}/authorize\\?\\S+`));
    const auth = await request(url!, { method: 'GET' });
    await auth.body.dump();
    const back = await request(String(auth.headers.location), { method: 'GET' });
    await back.body.dump();
    const r = await run.done;
    expect(r.code).toBe(4);
    expect(r.json().error.code).toBe('access_denied');
    await expect(readFile(sessionFile())).rejects.toThrow();
  });
});

describe('an OAuth session', () => {
  it('status shows the method and issuer from local state', async () => {
    await start();
    await deviceLogin();
    const r = await mxs(['status', '--json']);
    expect(r.code).toBe(0);
    expect(r.json()).toMatchObject({ method: 'oauth', issuer: hs.issuer, loggedIn: true });
    const text = await mxs(['status']);
    expect(text.stdout).toContain(`OAuth 2.0 (issuer ${hs.issuer})`);
  });

  it('token and whoami refresh at the token endpoint once the access token expired; refresh rotates', async () => {
    await start({ accessTokenLifetimeSec: 2 });
    await deviceLogin();
    const first = (await mxs(['token'])).stdout.trim();
    // On a loaded machine that first `token` may already have refreshed (under half of 2 s left): count from here.
    const before = hs.usedRefreshTokens.length;
    const { expiresAt } = await readJson(join(home.env.MXS_CONFIG_DIR!, 'secrets', 'default.json'));
    await new Promise((r) => setTimeout(r, Math.max(0, Date.parse(expiresAt) - Date.now()) + 200));
    const who = await mxs(['whoami', '--json']);
    expect(who.code).toBe(0);
    expect(who.json()).toMatchObject({ userId: '@alice:localhost', refreshed: true });
    expect(hs.usedRefreshTokens).toHaveLength(before + 1);
    const second = (await mxs(['token'])).stdout.trim();
    expect(second).not.toBe(first);
    expect(hs.accessTokenStatus(second)).toBe('valid');
    const refreshed = await mxs(['refresh', '--json']);
    expect(refreshed.code).toBe(0);
    expect(refreshed.json().refreshTokenRotated).toBe(true);
    expect(hs.usedRefreshTokens.length).toBeGreaterThanOrEqual(before + 2);
  });

  it('20 concurrent token calls on an expired session: one refresh, no failure, one token', async () => {
    // Tokens live 30 s, so the refreshed one outlives all 20 runs however slow the machine; the stored one
    // is expired by hand, on both sides.
    await start({ accessTokenLifetimeSec: 30 });
    await deviceLogin();
    const config = home.env.MXS_CONFIG_DIR!;
    const past = new Date(Date.now() - 5000).toISOString();
    for (const f of [join(config, 'sessions', 'default.json'), join(config, 'secrets', 'default.json')]) {
      await writeFile(f, JSON.stringify({ ...(await readJson(f)), expiresAt: past }), { mode: 0o600 });
    }
    hs.expireAccessTokens();
    const runs = await Promise.all(Array.from({ length: 20 }, () => mxs(['token'])));
    expect(runs.map((r) => r.code)).toEqual(Array(20).fill(0));
    expect(new Set(runs.map((r) => r.stdout.trim())).size).toBe(1);
    expect(hs.usedRefreshTokens).toHaveLength(1);
  });

  it('a refresh token the server refuses (invalid_grant) ends the session: exit 4, status says log in', async () => {
    await start({ accessTokenLifetimeSec: 1 });
    await deviceLogin();
    hs.expireRefreshTokens();
    await new Promise((r) => setTimeout(r, 1200));
    const r = await mxs(['token', '--json']);
    expect(r.code).toBe(4);
    expect(r.json().error.code).toBe('invalid_grant');
    expect(r.stderr).toMatch(/Run: mxs login/);
    expect((await mxs(['status'])).code).toBe(4);
  });

  it.each([
    ['503 three times', () => hs.inject('POST /oauth2/token', { status: 503 }, { status: 503 }, { status: 503 })],
    ['a garbage 200', () => hs.inject('POST /oauth2/token', { status: 200, body: '<html>hi</html>' })],
    ['a truncated answer', () => hs.inject('POST /oauth2/token', { truncate: true })],
    ['a hang past --timeout', () => hs.inject('POST /oauth2/token', { delayMs: 5000 })],
  ])('%s at the token endpoint: exit 3, the stored session byte-identical and still usable', async (_case, fault) => {
    await start({ accessTokenLifetimeSec: 1 });
    await deviceLogin();
    await new Promise((r) => setTimeout(r, 1200));
    const before = await snapshot(home.env.MXS_CONFIG_DIR!);
    fault();
    const r = await mxs(['token', '--timeout', '1s']);
    expect(r.code).toBe(3);
    expect(await snapshot(home.env.MXS_CONFIG_DIR!)).toEqual(before);
    const again = await mxs(['token']);
    expect(again.code).toBe(0);
    expect(hs.accessTokenStatus(again.stdout.trim())).toBe('valid');
  });

  it('a lost refresh answer (committed, connection dropped): the next run refreshes again with the old token and continues', async () => {
    await start({ accessTokenLifetimeSec: 1 });
    await deviceLogin();
    await new Promise((r) => setTimeout(r, 1200));
    hs.inject('POST /oauth2/token', { commitThenReset: true }, { commitThenReset: true }, { commitThenReset: true });
    expect((await mxs(['token'])).code).toBe(3);
    const r = await mxs(['token']);
    expect(r.code).toBe(0);
    expect(hs.accessTokenStatus(r.stdout.trim())).toBe('valid');
  });

  it('SIGKILL in the middle of a refresh: the next command recovers the session', async () => {
    await start({ accessTokenLifetimeSec: 1 });
    await deviceLogin();
    await new Promise((r) => setTimeout(r, 1200));
    hs.inject('POST /oauth2/token', { delayMs: 3000 });
    const run = spawnMxs(['token']);
    await waitFor('the refresh to be in flight', () => hs.requests.some((q) => q.path === '/oauth2/token' && q.body?.grant_type === 'refresh_token'), 10_000, 10);
    run.child.kill('SIGKILL');
    await run.done;
    const r = await mxs(['token']);
    expect(r.code).toBe(0);
    expect(hs.accessTokenStatus(r.stdout.trim())).toBe('valid');
  });

  it('logout revokes the tokens with the session\'s client ID and forgets the session', async () => {
    await start();
    await deviceLogin();
    const record = await readJson(sessionFile());
    const r = await mxs(['logout', '--json']);
    expect(r.code).toBe(0);
    expect(r.json()).toEqual({ profile: 'default', serverSide: true });
    expect(hs.revocations.length).toBeGreaterThanOrEqual(1);
    expect(hs.revocations.every((v) => v.clientId === record.auth.clientId)).toBe(true);
    expect(hs.sessions()).toEqual([]);
    await expect(readFile(sessionFile())).rejects.toThrow();
  });

  it('logout --all: exit 2 naming the account page, nothing revoked or forgotten', async () => {
    await start();
    await deviceLogin();
    const r = await mxs(['logout', '--all']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`${hs.url}/account/`);
    expect(hs.revocations).toEqual([]);
    expect(hs.sessions()).toHaveLength(1);
  });

  it('logging in again ends the previous OAuth session on the server', async () => {
    await start();
    await deviceLogin();
    const firstDevice = hs.sessions()[0]!.deviceId;
    const again = await deviceLogin();
    expect(again.stderr).toMatch(/Ended the previous session/);
    expect(hs.sessions().map((s) => s.deviceId)).toEqual([again.json().deviceId]);
    expect(again.json().deviceId).not.toBe(firstDevice);
  });

  it('no token, device code or refresh token in any output, argv or file but the secrets file', async () => {
    await start({ accessTokenLifetimeSec: 1 });
    const outputs: string[] = [];
    const login = spawnMxs(['login', hs.url, '--verbose']);
    const [, code] = await watchStderr(login).match(USER_CODE);
    hs.approveDevice(code!, 'alice');
    const l = await login.done;
    outputs.push(l.stdout, l.stderr);
    await new Promise((r) => setTimeout(r, 1200));
    for (const args of [['status', '--verbose'], ['whoami', '--verbose'], ['refresh', '--verbose', '--json'], ['status', '--json']]) {
      const r = await mxs(args);
      outputs.push(r.stdout, r.stderr);
    }
    const secrets = [
      ...hs.sessions().flatMap((s) => [s.accessToken, s.refreshToken]),
      ...hs.usedRefreshTokens,
      ...hs.deviceAuthorizations().map((d) => d.deviceCode),
    ].filter((s): s is string => typeof s === 'string' && s.length > 0);
    expect(secrets.length).toBeGreaterThanOrEqual(4);
    const files = await filesBelow(home.env.MXS_CONFIG_DIR!);
    for (const s of secrets) {
      for (const o of outputs) expect(o).not.toContain(s);
      for (const f of files.filter((f) => !f.path.includes('/secrets/'))) expect(f.content).not.toContain(s);
    }
    const logout = await mxs(['logout', '--verbose']);
    for (const s of secrets) expect(logout.stdout + logout.stderr).not.toContain(s);
  });
});
