import { afterEach, describe, expect, it } from '@jest/globals';
import { startHomeserverDouble, type DoubleOptions, type HomeserverDouble } from '../support/homeserver-double.js';

let hs: HomeserverDouble | undefined;

afterEach(async () => {
  await hs?.close();
  hs = undefined;
});

async function start(opts?: DoubleOptions): Promise<HomeserverDouble> {
  hs = await startHomeserverDouble(opts);
  return hs;
}

interface Reply {
  status: number;
  json: any;
  headers: Headers;
}

async function call(method: string, path: string, opts: { body?: unknown; token?: string; signal?: AbortSignal } = {}): Promise<Reply> {
  const headers: Record<string, string> = {};
  if (opts.body !== undefined) headers['content-type'] = 'application/json';
  if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`;
  const res = await fetch(hs!.url + path, {
    method,
    headers,
    body: opts.body === undefined ? undefined : typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body),
    signal: opts.signal,
  });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, json, headers: res.headers };
}

const LOGIN = '/_matrix/client/v3/login';
const REFRESH = '/_matrix/client/v3/refresh';
const WHOAMI = '/_matrix/client/v3/account/whoami';

function passwordLogin(extra: Record<string, unknown> = {}) {
  return call('POST', LOGIN, {
    body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: 'alice' }, password: 'alice-pw', ...extra },
  });
}

async function loginWithRefresh(extra: Record<string, unknown> = {}) {
  const r = await passwordLogin({ refresh_token: true, ...extra });
  expect(r.status).toBe(200);
  return r.json as { access_token: string; refresh_token: string; device_id: string; user_id: string; expires_in_ms: number };
}

const refresh = (rt: string, extra: Record<string, unknown> = {}) => call('POST', REFRESH, { body: { refresh_token: rt, ...extra } });
const whoami = (at: string) => call('GET', WHOAMI, { token: at });

describe('discovery and login', () => {
  it('serves /versions, a 404 well-known, login flows, Date and Content-Type on every answer', async () => {
    await start();
    const v = await call('GET', '/_matrix/client/versions');
    expect(v.status).toBe(200);
    expect(v.json.versions).toEqual(expect.arrayContaining(['v1.1', 'v1.12']));
    expect(v.json.unstable_features).toEqual({});
    expect(v.headers.get('content-type')).toBe('application/json');
    expect(Math.abs(Date.parse(v.headers.get('date')!) - Date.now())).toBeLessThan(5000);

    const wk = await call('GET', '/.well-known/matrix/client');
    expect(wk.status).toBe(404);

    const flows = await call('GET', LOGIN);
    expect(flows.json.flows).toEqual([{ type: 'm.login.password' }, { type: 'm.login.token' }]);

    const unknown = await call('GET', '/_matrix/client/v3/nope');
    expect(unknown.status).toBe(404);
    expect(unknown.json).toEqual({ errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' });
  });

  it('omits the password flow when password login is off', async () => {
    await start({ passwordLogin: false });
    expect((await call('GET', LOGIN)).json.flows).toEqual([{ type: 'm.login.token' }]);
    expect((await passwordLogin()).status).toBe(400);
  });

  it('logs in with refresh: Synapse-shaped tokens, expiry, requested device id and name', async () => {
    const double = await start({ accessTokenLifetimeMs: 300_000 });
    const r = await passwordLogin({ refresh_token: true, device_id: 'MYDEVICE', initial_device_display_name: 'mxs test' });
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ user_id: '@alice:localhost', device_id: 'MYDEVICE', expires_in_ms: 300_000 });
    expect(r.json.access_token).toMatch(/^syt_[A-Za-z0-9+/]+_[A-Za-z]{20}_[0-9A-Za-z]{6}$/);
    expect(r.json.refresh_token).toMatch(/^syr_/);
    expect(double.sessions()).toEqual([
      expect.objectContaining({
        deviceId: 'MYDEVICE',
        userId: '@alice:localhost',
        accessToken: r.json.access_token,
        refreshToken: r.json.refresh_token,
        displayName: 'mxs test',
      }),
    ]);
    expect(double.requests[0]).toMatchObject({ method: 'POST', path: LOGIN, body: { refresh_token: true } });
  });

  it('without refresh_token: true, gives a non-expiring token and a generated device id', async () => {
    await start();
    const r = await passwordLogin();
    expect(r.json.refresh_token).toBeUndefined();
    expect(r.json.expires_in_ms).toBeUndefined();
    expect(r.json.device_id).toMatch(/^[A-Z]{10}$/);
  });

  it('with refresh disabled (accessTokenLifetimeMs null) ignores refresh_token: true', async () => {
    await start({ accessTokenLifetimeMs: null });
    const r = await passwordLogin({ refresh_token: true });
    expect(r.json.refresh_token).toBeUndefined();
    expect(r.json.expires_in_ms).toBeUndefined();
  });

  it('accepts a full user id and the deprecated top-level user, rejects bad credentials and bodies', async () => {
    await start();
    expect((await passwordLogin({ identifier: { type: 'm.id.user', user: '@alice:localhost' } })).status).toBe(200);
    const legacy = await call('POST', LOGIN, { body: { type: 'm.login.password', user: 'alice', password: 'alice-pw' } });
    expect(legacy.status).toBe(200);
    const wrong = await passwordLogin({ password: 'nope' });
    expect(wrong.status).toBe(403);
    expect(wrong.json).toEqual({ errcode: 'M_FORBIDDEN', error: 'Invalid username or password' });
    expect((await passwordLogin({ identifier: { type: 'm.id.user', user: 'bob' } })).status).toBe(403);
    expect((await passwordLogin({ identifier: { type: 'm.id.user', user: '@alice:elsewhere' } })).status).toBe(403);
    const notJson = await call('POST', LOGIN, { body: '{nope' });
    expect(notJson.json.errcode).toBe('M_NOT_JSON');
    const notObject = await call('POST', LOGIN, { body: '[1]' });
    expect(notObject.json.errcode).toBe('M_BAD_JSON');
  });

  it('m.login.token tokens are single use', async () => {
    await start({ loginTokens: { 'tok-1': 'alice' } });
    const first = await call('POST', LOGIN, { body: { type: 'm.login.token', token: 'tok-1' } });
    expect(first.status).toBe(200);
    expect(first.json.user_id).toBe('@alice:localhost');
    const again = await call('POST', LOGIN, { body: { type: 'm.login.token', token: 'tok-1' } });
    expect(again.status).toBe(403);
    expect(again.json.errcode).toBe('M_FORBIDDEN');
  });
});

describe('refresh (Synapse semantics)', () => {
  it('rotates: RT0 -> RT1/AT1 with expires_in_ms, AT1 works, the famedly lifetime is recorded', async () => {
    const double = await start();
    const s0 = await loginWithRefresh();
    const r = await refresh(s0.refresh_token, { 'com.famedly.refresh_token_lifetime_ms': 3_600_000 });
    expect(r.status).toBe(200);
    expect(r.json.access_token).not.toBe(s0.access_token);
    expect(r.json.refresh_token).not.toBe(s0.refresh_token);
    expect(r.json.expires_in_ms).toBe(60_000);
    expect((await whoami(r.json.access_token)).json).toEqual({ user_id: '@alice:localhost', device_id: s0.device_id, is_guest: false });
    expect(double.usedRefreshTokens).toEqual([s0.refresh_token]);
    expect(double.requests.at(-2)!.body['com.famedly.refresh_token_lifetime_ms']).toBe(3_600_000);
    expect(double.sessions()).toEqual([expect.objectContaining({ accessToken: r.json.access_token, refreshToken: r.json.refresh_token })]);
  });

  it('a second refresh with RTn before ATn+1 is used succeeds and invalidates the first result', async () => {
    const double = await start();
    const s0 = await loginWithRefresh();
    const a = await refresh(s0.refresh_token);
    const b = await refresh(s0.refresh_token);
    expect(a.status).toBe(200);
    expect(b.status).toBe(200);
    expect(b.json.access_token).not.toBe(a.json.access_token);

    const loserAt = await whoami(a.json.access_token);
    expect(loserAt.status).toBe(401);
    expect(loserAt.json).toEqual({ errcode: 'M_UNKNOWN_TOKEN', error: 'Invalid access token passed.', soft_logout: false });
    const loserRt = await refresh(a.json.refresh_token);
    expect(loserRt.status).toBe(401);
    expect(loserRt.json.errcode).toBe('M_UNKNOWN_TOKEN');
    expect(loserRt.json.soft_logout).toBeUndefined();

    expect((await whoami(b.json.access_token)).status).toBe(200);
    expect(double.sessions().map((s) => s.accessToken)).toEqual([b.json.access_token]);
  });

  it('reusing RTn after ATn+1 was used -> 403 M_FORBIDDEN', async () => {
    await start();
    const s0 = await loginWithRefresh();
    const r1 = await refresh(s0.refresh_token);
    expect((await whoami(r1.json.access_token)).status).toBe(200);
    const reuse = await refresh(s0.refresh_token);
    expect(reuse.status).toBe(403);
    expect(reuse.json).toEqual({ errcode: 'M_FORBIDDEN', error: "refresh token isn't valid anymore" });
    // RT1 still works.
    expect((await refresh(r1.json.refresh_token)).status).toBe(200);
  });

  it('refreshing RTn+1 deletes RTn and ATn: reusing RTn then -> 401 "does not exist" (as Synapse 1.163 answers)', async () => {
    await start();
    const s0 = await loginWithRefresh();
    const r1 = await refresh(s0.refresh_token);
    // Until RT1 is refreshed, AT0 still works (Synapse keeps the last two refresh tokens and their access tokens).
    expect((await whoami(s0.access_token)).status).toBe(200);
    const r2 = await refresh(r1.json.refresh_token);
    expect(r2.status).toBe(200);
    expect((await refresh(s0.refresh_token)).json).toEqual({ errcode: 'M_UNKNOWN_TOKEN', error: 'refresh token does not exist' });
    expect((await whoami(s0.access_token)).status).toBe(401);
    expect((await whoami(r1.json.access_token)).status).toBe(200);
  });

  it('revokeOldAccessTokenOnRefresh kills ATn at refresh time', async () => {
    await start({ revokeOldAccessTokenOnRefresh: true });
    const s0 = await loginWithRefresh();
    expect((await whoami(s0.access_token)).status).toBe(200);
    await refresh(s0.refresh_token);
    expect((await whoami(s0.access_token)).status).toBe(401);
  });

  it('garbage -> 401 M_UNKNOWN_TOKEN without soft_logout; expired refresh token -> 403', async () => {
    const double = await start({ refreshTokenLifetimeMs: 600_000 });
    const garbage = await refresh('not-a-token');
    expect(garbage.status).toBe(401);
    expect(garbage.json.errcode).toBe('M_UNKNOWN_TOKEN');
    expect(garbage.json.soft_logout).toBeUndefined();
    expect((await call('POST', REFRESH, { body: {} })).status).toBe(400);

    const s0 = await loginWithRefresh();
    double.expireRefreshTokens();
    const expired = await refresh(s0.refresh_token);
    expect(expired.status).toBe(403);
    expect(expired.json).toEqual({ errcode: 'M_FORBIDDEN', error: 'The supplied refresh token has expired' });
  });

  it('session lifetime caps refreshes', async () => {
    await start({ sessionLifetimeMs: 20 });
    const s0 = await loginWithRefresh();
    expect(s0.expires_in_ms).toBeLessThanOrEqual(20);
    await new Promise((r) => setTimeout(r, 40));
    const r = await refresh(s0.refresh_token);
    expect(r.status).toBe(403);
    // The refresh token's own expiry is capped to the session's, so Synapse reports that first.
    expect(r.json).toEqual({ errcode: 'M_FORBIDDEN', error: 'The supplied refresh token has expired' });
  });

  it('only the configured refresh paths exist; /tokenrefresh is refused', async () => {
    await start({ refreshPaths: ['v1'] });
    const s0 = await loginWithRefresh();
    const v3 = await refresh(s0.refresh_token);
    expect(v3.status).toBe(404);
    expect(v3.json).toEqual({ errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' });
    const v1 = await call('POST', '/_matrix/client/v1/refresh', { body: { refresh_token: s0.refresh_token } });
    expect(v1.status).toBe(200);
    const unstable = await call('POST', '/_matrix/client/unstable/org.matrix.msc2918/refresh', { body: { refresh_token: 'x' } });
    expect(unstable.status).toBe(404);
    const old = await call('POST', '/_matrix/client/r0/tokenrefresh', { body: { refresh_token: 'x' } });
    expect(old.status).toBe(403);
    expect(old.json).toEqual({ errcode: 'M_FORBIDDEN', error: 'tokenrefresh is no longer supported.' });
  });
});

describe('authenticated endpoints', () => {
  it('missing token -> 401 M_MISSING_TOKEN; unknown -> soft_logout false', async () => {
    await start();
    const missing = await call('GET', WHOAMI);
    expect(missing.status).toBe(401);
    expect(missing.json.errcode).toBe('M_MISSING_TOKEN');
    expect((await whoami('syt_bogus')).json).toEqual({ errcode: 'M_UNKNOWN_TOKEN', error: 'Invalid access token passed.', soft_logout: false });
  });

  it('expired access token -> 401 soft_logout true, and it does not count as "used"', async () => {
    const double = await start();
    const s0 = await loginWithRefresh();
    double.expireAccessTokens();
    expect(double.accessTokenStatus(s0.access_token)).toBe('expired');
    const r = await whoami(s0.access_token);
    expect(r.status).toBe(401);
    expect(r.json).toEqual({ errcode: 'M_UNKNOWN_TOKEN', error: 'Access token has expired', soft_logout: true });
    const r1 = await refresh(s0.refresh_token);
    expect(r1.status).toBe(200);
    expect((await whoami(r1.json.access_token)).status).toBe(200);
  });

  it('logout accepts an expired token and deletes the device tokens', async () => {
    const double = await start();
    const s0 = await loginWithRefresh();
    double.expireAccessTokens();
    const out = await call('POST', '/_matrix/client/v3/logout', { token: s0.access_token });
    expect(out.status).toBe(200);
    expect(out.json).toEqual({});
    expect(double.sessions()).toEqual([]);
    expect((await refresh(s0.refresh_token)).status).toBe(401);
  });

  it('logout/all deletes every device of the user', async () => {
    const double = await start();
    const a = await loginWithRefresh();
    await loginWithRefresh();
    expect(double.sessions()).toHaveLength(2);
    expect((await call('POST', '/_matrix/client/v3/logout/all', { token: a.access_token })).json).toEqual({});
    expect(double.sessions()).toEqual([]);
  });

  it('revokeAll forgets every token', async () => {
    const double = await start();
    const s0 = await loginWithRefresh();
    double.revokeAll();
    expect((await whoami(s0.access_token)).status).toBe(401);
    expect((await refresh(s0.refresh_token)).status).toBe(401);
  });
});

describe('fault injection', () => {
  it('status + json, consumed in order, then back to normal; count()', async () => {
    const double = await start();
    double.inject(
      'GET /_matrix/client/versions',
      { status: 429, json: { errcode: 'M_LIMIT_EXCEEDED', error: 'slow down', retry_after_ms: 50 }, headers: { 'Retry-After': '1' } },
      { status: 502 },
    );
    const first = await call('GET', '/_matrix/client/versions');
    expect(first.status).toBe(429);
    expect(first.json.retry_after_ms).toBe(50);
    expect(first.headers.get('retry-after')).toBe('1');
    const second = await call('GET', '/_matrix/client/versions?x=1');
    expect(second.status).toBe(502);
    expect(second.json.errcode).toBe('M_UNKNOWN');
    expect((await call('GET', '/_matrix/client/versions')).status).toBe(200);
    expect(double.count('/versions')).toBe(3);
    expect(double.count('/_matrix/client/versions')).toBe(3);
    expect(double.count('/refresh')).toBe(0);
    expect(double.requests[1].path).toBe('/_matrix/client/versions?x=1');
  });

  it('html body from a proxy', async () => {
    const double = await start();
    double.inject(`POST ${REFRESH}`, { status: 502, body: '<html><body>Bad Gateway</body></html>' });
    const r = await refresh('whatever');
    expect(r.status).toBe(502);
    expect(r.headers.get('content-type')).toMatch(/^text\/html/);
    expect(r.json).toContain('<html>');
  });

  it('overrides the well-known', async () => {
    const double = await start();
    double.inject('GET /.well-known/matrix/client', { json: { 'm.homeserver': { base_url: double.url } } });
    const r = await call('GET', '/.well-known/matrix/client');
    expect(r.status).toBe(200);
    expect(r.json['m.homeserver'].base_url).toBe(double.url);
  });

  it('delay: a slow answer arrives late', async () => {
    const double = await start();
    double.inject('GET /_matrix/client/versions', { delayMs: 150 });
    const t0 = Date.now();
    const r = await call('GET', '/_matrix/client/versions');
    expect(r.status).toBe(200);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(140);
  });

  it('delay past the client timeout: the client aborts and no work is done', async () => {
    const double = await start();
    const s0 = await loginWithRefresh();
    double.inject(`POST ${REFRESH}`, { delayMs: 200 });
    await expect(call('POST', REFRESH, { body: { refresh_token: s0.refresh_token }, signal: AbortSignal.timeout(50) })).rejects.toThrow();
    await new Promise((r) => setTimeout(r, 300));
    expect(double.usedRefreshTokens).toEqual([]);
    expect(double.sessions()[0].refreshToken).toBe(s0.refresh_token);
  });

  it('delay past the client timeout: fetch times out, close() does not hang', async () => {
    const double = await start();
    const s0 = await loginWithRefresh();
    double.inject(`POST ${REFRESH}`, { delayMs: 30_000 });
    await expect(call('POST', REFRESH, { body: { refresh_token: s0.refresh_token }, signal: AbortSignal.timeout(100) })).rejects.toThrow();
    expect(double.count('/refresh')).toBe(1);
    // Still hanging server side; close() must end it promptly.
    const t0 = Date.now();
    await double.close();
    expect(Date.now() - t0).toBeLessThan(1000);
  });

  it('delay with a fault answer', async () => {
    const double = await start();
    double.inject(`GET ${WHOAMI}`, { delayMs: 50, status: 503 });
    expect((await whoami('x')).status).toBe(503);
  });

  it('reset: the socket is destroyed without an answer and nothing happens', async () => {
    const double = await start();
    const s0 = await loginWithRefresh();
    double.inject(`POST ${REFRESH}`, { reset: true });
    await expect(refresh(s0.refresh_token)).rejects.toThrow('fetch failed');
    expect(double.usedRefreshTokens).toEqual([]);
    expect(double.sessions()[0].refreshToken).toBe(s0.refresh_token);
  });

  it('commitThenReset: the refresh happens (tokens rotate) but the client sees a socket error', async () => {
    const double = await start();
    const s0 = await loginWithRefresh();
    double.inject(`POST ${REFRESH}`, { commitThenReset: true });
    await expect(refresh(s0.refresh_token)).rejects.toThrow('fetch failed');
    expect(double.usedRefreshTokens).toEqual([s0.refresh_token]);
    const [lost] = double.sessions();
    expect(lost.refreshToken).not.toBe(s0.refresh_token);
    // The spec's recovery: repeating the refresh with RT0 works and replaces the lost pair.
    const retry = await refresh(s0.refresh_token);
    expect(retry.status).toBe(200);
    expect(double.accessTokenStatus(lost.accessToken)).toBe('unknown');
    expect(double.sessions().map((s) => s.accessToken)).toEqual([retry.json.access_token]);
  });

  it('truncate: the real answer cut in half with a JSON content type (and the work is done)', async () => {
    const double = await start();
    const s0 = await loginWithRefresh();
    double.inject(`POST ${REFRESH}`, { truncate: true });
    const res = await fetch(double.url + REFRESH, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ refresh_token: s0.refresh_token }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/json');
    const text = await res.text();
    expect(text.startsWith('{"access_token":"syt_')).toBe(true);
    expect(() => JSON.parse(text)).toThrow(SyntaxError);
    expect(double.sessions()[0].refreshToken).not.toBe(s0.refresh_token);
  });

  it('wildcard method and headers-only faults; Date skew', async () => {
    const double = await start();
    double.inject('* /_matrix/client/versions', { headers: { 'X-Test': 'yes' } });
    const r = await call('GET', '/_matrix/client/versions');
    expect(r.status).toBe(200);
    expect(r.headers.get('x-test')).toBe('yes');
    double.setDateSkewMs(-3_600_000);
    const skewed = await call('GET', '/_matrix/client/versions');
    expect(Date.now() - Date.parse(skewed.headers.get('date')!)).toBeGreaterThan(3_500_000);
    expect(() => double.inject('nonsense', {})).toThrow();
  });
});
