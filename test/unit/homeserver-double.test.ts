import { createHash, randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from '@jest/globals';
import { startHomeserverDouble, type DoubleOptions, type HomeserverDouble, type OAuthOptions } from '../support/homeserver-double.js';

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
  return reply(res);
}

/** The answer's status, headers and body (parsed JSON, else the text). */
async function reply(res: Response): Promise<Reply> {
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

  it('garbage -> 401 M_UNKNOWN_TOKEN without soft_logout; expired refresh token -> 403', async () => {
    const double = await start();
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

  it('only the configured refresh paths exist (mxs falls back from /v3 and /v1 to the unstable one)', async () => {
    await start({ refreshPaths: ['unstable'] });
    const s0 = await loginWithRefresh();
    for (const path of [REFRESH, '/_matrix/client/v1/refresh']) {
      expect(await call('POST', path, { body: { refresh_token: s0.refresh_token } })).toMatchObject({ status: 404, json: { errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' } });
    }
    expect((await call('POST', '/_matrix/client/unstable/org.matrix.msc2918/refresh', { body: { refresh_token: s0.refresh_token } })).status).toBe(200);
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

// ---------------------------------------------------------------------------------------------
// OAuth 2.0: the Matrix Authentication Service double (`oauth` option).

const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
const TOKEN = '/oauth2/token';
const CLIENT_URI = 'https://mxs.example.org/';
const scopeFor = (deviceId: string) => `urn:matrix:client:api:* urn:matrix:client:device:${deviceId}`;

/** mxs-like client metadata: a native app using the loopback redirect. */
const CODE_CLIENT = {
  client_name: 'mxs',
  client_uri: CLIENT_URI,
  application_type: 'native',
  token_endpoint_auth_method: 'none',
  redirect_uris: ['http://127.0.0.1/callback'],
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
};
/** A device-only client. */
const DEVICE_CLIENT = {
  client_name: 'mxs device',
  client_uri: CLIENT_URI,
  application_type: 'native',
  token_endpoint_auth_method: 'none',
  grant_types: [DEVICE_GRANT, 'refresh_token'],
  response_types: [],
};

async function postForm(path: string, params: Record<string, string>, contentType = 'application/x-www-form-urlencoded'): Promise<Reply> {
  return reply(await fetch(hs!.url + path, { method: 'POST', headers: { 'content-type': contentType }, body: new URLSearchParams(params).toString() }));
}

async function register(meta: Record<string, unknown>): Promise<string> {
  const r = await call('POST', '/oauth2/registration', { body: meta });
  expect(r.status).toBe(201);
  return r.json.client_id as string;
}

interface Tokens {
  access_token: string;
  refresh_token: string;
  expires_in: number;
  token_type: string;
  scope: string;
}

/** Device grant end to end: authorize, approve, exchange. */
async function deviceLogin(clientId: string, deviceId = 'DEVICEAAAA1', localpart?: string): Promise<Tokens> {
  const auth = await postForm('/oauth2/device', { client_id: clientId, scope: scopeFor(deviceId) });
  expect(auth.status).toBe(200);
  hs!.approveDevice(auth.json.user_code, localpart);
  const r = await postForm(TOKEN, { grant_type: DEVICE_GRANT, device_code: auth.json.device_code, client_id: clientId });
  expect(r.status).toBe(200);
  return r.json as Tokens;
}

function pkce() {
  const verifier = randomBytes(32).toString('base64url');
  return { verifier, challenge: createHash('sha256').update(verifier).digest('base64url') };
}

/** GET /authorize without following the redirect. */
async function authorize(params: Record<string, string>): Promise<{ status: number; location: string | null; json: any }> {
  const res = await fetch(`${hs!.url}/authorize?${new URLSearchParams(params)}`, { redirect: 'manual' });
  const text = await res.text();
  return { status: res.status, location: res.headers.get('location'), json: text === '' ? undefined : JSON.parse(text) };
}

function authorizeParams(clientId: string, challenge: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    response_type: 'code',
    client_id: clientId,
    redirect_uri: 'http://127.0.0.1:43123/callback',
    scope: scopeFor('CODEDEVICE1'),
    state: 'state-123',
    code_challenge: challenge,
    code_challenge_method: 'S256',
    ...extra,
  };
}

/** The token request that exchanges an authorization code (from `authorize` with `verifier`'s challenge). */
function codeExchange(clientId: string, a: { location: string | null }, verifier: string): Record<string, string> {
  const code = new URL(a.location!).searchParams.get('code')!;
  return { grant_type: 'authorization_code', code, redirect_uri: 'http://127.0.0.1:43123/callback', client_id: clientId, code_verifier: verifier };
}

/** /authorize with a fresh PKCE pair; the token request for its code. */
async function authorizedExchange(clientId: string): Promise<Record<string, string>> {
  const { verifier, challenge } = pkce();
  const a = await authorize(authorizeParams(clientId, challenge));
  expect(a.status).toBe(302);
  return codeExchange(clientId, a, verifier);
}

/** Authorization code + PKCE end to end. */
async function codeLogin(clientId: string): Promise<Tokens> {
  const r = await postForm(TOKEN, await authorizedExchange(clientId));
  expect(r.status).toBe(200);
  return r.json as Tokens;
}

const oauthRefresh = (rt: string, clientId: string) => postForm(TOKEN, { grant_type: 'refresh_token', refresh_token: rt, client_id: clientId });

describe('OAuth discovery (auth_metadata)', () => {
  it.each(['/_matrix/client/v1/auth_metadata', '/_matrix/client/unstable/org.matrix.msc2965/auth_metadata', TOKEN, '/oauth2/registration'])(
    'without the oauth option %s answers 404 M_UNRECOGNIZED, as legacy servers do',
    async (path) => {
      await start();
      const r = await call(path.startsWith('/oauth2') ? 'POST' : 'GET', path);
      expect(r.status).toBe(404);
      expect(r.json).toEqual({ errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' });
    },
  );

  it.each(['/_matrix/client/v1/auth_metadata', '/_matrix/client/unstable/org.matrix.msc2965/auth_metadata', '/.well-known/openid-configuration'])(
    'with oauth, %s serves RFC 8414 metadata with MAS endpoints',
    async (path) => {
      const double = await start({ oauth: {} });
      const r = await call('GET', path);
      expect(r.status).toBe(200);
      const u = double.url;
      expect(double.issuer).toBe(`${u}/`);
      expect(r.json).toEqual({
        issuer: `${u}/`,
        authorization_endpoint: `${u}/authorize`,
        token_endpoint: `${u}/oauth2/token`,
        revocation_endpoint: `${u}/oauth2/revoke`,
        registration_endpoint: `${u}/oauth2/registration`,
        device_authorization_endpoint: `${u}/oauth2/device`,
        account_management_uri: `${u}/account/`,
        account_management_actions_supported: [
          'org.matrix.profile',
          'org.matrix.devices_list',
          'org.matrix.device_view',
          'org.matrix.device_delete',
          'org.matrix.account_deactivate',
          'org.matrix.cross_signing_reset',
        ],
        grant_types_supported: ['authorization_code', 'refresh_token', DEVICE_GRANT],
        code_challenge_methods_supported: ['S256'],
        token_endpoint_auth_methods_supported: ['none'],
        authorization_response_iss_parameter_supported: true,
      });
    },
  );

  it('issuer is null and the OAuth controls throw without the oauth option', async () => {
    const double = await start();
    expect(double.issuer).toBeNull();
    expect(() => double.approveDevice('ABCDEF')).toThrow(/oauth option/);
    expect(() => double.denyDevice('ABCDEF')).toThrow(/oauth option/);
    expect(() => double.expireDeviceCodes()).toThrow(/oauth option/);
  });
});

describe('OAuth client registration (RFC 7591, MAS policy)', () => {
  it.each([
    ['a native authorization-code client (loopback redirect without port)', CODE_CLIENT],
    ['a device-only client (response_types [])', DEVICE_CLIENT],
    ['a [::1] and a localhost redirect', { ...CODE_CLIENT, redirect_uris: ['http://[::1]/cb', 'http://localhost/cb?x=1'] }],
  ])('registers %s: 201 with a client_id and the metadata', async (_name, meta) => {
    const double = await start({ oauth: {} });
    const r = await call('POST', '/oauth2/registration', { body: meta });
    expect(r.status).toBe(201);
    expect(r.json.client_id).toMatch(/^[0-9A-HJKMNP-TV-Z]{26}$/);
    expect(r.json).toMatchObject(meta);
    expect(double.clients()).toEqual([expect.objectContaining({ clientId: r.json.client_id, metadata: meta, grantTypes: meta.grant_types })]);
  });

  const without = (key: string) => Object.fromEntries(Object.entries(CODE_CLIENT).filter(([k]) => k !== key));
  it.each([
    ['client_uri missing', 'invalid_client_metadata', without('client_uri')],
    ['client_uri not https', 'invalid_client_metadata', { ...CODE_CLIENT, client_uri: 'http://mxs.example.org/' }],
    ['client_uri localhost', 'invalid_client_metadata', { ...CODE_CLIENT, client_uri: 'https://localhost/' }],
    ['client_uri loopback IP', 'invalid_client_metadata', { ...CODE_CLIENT, client_uri: 'https://127.0.0.1/' }],
    ['client_uri with a user', 'invalid_client_metadata', { ...CODE_CLIENT, client_uri: 'https://me:pw@mxs.example.org/' }],
    ['token_endpoint_auth_method missing', 'invalid_client_metadata', without('token_endpoint_auth_method')],
    ['token_endpoint_auth_method client_secret_post', 'invalid_client_metadata', { ...CODE_CLIENT, token_endpoint_auth_method: 'client_secret_post' }],
    ['an unknown grant type', 'invalid_client_metadata', { ...CODE_CLIENT, grant_types: ['password'] }],
    ['device-only without response_types (defaults to code)', 'invalid_client_metadata', Object.fromEntries(Object.entries(DEVICE_CLIENT).filter(([k]) => k !== 'response_types'))],
    ['authorization_code without response type code', 'invalid_client_metadata', { ...CODE_CLIENT, response_types: [] }],
    ['grant_types not a list', 'invalid_client_metadata', { ...CODE_CLIENT, grant_types: 'authorization_code' }],
    ['a bad application_type', 'invalid_client_metadata', { ...CODE_CLIENT, application_type: 'desktop' }],
    ['a web client', 'invalid_client_metadata', { ...CODE_CLIENT, application_type: 'web' }],
    ['no application_type (web)', 'invalid_client_metadata', without('application_type')],
    ['authorization_code without redirect_uris', 'invalid_redirect_uri', without('redirect_uris')],
    ['a loopback redirect with a port', 'invalid_redirect_uri', { ...CODE_CLIENT, redirect_uris: ['http://127.0.0.1:8080/callback'] }],
    ['a loopback redirect with port 80 spelled out', 'invalid_redirect_uri', { ...CODE_CLIENT, redirect_uris: ['http://127.0.0.1:80/callback'] }],
    ['a native https redirect', 'invalid_redirect_uri', { ...CODE_CLIENT, redirect_uris: ['https://mxs.example.org/callback'] }],
    ['an https loopback redirect', 'invalid_redirect_uri', { ...CODE_CLIENT, redirect_uris: ['https://127.0.0.1/callback'] }],
    ['a private-use scheme', 'invalid_redirect_uri', { ...CODE_CLIENT, redirect_uris: ['org.example.mxs:/callback'] }],
    ['a redirect with a fragment', 'invalid_redirect_uri', { ...CODE_CLIENT, redirect_uris: ['http://127.0.0.1/cb#x'] }],
  ])('refuses %s: 400 %s', async (_name, error, meta) => {
    const double = await start({ oauth: {} });
    const r = await call('POST', '/oauth2/registration', { body: meta });
    expect(r.status).toBe(400);
    expect(r.json).toEqual({ error, error_description: expect.any(String) });
    expect(double.clients()).toEqual([]);
  });

  it('refuses a body that is not a JSON object', async () => {
    await start({ oauth: {} });
    for (const body of ['{nope', '[1]']) {
      const r = await call('POST', '/oauth2/registration', { body });
      expect(r.status).toBe(400);
      expect(r.json.error).toBe('invalid_client_metadata');
    }
  });
});

describe('OAuth device authorization grant (RFC 8628, as MAS does it)', () => {
  it('answers with MAS defaults: expires_in 1200, interval 5, verification_uri ending in /link, no verification_uri_complete', async () => {
    const double = await start({ oauth: {} });
    const clientId = await register(DEVICE_CLIENT);
    const r = await postForm('/oauth2/device', { client_id: clientId, scope: scopeFor('DEVICEAAAA1') });
    expect(r.status).toBe(200);
    expect(r.json).toEqual({
      device_code: expect.stringMatching(/^[A-Za-z0-9]{32}$/),
      user_code: expect.stringMatching(/^[A-Z0-9]{6}$/),
      verification_uri: `${double.url}/link`,
      expires_in: 1200,
      interval: 5,
    });
    expect(double.deviceAuthorizations()).toEqual([
      { userCode: r.json.user_code, deviceCode: r.json.device_code, clientId, scope: scopeFor('DEVICEAAAA1'), deviceId: 'DEVICEAAAA1', status: 'pending', approvedAs: null, polls: 0 },
    ]);
  });

  it('the interval is an option (0 allowed)', async () => {
    await start({ oauth: { deviceIntervalSec: 0 } });
    const clientId = await register(DEVICE_CLIENT);
    const r = await postForm('/oauth2/device', { client_id: clientId, scope: scopeFor('DEVICEAAAA1') });
    expect(r.json.interval).toBe(0);
  });

  it('polling: 403 authorization_pending (never slow_down, however fast), then tokens once approved; whoami gives the user and the scope device', async () => {
    const double = await start({ oauth: {}, users: { alice: 'a', bob: 'b' } });
    const clientId = await register(DEVICE_CLIENT);
    const auth = await postForm('/oauth2/device', { client_id: clientId, scope: scopeFor('MYDEVICE42') });
    const poll = () => postForm(TOKEN, { grant_type: DEVICE_GRANT, device_code: auth.json.device_code, client_id: clientId });
    for (let i = 0; i < 5; i++) {
      const p = await poll();
      expect(p.status).toBe(403);
      expect(p.json).toEqual({ error: 'authorization_pending', error_description: expect.any(String) });
    }
    double.approveDevice(auth.json.user_code.toLowerCase(), 'bob');
    expect(double.deviceAuthorizations()[0]).toMatchObject({ status: 'approved', approvedAs: 'bob', polls: 5 });
    const t = await poll();
    expect(t.status).toBe(200);
    expect(t.json).toMatchObject({ token_type: 'Bearer', expires_in: 300, scope: scopeFor('MYDEVICE42') });
    expect((await whoami(t.json.access_token)).json).toEqual({ user_id: '@bob:localhost', device_id: 'MYDEVICE42', is_guest: false });
    expect(double.deviceAuthorizations()[0].status).toBe('exchanged');

    const again = await poll();
    expect(again.status).toBe(400);
    expect(again.json.error).toBe('invalid_grant');
  });

  it.each([
    ['denied', 'access_denied', (d: HomeserverDouble, code: string) => d.denyDevice(code)],
    ['expired (expireDeviceCodes)', 'expired_token', (d: HomeserverDouble) => d.expireDeviceCodes()],
    ['approved but expired (expiry is checked first)', 'expired_token', (d: HomeserverDouble, code: string) => (d.approveDevice(code), d.expireDeviceCodes())],
  ])('polling a code that was %s: 403 %s', async (_name, error, act) => {
    const double = await start({ oauth: {} });
    const clientId = await register(DEVICE_CLIENT);
    const auth = await postForm('/oauth2/device', { client_id: clientId, scope: scopeFor('DEVICEAAAA1') });
    act(double, auth.json.user_code);
    const p = await postForm(TOKEN, { grant_type: DEVICE_GRANT, device_code: auth.json.device_code, client_id: clientId });
    expect(p.status).toBe(403);
    expect(p.json.error).toBe(error);
    expect(double.sessions()).toEqual([]);
  });

  it('unknown device code or another client → 400 invalid_grant; the test controls refuse unknown codes and users', async () => {
    const double = await start({ oauth: {} });
    const clientId = await register(DEVICE_CLIENT);
    const other = await register(DEVICE_CLIENT);
    const auth = await postForm('/oauth2/device', { client_id: clientId, scope: scopeFor('DEVICEAAAA1') });
    expect((await postForm(TOKEN, { grant_type: DEVICE_GRANT, device_code: 'nope', client_id: clientId })).json.error).toBe('invalid_grant');
    expect((await postForm(TOKEN, { grant_type: DEVICE_GRANT, device_code: auth.json.device_code, client_id: other })).json.error).toBe('invalid_grant');
    expect(() => double.approveDevice('ZZZZZZ')).toThrow(/no device authorization/);
    expect(() => double.denyDevice('ZZZZZZ')).toThrow(/no device authorization/);
    expect(() => double.approveDevice(auth.json.user_code, 'mallory')).toThrow(/unknown user/);
  });

  it('device authorization: unknown client → 401 invalid_client; a client without the device grant → 400 unauthorized_client', async () => {
    await start({ oauth: {} });
    const codeClient = await register(CODE_CLIENT);
    const unknown = await postForm('/oauth2/device', { client_id: 'nope', scope: scopeFor('DEVICEAAAA1') });
    expect(unknown.status).toBe(401);
    expect(unknown.json.error).toBe('invalid_client');
    const missing = await postForm('/oauth2/device', { scope: scopeFor('DEVICEAAAA1') });
    expect(missing.status).toBe(401);
    const r = await postForm('/oauth2/device', { client_id: codeClient, scope: scopeFor('DEVICEAAAA1') });
    expect(r.status).toBe(400);
    expect(r.json.error).toBe('unauthorized_client');
  });

  it.each([
    ['no scope', undefined],
    ['no api scope', 'urn:matrix:client:device:DEVICEAAAA1'],
    ['no device scope', 'urn:matrix:client:api:*'],
    ['two device scopes', `${scopeFor('DEVICEAAAA1')} urn:matrix:client:device:DEVICEBBBB2`],
    ['an unknown extra scope', `${scopeFor('DEVICEAAAA1')} urn:synapse:admin:*`],
    ['the old unstable api scope', 'urn:matrix:org.matrix.msc2967.client:api:* urn:matrix:client:device:DEVICEAAAA1'],
    ['an empty device ID', 'urn:matrix:client:api:* urn:matrix:client:device:'],
    ['a device ID with bad characters', 'urn:matrix:client:api:* urn:matrix:client:device:A%B'],
  ])('scope with %s → 400 invalid_scope', async (_name, scope) => {
    await start({ oauth: {} });
    const clientId = await register(DEVICE_CLIENT);
    const params: Record<string, string> = { client_id: clientId };
    if (scope !== undefined) params.scope = scope;
    const r = await postForm('/oauth2/device', params);
    expect(r.status).toBe(400);
    expect(r.json.error).toBe('invalid_scope');
  });

  it('scope tokens may come in any order', async () => {
    await start({ oauth: {} });
    const clientId = await register(DEVICE_CLIENT);
    const r = await postForm('/oauth2/device', { client_id: clientId, scope: 'urn:matrix:client:device:DEV urn:matrix:client:api:*' });
    expect(r.status).toBe(200);
  });
});

describe('OAuth form endpoints', () => {
  it.each(['/oauth2/device', TOKEN, '/oauth2/revoke'])('%s needs a form body: JSON → 400 invalid_request', async (path) => {
    await start({ oauth: {} });
    const clientId = await register(DEVICE_CLIENT);
    const r = await call('POST', path, { body: { client_id: clientId, grant_type: 'refresh_token', token: 'x', scope: scopeFor('D') } });
    expect(r.status).toBe(400);
    expect(r.json.error).toBe('invalid_request');
  });

  it('a repeated parameter → 400 invalid_request; recorded requests keep the parsed form', async () => {
    const double = await start({ oauth: {} });
    const clientId = await register(DEVICE_CLIENT);
    const res = await fetch(double.url + TOKEN, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded; charset=UTF-8' },
      body: `grant_type=refresh_token&refresh_token=a&refresh_token=b&client_id=${clientId}`,
    });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: string }).error).toBe('invalid_request');
    await postForm(TOKEN, { grant_type: DEVICE_GRANT, device_code: 'x y', client_id: clientId });
    expect(double.requests.at(-1)).toMatchObject({ method: 'POST', path: TOKEN, body: { grant_type: DEVICE_GRANT, device_code: 'x y', client_id: clientId } });
  });

  it.each([
    ['a missing grant_type', 400, 'invalid_request', {}],
    ['an unknown grant_type', 400, 'unsupported_grant_type', { grant_type: 'password' }],
    ['an unknown client', 401, 'invalid_client', { grant_type: DEVICE_GRANT, device_code: 'x', client_id: 'nope' }],
    ['a grant the client did not register', 400, 'unauthorized_client', { grant_type: 'authorization_code', code: 'x', client_id: '<device client>' }],
  ])('token endpoint: %s → %i %s, with Cache-Control: no-store', async (_name, status, error, params) => {
    await start({ oauth: {} });
    const clientId = await register(DEVICE_CLIENT);
    const form = Object.fromEntries(Object.entries(params).map(([k, v]) => [k, v === '<device client>' ? clientId : v]));
    const r = await postForm(TOKEN, form);
    expect(r.status).toBe(status);
    expect(r.json).toEqual({ error, error_description: expect.any(String) });
    expect(r.headers.get('cache-control')).toBe('no-store');
  });
});

describe('OAuth authorization code grant with PKCE', () => {
  it('302 to the loopback redirect on any port with code, state and iss; the exchange gives a session; login_hint is recorded', async () => {
    const double = await start({ oauth: {} });
    const clientId = await register(CODE_CLIENT);
    const { verifier, challenge } = pkce();
    const a = await authorize(authorizeParams(clientId, challenge, { login_hint: 'mxid:@alice:localhost' }));
    expect(a.status).toBe(302);
    const loc = new URL(a.location!);
    expect(`${loc.origin}${loc.pathname}`).toBe('http://127.0.0.1:43123/callback');
    expect([...loc.searchParams.keys()]).toEqual(['code', 'state', 'iss']);
    expect(loc.searchParams.get('state')).toBe('state-123');
    expect(loc.searchParams.get('iss')).toBe(`${double.url}/`);
    expect(double.authorizationRequests).toEqual([
      expect.objectContaining({ clientId, loginHint: 'mxid:@alice:localhost', state: 'state-123', scope: scopeFor('CODEDEVICE1'), outcome: 'approved' }),
    ]);

    const t = await postForm(TOKEN, codeExchange(clientId, a, verifier));
    expect(t.status).toBe(200);
    expect((await whoami(t.json.access_token)).json).toEqual({ user_id: '@alice:localhost', device_id: 'CODEDEVICE1', is_guest: false });
  });

  it.each([
    ['an unknown client', { client_id: 'nope' }, 'invalid_client'],
    ['an unregistered redirect path', { redirect_uri: 'http://127.0.0.1:43123/other' }, 'invalid_request'],
    ['an unregistered redirect host', { redirect_uri: 'http://localhost:43123/callback' }, 'invalid_request'],
    ['an https loopback redirect', { redirect_uri: 'https://127.0.0.1:43123/callback' }, 'invalid_request'],
    ['no redirect_uri', { redirect_uri: '' }, 'invalid_request'],
    ['response_mode=fragment', { response_mode: 'fragment' }, 'invalid_request'],
  ])('%s: 400 JSON, no redirect', async (_name, extra, error) => {
    const double = await start({ oauth: {} });
    const clientId = await register(CODE_CLIENT);
    const params = authorizeParams(clientId, pkce().challenge, extra);
    if (params.redirect_uri === '') delete params.redirect_uri;
    const a = await authorize(params);
    expect(a.status).toBe(400);
    expect(a.location).toBeNull();
    expect(a.json.error).toBe(error);
    expect(double.authorizationRequests[0].outcome).toBe('rejected');
  });

  it.each([
    ['a bad response_type', 'unsupported_response_type', { response_type: 'token' }],
    ['a bad scope', 'invalid_scope', { scope: 'urn:matrix:client:api:*' }],
    ['no code_challenge', 'invalid_request', { code_challenge: '' }],
    ['code_challenge_method plain', 'invalid_request', { code_challenge_method: 'plain' }],
    ['no code_challenge_method', 'invalid_request', { code_challenge_method: '' }],
  ])('%s: redirected with error=%s, state and iss', async (_name, error, extra) => {
    const double = await start({ oauth: {} });
    const clientId = await register(CODE_CLIENT);
    const params = authorizeParams(clientId, pkce().challenge);
    for (const [k, v] of Object.entries(extra)) {
      if (v === '') delete params[k];
      else params[k] = v;
    }
    const a = await authorize(params);
    expect(a.status).toBe(302);
    const q = new URL(a.location!).searchParams;
    expect(q.get('error')).toBe(error);
    expect(q.get('state')).toBe('state-123');
    expect(q.get('iss')).toBe(`${double.url}/`);
    expect(q.get('code')).toBeNull();
    expect(double.authorizationRequests[0].outcome).toBe(error);
  });

  it('a client without the authorization_code grant: redirected with unauthorized_client', async () => {
    await start({ oauth: {} });
    const clientId = await register({ ...DEVICE_CLIENT, redirect_uris: ['http://127.0.0.1/callback'] });
    const a = await authorize(authorizeParams(clientId, pkce().challenge));
    expect(new URL(a.location!).searchParams.get('error')).toBe('unauthorized_client');
  });

  it('authorizeAs null: the user denies → error=access_denied with state', async () => {
    await start({ oauth: { authorizeAs: null } });
    const clientId = await register(CODE_CLIENT);
    const q = new URL((await authorize(authorizeParams(clientId, pkce().challenge))).location!).searchParams;
    expect([q.get('error'), q.get('state')]).toEqual(['access_denied', 'state-123']);
  });

  it('authorizeAs a localpart approves as that user; an unknown one is refused at start', async () => {
    await start({ oauth: { authorizeAs: 'bob' }, users: { alice: 'a', bob: 'b' } });
    const t = await codeLogin(await register(CODE_CLIENT));
    expect((await whoami(t.access_token)).json.user_id).toBe('@bob:localhost');
    await expect(startHomeserverDouble({ oauth: { authorizeAs: 'mallory' } })).rejects.toThrow(/unknown user/);
  });

  it.each([
    ['a wrong code_verifier', (p: Record<string, string>) => ({ ...p, code_verifier: pkce().verifier })],
    ['no code_verifier', (p: Record<string, string>) => Object.fromEntries(Object.entries(p).filter(([k]) => k !== 'code_verifier'))],
    ['a short code_verifier', (p: Record<string, string>) => ({ ...p, code_verifier: 'abc' })],
    ['another redirect_uri port', (p: Record<string, string>) => ({ ...p, redirect_uri: 'http://127.0.0.1:9999/callback' })],
    ['no redirect_uri', (p: Record<string, string>) => Object.fromEntries(Object.entries(p).filter(([k]) => k !== 'redirect_uri'))],
    ['another client', (p: Record<string, string>, other: string) => ({ ...p, client_id: other })],
    ['an unknown code', (p: Record<string, string>) => ({ ...p, code: 'nope' })],
  ])('code exchange with %s → 400 invalid_grant', async (_name, change) => {
    const double = await start({ oauth: {} });
    const clientId = await register(CODE_CLIENT);
    const other = await register(CODE_CLIENT);
    const r = await postForm(TOKEN, change(await authorizedExchange(clientId), other));
    expect(r.status).toBe(400);
    expect(r.json.error).toBe('invalid_grant');
    expect(double.sessions()).toEqual([]);
  });

  it('a code used twice → invalid_grant, and the session it gave ends', async () => {
    const double = await start({ oauth: {} });
    const params = await authorizedExchange(await register(CODE_CLIENT));
    const first = await postForm(TOKEN, params);
    expect(first.status).toBe(200);
    const second = await postForm(TOKEN, params);
    expect(second.status).toBe(400);
    expect(second.json.error).toBe('invalid_grant');
    expect((await whoami(first.json.access_token)).status).toBe(401);
    expect(double.sessions()).toEqual([]);
  });
});

describe('OAuth tokens and refresh (MAS semantics)', () => {
  it.each([
    ['default lifetime', {}, 300],
    ['accessTokenLifetimeSec: 2', { accessTokenLifetimeSec: 2 }, 2],
  ])('token response (%s): mat_/mar_ tokens, Bearer, expires_in in seconds, scope, no-store', async (_name, oauthOpts, seconds) => {
    const double = await start({ oauth: oauthOpts });
    const clientId = await register(DEVICE_CLIENT);
    const auth = await postForm('/oauth2/device', { client_id: clientId, scope: scopeFor('DEVICEAAAA1') });
    double.approveDevice(auth.json.user_code);
    const t0 = Date.now();
    const r = await postForm(TOKEN, { grant_type: DEVICE_GRANT, device_code: auth.json.device_code, client_id: clientId });
    expect(r.json).toEqual({
      access_token: expect.stringMatching(/^mat_[A-Za-z0-9]{30}_[A-Za-z0-9]{6}$/),
      refresh_token: expect.stringMatching(/^mar_[A-Za-z0-9]{30}_[A-Za-z0-9]{6}$/),
      token_type: 'Bearer',
      expires_in: seconds,
      scope: scopeFor('DEVICEAAAA1'),
    });
    expect(r.headers.get('cache-control')).toBe('no-store');
    const [session] = double.sessions();
    expect(session.expiresAt! - t0).toBeGreaterThanOrEqual(seconds * 1000 - 50);
    expect(session.expiresAt! - t0).toBeLessThanOrEqual(seconds * 1000 + 1000);
  });

  it('refresh rotates both tokens, revokes the old access token at once, and counts in usedRefreshTokens', async () => {
    const double = await start({ oauth: {} });
    const clientId = await register(DEVICE_CLIENT);
    const t0 = await deviceLogin(clientId);
    const r = await oauthRefresh(t0.refresh_token, clientId);
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ token_type: 'Bearer', expires_in: 300, scope: scopeFor('DEVICEAAAA1') });
    expect(r.json.access_token).not.toBe(t0.access_token);
    expect(r.json.refresh_token).not.toBe(t0.refresh_token);
    expect(double.accessTokenStatus(t0.access_token)).toBe('unknown');
    expect((await whoami(t0.access_token)).status).toBe(401);
    expect((await whoami(r.json.access_token)).json.device_id).toBe('DEVICEAAAA1');
    expect(double.usedRefreshTokens).toEqual([t0.refresh_token]);
    expect(double.sessions()).toEqual([expect.objectContaining({ accessToken: r.json.access_token, refreshToken: r.json.refresh_token })]);
  });

  it('a lost response: RTn may be replayed until ATn+1 is used; after that 400 invalid_grant and the session survives', async () => {
    const double = await start({ oauth: {} });
    const clientId = await register(DEVICE_CLIENT);
    const t0 = await deviceLogin(clientId);
    const lost = await oauthRefresh(t0.refresh_token, clientId);
    const replay = await oauthRefresh(t0.refresh_token, clientId);
    expect(replay.status).toBe(200);
    // The replay revoked the lost pair.
    expect((await whoami(lost.json.access_token)).status).toBe(401);
    expect((await oauthRefresh(lost.json.refresh_token, clientId)).json.error).toBe('invalid_grant');
    // Using ATn+1 closes the grace.
    expect((await whoami(replay.json.access_token)).status).toBe(200);
    const late = await oauthRefresh(t0.refresh_token, clientId);
    expect(late.status).toBe(400);
    expect(late.json.error).toBe('invalid_grant');
    expect((await whoami(replay.json.access_token)).status).toBe(200);
    expect((await oauthRefresh(replay.json.refresh_token, clientId)).status).toBe(200);
    expect(double.usedRefreshTokens).toHaveLength(5);
  });

  it('a replay after RTn+1 was itself refreshed → 400 invalid_grant', async () => {
    await start({ oauth: {} });
    const clientId = await register(DEVICE_CLIENT);
    const t0 = await deviceLogin(clientId);
    const t1 = await oauthRefresh(t0.refresh_token, clientId);
    expect((await oauthRefresh(t1.json.refresh_token, clientId)).status).toBe(200);
    expect((await oauthRefresh(t0.refresh_token, clientId)).json.error).toBe('invalid_grant');
  });

  it.each([
    ['an unknown refresh token', 400, 'invalid_grant', 'same', async (_d: HomeserverDouble, _t: Tokens) => 'mar_nope'],
    ['a revoked session', 400, 'invalid_grant', 'same', async (_d: HomeserverDouble, t: Tokens, c: string) => (await postForm('/oauth2/revoke', { token: t.access_token, client_id: c }), t.refresh_token)],
    ['an expired refresh token', 400, 'invalid_grant', 'same', async (d: HomeserverDouble, t: Tokens) => (d.expireRefreshTokens(), t.refresh_token)],
    ['another client', 400, 'invalid_grant', 'other', async (_d: HomeserverDouble, t: Tokens) => t.refresh_token],
    ['an unknown client', 401, 'invalid_client', 'nope', async (_d: HomeserverDouble, t: Tokens) => t.refresh_token],
    ['a client without the refresh_token grant', 400, 'unauthorized_client', 'norefresh', async (_d: HomeserverDouble, t: Tokens) => t.refresh_token],
  ])('refresh with %s → %i %s', async (_name, status, error, which, prepare) => {
    const double = await start({ oauth: {} });
    const clientId = await register(DEVICE_CLIENT);
    const ids: Record<string, string> = {
      same: clientId,
      other: await register(DEVICE_CLIENT),
      nope: 'nope',
      norefresh: await register({ ...DEVICE_CLIENT, grant_types: [DEVICE_GRANT] }),
    };
    const t = await deviceLogin(clientId);
    const rt = await prepare(double, t, clientId);
    const r = await oauthRefresh(rt, ids[which]);
    expect(r.status).toBe(status);
    expect(r.json.error).toBe(error);
  });

  it.each([
    ['an expired (expireAccessTokens)', async (d: HomeserverDouble, _t: Tokens) => d.expireAccessTokens()],
    ['a revoked', async (_d: HomeserverDouble, t: Tokens, c: string) => void (await postForm('/oauth2/revoke', { token: t.refresh_token, client_id: c }))],
    ['an unknown', null],
  ])('%s OAuth access token → 401 M_UNKNOWN_TOKEN "Token is not active", soft_logout false', async (_name, prepare) => {
    const double = await start({ oauth: {} });
    const clientId = await register(DEVICE_CLIENT);
    const t = await deviceLogin(clientId);
    expect((await whoami(t.access_token)).status).toBe(200);
    if (prepare) await prepare(double, t, clientId);
    const r = await whoami(prepare ? t.access_token : 'mat_unknown');
    expect(r.status).toBe(401);
    expect(r.json).toEqual({ errcode: 'M_UNKNOWN_TOKEN', error: 'Token is not active', soft_logout: false });
  });

  it('an expired access token that is refused does not close the replay grace', async () => {
    const double = await start({ oauth: {} });
    const clientId = await register(DEVICE_CLIENT);
    const t0 = await deviceLogin(clientId);
    const t1 = await oauthRefresh(t0.refresh_token, clientId);
    double.expireAccessTokens();
    expect(double.accessTokenStatus(t1.json.access_token)).toBe('expired');
    expect((await whoami(t1.json.access_token)).status).toBe(401);
    expect((await oauthRefresh(t0.refresh_token, clientId)).status).toBe(200);
  });
});

describe('OAuth revocation (RFC 7009, as MAS does it)', () => {
  it.each(['access_token', 'refresh_token'])('revoking the %s ends the session: both tokens die; recorded', async (which) => {
    const double = await start({ oauth: {} });
    const clientId = await register(DEVICE_CLIENT);
    const t = await deviceLogin(clientId);
    const token = which === 'access_token' ? t.access_token : t.refresh_token;
    const r = await postForm('/oauth2/revoke', { token, token_type_hint: which, client_id: clientId });
    expect(r.status).toBe(200);
    expect((await whoami(t.access_token)).status).toBe(401);
    expect((await oauthRefresh(t.refresh_token, clientId)).json.error).toBe('invalid_grant');
    expect(double.sessions()).toEqual([]);
    expect(double.revocations).toEqual([{ token, clientId, revoked: true }]);
  });

  it.each([
    ['an unknown token', async (_d: HomeserverDouble, _t: Tokens, _c: string) => 'mat_unknown'],
    ['an expired access token (the session survives)', async (d: HomeserverDouble, t: Tokens) => (d.expireAccessTokens(), t.access_token)],
    ['a consumed refresh token (the session survives)', async (_d: HomeserverDouble, t: Tokens, c: string) => (await oauthRefresh(t.refresh_token, c), t.refresh_token)],
  ])('revoking %s → 200 and nothing happens', async (_name, prepare) => {
    const double = await start({ oauth: {} });
    const clientId = await register(DEVICE_CLIENT);
    const t = await deviceLogin(clientId);
    const token = await prepare(double, t, clientId);
    const before = double.sessions();
    const r = await postForm('/oauth2/revoke', { token, client_id: clientId });
    expect(r.status).toBe(200);
    expect(double.sessions()).toEqual(before);
    expect(double.sessions()).toHaveLength(1);
    expect(double.revocations).toEqual([{ token, clientId, revoked: false }]);
  });

  it("another client's token → 400 unauthorized_client; an unknown client → 401 invalid_client; no token → 400", async () => {
    const double = await start({ oauth: {} });
    const clientId = await register(DEVICE_CLIENT);
    const other = await register(DEVICE_CLIENT);
    const t = await deviceLogin(clientId);
    const r = await postForm('/oauth2/revoke', { token: t.access_token, client_id: other });
    expect(r.status).toBe(400);
    expect(r.json.error).toBe('unauthorized_client');
    expect((await postForm('/oauth2/revoke', { token: t.access_token, client_id: 'nope' })).status).toBe(401);
    expect((await postForm('/oauth2/revoke', { client_id: clientId })).status).toBe(400);
    expect(double.sessions()).toHaveLength(1);
    expect(double.revocations.map((x) => x.revoked)).toEqual([false, false, false]);
  });
});

describe('OAuth mode: legacy routes and the MAS compatibility layer', () => {
  it.each<[string, string, OAuthOptions?]>([
    ['POST', LOGIN],
    ['GET', LOGIN],
    ['POST', REFRESH],
    ['POST', '/_matrix/client/v1/refresh'],
    ['POST', REFRESH, { compat: true }],
  ])('%s %s → 404 M_UNRECOGNIZED (oauth %p)', async (method, path, oauth = {}) => {
    await start({ oauth });
    const r = method === 'GET' ? await call('GET', path) : await call(method, path, { body: { type: 'm.login.password', refresh_token: 'x' } });
    expect(r.status).toBe(404);
    expect(r.json).toEqual({ errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' });
  });

  it('compat GET /login lists the flows', async () => {
    await start({ oauth: { compat: true } });
    const flows = [{ type: 'm.login.password' }, { type: 'm.login.sso', oauth_aware_preferred: true }, { type: 'm.login.token' }];
    expect((await call('GET', LOGIN)).json).toEqual({ flows });
  });

  it('compat password login: mct_/mcr_ tokens expiring after accessTokenLifetimeSec; without refresh_token: true no expiry', async () => {
    const double = await start({ oauth: { compat: true, accessTokenLifetimeSec: 120 } });
    const r = await passwordLogin({ refresh_token: true, device_id: 'COMPATDEV', initial_device_display_name: 'mxs on box' });
    expect(r.status).toBe(200);
    expect(r.json).toEqual({
      user_id: '@alice:localhost',
      device_id: 'COMPATDEV',
      home_server: 'localhost',
      access_token: expect.stringMatching(/^mct_[A-Za-z0-9]{30}_[A-Za-z0-9]{6}$/),
      refresh_token: expect.stringMatching(/^mcr_[A-Za-z0-9]{30}_[A-Za-z0-9]{6}$/),
      expires_in_ms: 120_000,
    });
    expect((await whoami(r.json.access_token)).json).toEqual({ user_id: '@alice:localhost', device_id: 'COMPATDEV', is_guest: false });
    expect(double.sessions()).toEqual([expect.objectContaining({ deviceId: 'COMPATDEV', displayName: 'mxs on box' })]);

    const plain = await passwordLogin();
    expect(plain.json.refresh_token).toBeUndefined();
    expect(plain.json.expires_in_ms).toBeUndefined();
    expect((await passwordLogin({ password: 'wrong' })).status).toBe(403);
  });

  it('a compat refresh token at the OAuth token endpoint → 400 invalid_grant', async () => {
    await start({ oauth: { compat: true } });
    const clientId = await register(DEVICE_CLIENT);
    const s0 = (await passwordLogin({ refresh_token: true })).json;
    expect((await oauthRefresh(s0.refresh_token, clientId)).json.error).toBe('invalid_grant');
  });

  it.each(['oauth', 'compat'])('POST /logout with a live %s token → 200 and the session ends; an expired one → 401', async (kind) => {
    const double = await start({ oauth: { compat: true } });
    const clientId = await register(DEVICE_CLIENT);
    const login = async () => (kind === 'oauth' ? (await deviceLogin(clientId)).access_token : (await passwordLogin({ refresh_token: true })).json.access_token);
    const at = await login();
    const out = await call('POST', '/_matrix/client/v3/logout', { token: at });
    expect(out.status).toBe(200);
    expect(out.json).toEqual({});
    expect(double.sessions()).toEqual([]);
    expect((await whoami(at)).status).toBe(401);

    const at2 = await login();
    double.expireAccessTokens();
    const expiredOut = await call('POST', '/_matrix/client/v3/logout', { token: at2 });
    expect(expiredOut.status).toBe(401);
    expect(expiredOut.json.errcode).toBe('M_UNKNOWN_TOKEN');
    expect(double.sessions()).toHaveLength(1);
  });

  it("POST /logout/all with an OAuth token ends all the user's sessions", async () => {
    const double = await start({ oauth: { compat: true }, users: { alice: 'alice-pw', bob: 'b' } });
    const clientId = await register(DEVICE_CLIENT);
    const a = await deviceLogin(clientId, 'DEVICEAAAA1');
    await deviceLogin(clientId, 'DEVICEBBBB2');
    await passwordLogin();
    await deviceLogin(clientId, 'BOBDEVICE1', 'bob');
    expect(double.sessions()).toHaveLength(4);
    expect((await call('POST', '/_matrix/client/v3/logout/all', { token: a.access_token })).status).toBe(200);
    expect(double.sessions().map((s) => s.userId)).toEqual(['@bob:localhost']);
  });

  it('sessions(): OAuth sessions carry the client_name as displayName', async () => {
    const double = await start({ oauth: {} });
    const clientId = await register(DEVICE_CLIENT);
    const t = await deviceLogin(clientId);
    expect(double.sessions()).toEqual([
      {
        deviceId: 'DEVICEAAAA1',
        userId: '@alice:localhost',
        accessToken: t.access_token,
        refreshToken: t.refresh_token,
        expiresAt: expect.any(Number),
        displayName: 'mxs device',
        clientId,
        scope: 'urn:matrix:client:api:* urn:matrix:client:device:DEVICEAAAA1',
      },
    ]);
    double.revokeAll();
    expect(double.sessions()).toEqual([]);
    expect((await whoami(t.access_token)).status).toBe(401);
  });
});

describe('OAuth device deletion (user-interactive auth, m.oauth stage)', () => {
  it.each([
    ['POST /delete_devices, one device', 'POST', '/_matrix/client/v3/delete_devices', { devices: ['DEVICEBBBB2'] }, 'action=org.matrix.device_delete&device_id=DEVICEBBBB2'],
    ['POST /delete_devices, two devices', 'POST', '/_matrix/client/v3/delete_devices', { devices: ['DEVICEBBBB2', 'DEVICECCCC3'] }, 'action=org.matrix.devices_list'],
  ])('%s: 401 with flows [m.oauth] and the account-management URL; 200 once the devices are gone', async (_name, method, path, body, query) => {
    const double = await start({ oauth: {} });
    const clientId = await register(DEVICE_CLIENT);
    const me = await deviceLogin(clientId, 'DEVICEAAAA1');
    await deviceLogin(clientId, 'DEVICEBBBB2');
    await deviceLogin(clientId, 'DEVICECCCC3');
    const first = await call(method, path, { token: me.access_token, body });
    expect(first.status).toBe(401);
    expect(first.json).toEqual({
      flows: [{ stages: ['m.oauth'] }],
      params: { 'm.oauth': { url: `${double.url}/account/?${query}` } },
      session: expect.stringMatching(/^[A-Za-z]{24}$/),
    });
    const retry = { ...body, auth: { type: 'm.oauth', session: first.json.session } };
    // Retried before the user acted on the account page: the same challenge again.
    const early = await call(method, path, { token: me.access_token, body: retry });
    expect(early.status).toBe(401);
    expect(early.json.session).toBe(first.json.session);
    double.endSession('DEVICEBBBB2');
    double.endSession('DEVICECCCC3');
    const done = await call(method, path, { token: me.access_token, body: retry });
    expect(done.status).toBe(200);
    expect(done.json).toEqual({});
    expect(double.sessions().map((s) => s.deviceId)).toEqual(['DEVICEAAAA1']);
  });

  it('needs a live token', async () => {
    await start({ oauth: {} });
    const r = await call('POST', '/_matrix/client/v3/delete_devices', { token: 'mat_nope', body: { devices: ['X'] } });
    expect(r.status).toBe(401);
    expect(r.json.errcode).toBe('M_UNKNOWN_TOKEN');
  });

  it('endSession also ends a legacy session on that device', async () => {
    const double = await start();
    const s0 = await loginWithRefresh({ device_id: 'LEGACYDEV' });
    await loginWithRefresh({ device_id: 'OTHERDEV' });
    double.endSession('LEGACYDEV');
    expect((await whoami(s0.access_token)).status).toBe(401);
    expect(double.sessions().map((s) => s.deviceId)).toEqual(['OTHERDEV']);
  });
});

describe('fault injection on OAuth routes', () => {
  it('a 503 on POST /oauth2/token, then the real answer', async () => {
    const double = await start({ oauth: {} });
    const clientId = await register(DEVICE_CLIENT);
    const t0 = await deviceLogin(clientId);
    double.inject(`POST ${TOKEN}`, { status: 503 });
    expect((await oauthRefresh(t0.refresh_token, clientId)).status).toBe(503);
    expect(double.usedRefreshTokens).toEqual([]);
    expect((await oauthRefresh(t0.refresh_token, clientId)).status).toBe(200);
  });

  it('commitThenReset on a refresh: the client sees a socket error and recovers by replaying the old refresh token (MAS #2795)', async () => {
    const double = await start({ oauth: {} });
    const clientId = await register(DEVICE_CLIENT);
    const t0 = await deviceLogin(clientId);
    double.inject(`POST ${TOKEN}`, { commitThenReset: true });
    await expect(oauthRefresh(t0.refresh_token, clientId)).rejects.toThrow('fetch failed');
    const [lost] = double.sessions();
    expect(lost.refreshToken).not.toBe(t0.refresh_token);
    const retry = await oauthRefresh(t0.refresh_token, clientId);
    expect(retry.status).toBe(200);
    expect(double.accessTokenStatus(lost.accessToken)).toBe('unknown');
    expect(double.sessions().map((s) => s.accessToken)).toEqual([retry.json.access_token]);
  });

  it('faults on GET /authorize and the auth_metadata route', async () => {
    const double = await start({ oauth: {} });
    double.inject('GET /_matrix/client/v1/auth_metadata', { status: 502, body: '<html>Bad Gateway</html>' });
    double.inject('GET /authorize', { status: 500 });
    expect((await call('GET', '/_matrix/client/v1/auth_metadata')).status).toBe(502);
    expect((await call('GET', '/_matrix/client/v1/auth_metadata')).status).toBe(200);
    expect((await authorize({})).status).toBe(500);
    expect(double.authorizationRequests).toEqual([]);
  });
});
