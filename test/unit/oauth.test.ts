// OAuth 2.0 sessions through the services: discovery and method choice, registration, the device grant
// (polling, slow_down, denial, expiry, Ctrl-C), the authorization-code grant with PKCE through a real
// loopback listener, refresh at the token endpoint, revocation on logout, and status.
import { createHash } from 'node:crypto';
import { get } from 'node:http';
import { describe, expect, it } from '@jest/globals';
import type { DeviceAuthorization } from '../../src/oauth/client.js';
import { loginService, type LoginInput, type LoginInteraction } from '../../src/services/login.js';
import { logoutService } from '../../src/services/logout.js';
import { statusService } from '../../src/services/status.js';
import { refreshService, tokenService } from '../../src/services/tokens.js';
import { HS, ISSUER, T0, rejectionOf, replyJson, replyJsonWith, replyVersions, type UnitWorld, hintText, worldPerTest, OAUTH_METADATA } from '../support/unit-deps.js';

const META_PATH = '/_matrix/client/v1/auth_metadata';
const UNSTABLE_META_PATH = '/_matrix/client/unstable/org.matrix.msc2965/auth_metadata';
const META = {
  ...OAUTH_METADATA,
  device_authorization_endpoint: `${ISSUER}/oauth2/device`,
  account_management_uri: `${ISSUER}/account`,
  response_types_supported: ['code'],
  grant_types_supported: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'],
  response_modes_supported: ['query', 'fragment'],
  code_challenge_methods_supported: ['S256'],
};
const TOKENS = { access_token: 'mat_first_access', refresh_token: 'mar_first_refresh', token_type: 'Bearer', expires_in: 300 };
const DEVICE = { device_code: 'device-code-secret-1', user_code: 'ABCD-EFGH', verification_uri: `${ISSUER}/link`, expires_in: 1200, interval: 5 };

let w: UnitWorld;
worldPerTest((made) => (w = made));

const input = (over: Partial<LoginInput> = {}): LoginInput => ({ profile: 'default', server: HS, refresh: true, insecure: false, storage: 'file', ...over });

interface Shown {
  codes: DeviceAuthorization[];
  stopped: number;
  urls: string[];
}

function interaction(over: Partial<LoginInteraction> = {}): LoginInteraction & { shown: Shown } {
  const shown: Shown = { codes: [], stopped: 0, urls: [] };
  return {
    shown,
    credentials: async () => {
      throw new Error('no password should be asked for on an OAuth server');
    },
    showDeviceCode: (code) => {
      shown.codes.push(code);
      return () => {
        shown.stopped++;
      };
    },
    openAuthorizationUrl: async (url) => {
      shown.urls.push(url);
    },
    ...over,
  };
}

/** An OAuth homeserver up to the point where the client registers. */
function oauthServer(meta: object = META) {
  replyVersions(w.agent, HS);
  replyJson(w.agent, HS, 'GET', META_PATH, 200, meta);
  issuerDocument(meta);
  replyJson(w.agent, ISSUER, 'POST', '/oauth2/registration', 201, { client_id: 'client-1' });
}
function whoamiAndName(deviceId: string) {
  replyJson(w.agent, HS, 'GET', '/_matrix/client/v3/account/whoami', 200, { user_id: '@alice:example.org', device_id: deviceId });
  replyJson(w.agent, HS, 'PUT', `/_matrix/client/v3/devices/${deviceId}`, 200, {});
}
/** The issuer's own metadata document (OpenID Connect Discovery §4), as the issuer publishes it. */
function issuerDocument(meta: object = META, origin = ISSUER) {
  replyJson(w.agent, origin, 'GET', '/.well-known/openid-configuration', 200, meta);
}
const tokenRequests = () => w.requests().filter((r) => r.url === `${ISSUER}/oauth2/token`);
const pending = (status = 403) => replyJson(w.agent, ISSUER, 'POST', '/oauth2/token', status, { error: 'authorization_pending' });

describe('method choice', () => {
  it('auto on a server without auth_metadata (404 on both paths) logs in with a password', async () => {
    replyVersions(w.agent, HS);
    replyJson(w.agent, HS, 'GET', META_PATH, 404, { errcode: 'M_UNRECOGNIZED' });
    replyJson(w.agent, HS, 'GET', UNSTABLE_META_PATH, 404, { errcode: 'M_UNRECOGNIZED' });
    replyJson(w.agent, HS, 'GET', '/_matrix/client/v3/login', 200, { flows: [{ type: 'm.login.password' }] });
    replyJson(w.agent, HS, 'POST', '/_matrix/client/v3/login', 200, { user_id: '@alice:example.org', device_id: 'D1', access_token: 'syt_a' });
    const io = interaction({ credentials: async () => ({ type: 'm.login.password', user: 'alice', password: 'pw' }) });
    const result = await loginService(input(), w.deps, io);
    expect(result).toMatchObject({ method: 'password', issuer: null });
    expect((await w.stored()).record!.auth).toEqual({ type: 'matrix' });
  });

  it('auto finds the unstable MSC2965 metadata path when v1 is missing', async () => {
    replyVersions(w.agent, HS);
    replyJson(w.agent, HS, 'GET', META_PATH, 404, { errcode: 'M_UNRECOGNIZED' });
    replyJson(w.agent, HS, 'GET', UNSTABLE_META_PATH, 200, META);
    issuerDocument();
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/registration', 201, { client_id: 'client-1' });
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/device', 200, DEVICE);
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/token', 200, TOKENS);
    whoamiAndName('DEV0000001');
    const result = await loginService(input({ deviceId: 'DEV0000001' }), w.deps, interaction());
    expect(result.method).toBe('oauth');
  });

  it('--password-stdin on a server that only does OAuth is a usage error (exit 2) and sends no password', async () => {
    replyVersions(w.agent, HS);
    replyJson(w.agent, HS, 'GET', '/_matrix/client/v3/login', 200, { flows: [{ type: 'm.login.sso', oauth_aware_preferred: true }] });
    replyJson(w.agent, HS, 'GET', META_PATH, 200, META);
    const err = await rejectionOf(() => loginService(input({ credentials: { type: 'm.login.password', user: 'alice', password: 'pw-secret' } }), w.deps));
    expect(err).toMatchObject({ exitCode: 2, code: 'usage' });
    expect(err.message).toContain('OAuth 2.0');
    expect(w.requests().some((r) => r.method === 'POST')).toBe(false);
  });

  it('--password-stdin where the server still offers passwords beside OAuth logs in with the password', async () => {
    replyVersions(w.agent, HS);
    replyJson(w.agent, HS, 'GET', '/_matrix/client/v3/login', 200, { flows: [{ type: 'm.login.password' }, { type: 'm.login.sso', oauth_aware_preferred: true }] });
    replyJson(w.agent, HS, 'POST', '/_matrix/client/v3/login', 200, { user_id: '@alice:example.org', device_id: 'D1', access_token: 'syt_a' });
    const result = await loginService(input({ credentials: { type: 'm.login.password', user: 'alice', password: 'pw' } }), w.deps);
    expect(result.method).toBe('password');
    expect(w.requests().some((r) => r.path === META_PATH)).toBe(false);
  });

  it('--method oauth on a server without OAuth is a usage error (exit 2)', async () => {
    replyVersions(w.agent, HS);
    replyJson(w.agent, HS, 'GET', META_PATH, 404, { errcode: 'M_UNRECOGNIZED' });
    replyJson(w.agent, HS, 'GET', UNSTABLE_META_PATH, 404, { errcode: 'M_UNRECOGNIZED' });
    const err = await rejectionOf(() => loginService(input({ method: 'oauth' }), w.deps, interaction()));
    expect(err).toMatchObject({ exitCode: 2 });
    expect(hintText(err)).toContain('--method password');
  });

  it('metadata without a required endpoint is a malformed answer (exit 3), nothing registered', async () => {
    const { token_endpoint: _drop, ...broken } = META;
    replyVersions(w.agent, HS);
    replyJson(w.agent, HS, 'GET', META_PATH, 200, broken);
    await expect(loginService(input(), w.deps, interaction())).rejects.toMatchObject({ exitCode: 3, code: 'bad_response' });
    expect(w.requests().filter((r) => r.url.startsWith(ISSUER))).toEqual([]);
  });
});

describe('device authorization grant', () => {
  it('registers a native public client, asks for the API and device scopes, polls through pending and slow_down, and stores an OAuth session', async () => {
    oauthServer();
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/device', 200, DEVICE);
    pending(403); // the Matrix Authentication Service's status
    pending(400); // RFC 8628's
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/token', 400, { error: 'slow_down' });
    let sentAt = 0;
    replyJsonWith(w.agent, ISSUER, 'POST', '/oauth2/token', () => {
      sentAt = w.clock.now();
      w.clock.advance(3000); // a slow answer: expiry counts from the request
      return { status: 200, body: TOKENS };
    });
    whoamiAndName('MYDEVICE01');
    const io = interaction();
    const result = await loginService(input({ deviceId: 'MYDEVICE01' }), w.deps, io);

    const [registration] = w.requests().filter((r) => r.url === `${ISSUER}/oauth2/registration`);
    expect(registration!.body).toMatchObject({
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
      response_types: [],
      client_name: 'mxs',
    });
    expect((registration!.body as { client_uri: string }).client_uri).toMatch(/^https:\/\//);
    const [device] = w.requests().filter((r) => r.url === `${ISSUER}/oauth2/device`);
    expect(device!.body).toEqual({ client_id: 'client-1', scope: 'urn:matrix:client:api:* urn:matrix:client:device:MYDEVICE01' });
    expect(tokenRequests().map((r) => r.body)).toEqual(
      Array(4).fill({ grant_type: 'urn:ietf:params:oauth:grant-type:device_code', device_code: 'device-code-secret-1', client_id: 'client-1' }),
    );
    // interval 5 s, then 10 s after slow_down
    expect(w.sleeps).toEqual([5000, 5000, 5000, 10000]);
    expect(io.shown.codes).toHaveLength(1);
    expect(io.shown.codes[0]).toMatchObject({ userCode: 'ABCD-EFGH', verificationUri: `${ISSUER}/link` });
    expect(io.shown.stopped).toBe(1);

    expect(result).toMatchObject({ method: 'oauth', issuer: `${ISSUER}/`, userId: '@alice:example.org', deviceId: 'MYDEVICE01', refreshable: true, storage: 'file' });
    const { record, secret } = await w.stored();
    expect(record!.auth).toEqual({
      type: 'oauth',
      issuer: `${ISSUER}/`,
      clientId: 'client-1',
      tokenEndpoint: `${ISSUER}/oauth2/token`,
      revocationEndpoint: `${ISSUER}/oauth2/revoke`,
      accountManagementUri: `${ISSUER}/account`,
    });
    expect(secret).toEqual({
      accessToken: 'mat_first_access',
      refreshToken: 'mar_first_refresh',
      issuedAt: new Date(sentAt).toISOString(),
      expiresAt: new Date(sentAt + 300_000).toISOString(),
    });
    expect(w.remembered).toEqual(expect.arrayContaining(['device-code-secret-1', 'mat_first_access', 'mar_first_refresh']));
    // The new device gets a name (OAuth has no initial_device_display_name).
    const [rename] = w.requests().filter((r) => r.method === 'PUT');
    expect((rename!.body as { display_name: string }).display_name).toMatch(/^mxs on /);
  });

  it('registers the client_uri given instead of the default', async () => {
    oauthServer();
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/device', 200, DEVICE);
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/token', 200, TOKENS);
    whoamiAndName('MYDEVICE01');
    await loginService(input({ deviceId: 'MYDEVICE01', clientUri: 'https://chat.example.com/tools' }), w.deps, interaction());
    expect(w.requests().find((r) => r.url === `${ISSUER}/oauth2/registration`)!.body).toMatchObject({ client_uri: 'https://chat.example.com/tools' });
  });

  it('picks a random device ID of 10+ letters and digits when none is given', async () => {
    oauthServer();
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/device', 200, DEVICE);
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/token', 200, TOKENS);
    let asked = '';
    replyJsonWith(w.agent, HS, 'GET', '/_matrix/client/v3/account/whoami', () => {
      asked = ((w.requests().find((r) => r.url === `${ISSUER}/oauth2/device`)!.body as { scope: string }).scope.split(':').pop())!;
      return { status: 200, body: { user_id: '@alice:example.org', device_id: asked } };
    });
    w.agent.get(HS).intercept({ method: 'PUT', path: /\/devices\// }).reply(200, '{}', { headers: { 'content-type': 'application/json' } });
    const result = await loginService(input(), w.deps, interaction());
    expect(result.deviceId).toMatch(/^[A-Za-z0-9]{10,}$/);
    expect(result.deviceId).toBe(asked);
  });

  it.each([
    ['denied in the browser', { error: 'access_denied' }, 'access_denied', /denied/],
    ['the code expired (server)', { error: 'expired_token' }, 'expired_token', /expired/],
  ])('%s: exit 4 with one clear line, nothing stored', async (_case, answer, code, message) => {
    oauthServer();
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/device', 200, DEVICE);
    pending();
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/token', 403, answer);
    const io = interaction();
    const err = await rejectionOf(() => loginService(input(), w.deps, io));
    expect(err).toMatchObject({ exitCode: 4, code });
    expect(err.message).toMatch(message);
    expect(err.message).not.toContain('\n');
    expect(io.shown.stopped).toBe(1);
    expect(await w.stored()).toEqual({ record: null, secret: null });
  });

  it('stops polling once the code has expired by the local clock (exit 4)', async () => {
    oauthServer();
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/device', 200, { ...DEVICE, expires_in: 12, interval: 5 });
    pending();
    pending();
    const err = await rejectionOf(() => loginService(input(), w.deps, interaction()));
    expect(err).toMatchObject({ exitCode: 4, code: 'expired_token' });
    expect(tokenRequests()).toHaveLength(2);
  });

  it('Ctrl-C while polling cancels (exit 130): nothing stored, no further poll', async () => {
    oauthServer();
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/device', 200, DEVICE);
    const controller = new AbortController();
    replyJsonWith(w.agent, ISSUER, 'POST', '/oauth2/token', () => {
      controller.abort(new Error('SIGINT'));
      return { status: 403, body: { error: 'authorization_pending' } };
    });
    const err = await rejectionOf(() => loginService(input(), w.deps, interaction({ signal: controller.signal })));
    expect(err).toMatchObject({ exitCode: 130, code: 'cancelled' });
    expect(tokenRequests()).toHaveLength(1);
    expect(await w.stored()).toEqual({ record: null, secret: null });
  });

  it('a server without a device endpoint asks for --browser (exit 2)', async () => {
    const { device_authorization_endpoint: _drop, ...noDevice } = META;
    replyVersions(w.agent, HS);
    replyJson(w.agent, HS, 'GET', META_PATH, 200, noDevice);
    issuerDocument(noDevice);
    const err = await rejectionOf(() => loginService(input(), w.deps, interaction()));
    expect(err).toMatchObject({ exitCode: 2 });
    expect(hintText(err)).toContain('--browser');
  });

  it('a token bound to another device than the one asked for is refused (exit 3), nothing stored', async () => {
    oauthServer();
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/device', 200, DEVICE);
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/token', 200, TOKENS);
    replyJson(w.agent, HS, 'GET', '/_matrix/client/v3/account/whoami', 200, { user_id: '@alice:example.org', device_id: 'OTHERDEVICE' });
    await expect(loginService(input({ deviceId: 'MYDEVICE01' }), w.deps, interaction())).rejects.toMatchObject({ exitCode: 3 });
    expect(await w.stored()).toEqual({ record: null, secret: null });
  });
});

/** Plays the browser: follows the authorization URL's redirect to the loopback listener. */
function browse(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    get(url, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    }).on('error', reject);
  });
}

describe('authorization code grant with PKCE (--browser)', () => {
  async function browserLogin(answer: (q: URLSearchParams) => string, over: Partial<LoginInput> = {}, meta: object = META) {
    oauthServer(meta);
    const pages: { status: number; body: string }[] = [];
    let visited!: Promise<unknown>;
    const io = interaction({
      openAuthorizationUrl: async (url) => {
        const q = new URL(url).searchParams;
        const redirect = new URL(q.get('redirect_uri')!);
        redirect.search = answer(q);
        visited = browse(redirect.toString()).then((p) => pages.push(p));
        io.shown.urls.push(url);
      },
      browserTimeoutMs: 1500,
    });
    const result = loginService(input({ browser: true, ...over }), w.deps, io);
    // The browser's page arrives after the code (or error) did: wait for it too.
    const settled = result.then(
      async (v) => (await visited, v),
      async (e) => {
        await visited;
        throw e;
      },
    );
    return { result: settled, io, pages };
  }

  it('sends S256, state and the login hint, receives the code on a 127.0.0.1 port, and exchanges it with the verifier', async () => {
    let challenge = '';
    const { result, io, pages } = await browserLogin(
      (q) => {
        challenge = q.get('code_challenge')!;
        return new URLSearchParams({ code: 'auth-code-1', state: q.get('state')!, iss: `${ISSUER}/` }).toString();
      },
      { user: '@alice:example.org', deviceId: 'BROWSERDEV' },
    );
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/token', 200, TOKENS);
    whoamiAndName('BROWSERDEV');
    await expect(result).resolves.toMatchObject({ method: 'oauth', deviceId: 'BROWSERDEV' });

    const q = new URL(io.shown.urls[0]!).searchParams;
    expect(q.get('response_type')).toBe('code');
    expect(q.get('code_challenge_method')).toBe('S256');
    expect(q.get('scope')).toBe('urn:matrix:client:api:* urn:matrix:client:device:BROWSERDEV');
    expect(q.get('login_hint')).toBe('mxid:@alice:example.org');
    expect(q.get('redirect_uri')).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/callback$/);
    const [registration] = w.requests().filter((r) => r.url === `${ISSUER}/oauth2/registration`);
    expect(registration!.body).toMatchObject({ redirect_uris: ['http://127.0.0.1/callback'], grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'] });
    const [exchange] = tokenRequests();
    const body = exchange!.body as Record<string, string>;
    expect(body).toMatchObject({ grant_type: 'authorization_code', code: 'auth-code-1', client_id: 'client-1', redirect_uri: q.get('redirect_uri') });
    expect(createHash('sha256').update(body.code_verifier!).digest('base64url')).toBe(challenge);
    expect(pages[0]).toMatchObject({ status: 200 });
    expect(pages[0]!.body).toContain('Logged in');
    expect(w.remembered).toEqual(expect.arrayContaining(['auth-code-1', body.code_verifier]));
  });

  it('denied in the browser: exit 4, a failure page, nothing stored', async () => {
    const { result, pages } = await browserLogin((q) => new URLSearchParams({ error: 'access_denied', state: q.get('state')! }).toString());
    await expect(result).rejects.toMatchObject({ exitCode: 4, code: 'access_denied' });
    expect(pages[0]!.status).toBe(400);
    expect(tokenRequests()).toEqual([]);
    expect(await w.stored()).toEqual({ record: null, secret: null });
  });

  it('--admin asks for the admin scopes; Cancel on the refusal page (access_denied) says the user may not request admin (exit 4)', async () => {
    let scope: string | null = null;
    const { result } = await browserLogin((q) => ((scope = q.get('scope')), new URLSearchParams({ error: 'access_denied', state: q.get('state')!, iss: `${ISSUER}/` }).toString()), { admin: true, deviceId: 'BROWSERDEV' });
    const err = await rejectionOf(() => result);
    expect(scope).toBe('urn:matrix:client:api:* urn:matrix:client:device:BROWSERDEV urn:mas:admin urn:synapse:admin:*');
    expect(err).toMatchObject({ exitCode: 4, code: 'access_denied' });
    expect(err.message).toMatch(/not allowed to request admin/);
    expect(await w.stored()).toEqual({ record: null, secret: null });
  });

  it('an answer from another issuer (RFC 9207 mix-up) is refused before any code is exchanged', async () => {
    const { result } = await browserLogin((q) => new URLSearchParams({ code: 'c', state: q.get('state')!, iss: 'https://evil.example/' }).toString());
    await expect(result).rejects.toMatchObject({ exitCode: 3 });
    expect(tokenRequests()).toEqual([]);
  });

  it('an answer without iss where the metadata says the server always sends it (RFC 9207) is refused before any code is exchanged', async () => {
    const { result, pages } = await browserLogin((q) => new URLSearchParams({ code: 'c', state: q.get('state')! }).toString(), {}, { ...META, authorization_response_iss_parameter_supported: true });
    const err = await rejectionOf(() => result);
    expect(err).toMatchObject({ exitCode: 3, code: 'bad_response' });
    expect(err.message).toContain('iss');
    expect(pages[0]!.status).toBe(400);
    expect(tokenRequests()).toEqual([]);
  });

  it('an answer without iss from a server that does not promise it is accepted', async () => {
    const { result } = await browserLogin((q) => new URLSearchParams({ code: 'auth-code-1', state: q.get('state')! }).toString(), { deviceId: 'BROWSERDEV' });
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/token', 200, TOKENS);
    whoamiAndName('BROWSERDEV');
    await expect(result).resolves.toMatchObject({ method: 'oauth' });
  });

  it('an answer with the wrong state is ignored, and the wait ends at its bound (exit 4)', async () => {
    const { result, pages } = await browserLogin(() => new URLSearchParams({ code: 'c', state: 'forged' }).toString());
    const err = await rejectionOf(() => result);
    expect(err).toMatchObject({ exitCode: 4, code: 'timeout' });
    expect(pages[0]!.status).toBe(400);
    expect(tokenRequests()).toEqual([]);
  }, 15_000);
});

describe('OAuth sessions after login', () => {
  it('refresh posts grant_type=refresh_token with the client ID, stores the rotated pair, expiry from expires_in seconds', async () => {
    await w.seed({ oauth: true, accessToken: 'mat_old', refreshToken: 'mar_old', storage: 'file' });
    w.clock.set(T0 + 1000);
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/token', 200, { access_token: 'mat_new', refresh_token: 'mar_new', token_type: 'Bearer', expires_in: 120 });
    const result = await refreshService('default', 7 * 86_400_000, w.deps);
    expect(tokenRequests().map((r) => r.body)).toEqual([{ grant_type: 'refresh_token', refresh_token: 'mar_old', client_id: 'client-1' }]);
    expect(result).toMatchObject({ refreshTokenRotated: true, expiresAt: new Date(T0 + 1000 + 120_000).toISOString() });
    const { record, secret } = await w.stored();
    expect(secret).toMatchObject({ accessToken: 'mat_new', refreshToken: 'mar_new' });
    expect(record!.auth.type).toBe('oauth');
  });

  it('token refreshes an expired OAuth access token first', async () => {
    await w.seed({ oauth: true, accessToken: 'mat_old', refreshToken: 'mar_old', lifetimeMs: 300_000, storage: 'file' });
    w.clock.advance(301_000);
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/token', 200, { access_token: 'mat_new', token_type: 'Bearer', expires_in: 300 });
    const result = await tokenService('default', 60_000, w.deps);
    expect(result.accessToken).toBe('mat_new');
    // No refresh_token in the answer: the old one is kept.
    expect((await w.stored()).secret!.refreshToken).toBe('mar_old');
  });

  it('invalid_grant ends the session (exit 4, not refreshable) after re-reading the store', async () => {
    await w.seed({ oauth: true, refreshToken: 'mar_old', storage: 'file' });
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/token', 400, { error: 'invalid_grant', error_description: 'refresh token revoked' });
    const err = await rejectionOf(() => refreshService('default', undefined, w.deps));
    expect(err).toMatchObject({ exitCode: 4, code: 'invalid_grant' });
    expect(err.message).toContain('refresh token revoked');
    expect(hintText(err)).toContain('mxs login');
    expect((await w.stored()).record!.refreshable).toBe(false);
  });

  it('once refused, the dead refresh token is not sent again: exit 4 not_refreshable, no request', async () => {
    await w.seed({ oauth: true, refreshToken: 'mar_old', storage: 'file', lifetimeMs: 1000 });
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/token', 400, { error: 'invalid_grant' });
    await expect(refreshService('default', undefined, w.deps)).rejects.toMatchObject({ code: 'invalid_grant' });
    w.clock.advance(2000);
    await expect(tokenService('default', 60_000, w.deps)).rejects.toMatchObject({ exitCode: 4, code: 'not_refreshable' });
    expect(tokenRequests()).toHaveLength(1);
  });

  it.each([
    ['503', () => replyJson(w.agent, ISSUER, 'POST', '/oauth2/token', 503, { error: 'temporarily_unavailable' }).times(3)],
    ['HTML 502 from a proxy', () => w.agent.get(ISSUER).intercept({ method: 'POST', path: '/oauth2/token' }).reply(502, '<html>Bad gateway</html>', { headers: { 'content-type': 'text/html' } }).times(3)],
    ['a 200 that is not JSON', () => w.agent.get(ISSUER).intercept({ method: 'POST', path: '/oauth2/token' }).reply(200, 'ok', { headers: { 'content-type': 'text/plain' } })],
  ])('%s at the token endpoint: exit 3, retried with the old token, session untouched', async (_case, fault) => {
    const seeded = await w.seed({ oauth: true, refreshToken: 'mar_old', storage: 'file' });
    fault();
    await expect(refreshService('default', undefined, w.deps)).rejects.toMatchObject({ exitCode: 3 });
    expect(new Set(tokenRequests().map((r) => (r.body as { refresh_token: string }).refresh_token))).toEqual(new Set(['mar_old']));
    expect(await w.stored()).toEqual(seeded);
  });

  it('logout revokes the refresh and the access token with the client ID, then forgets the session', async () => {
    await w.seed({ oauth: true, accessToken: 'mat_a', refreshToken: 'mar_r', storage: 'file' });
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/revoke', 200, {}).times(2);
    await expect(logoutService('default', { local: false, all: false }, w.deps)).resolves.toEqual({ profile: 'default', serverSide: true });
    expect(w.requests().map((r) => r.body)).toEqual([
      { token: 'mar_r', token_type_hint: 'refresh_token', client_id: 'client-1' },
      { token: 'mat_a', token_type_hint: 'access_token', client_id: 'client-1' },
    ]);
    expect(await w.stored()).toEqual({ record: null, secret: null });
  });

  it('logout --all on an OAuth session is a usage error naming the account page; nothing sent or forgotten', async () => {
    const seeded = await w.seed({ oauth: true, storage: 'file' });
    const err = await rejectionOf(() => logoutService('default', { local: false, all: true }, w.deps));
    expect(err).toMatchObject({ exitCode: 2 });
    expect(hintText(err)).toContain(`${ISSUER}/account`);
    expect(w.requests()).toEqual([]);
    expect(await w.stored()).toEqual(seeded);
  });

  it('logout keeps the session when revocation fails with a server error (exit 3)', async () => {
    const seeded = await w.seed({ oauth: true, storage: 'file' });
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/revoke', 500, { error: 'server_error' }).times(3);
    await expect(logoutService('default', { local: false, all: false }, w.deps)).rejects.toMatchObject({ exitCode: 3 });
    expect(await w.stored()).toEqual(seeded);
  });

  it('status shows the method, issuer and account page from local state only', async () => {
    await w.seed({ oauth: true, storage: 'file' });
    const report = await statusService('default', w.deps);
    expect(report.status).toMatchObject({ method: 'oauth', issuer: `${ISSUER}/`, loggedIn: true });
    expect(report.accountManagementUri).toBe(`${ISSUER}/account`);
    expect(w.requests()).toEqual([]);
  });
});

describe('plain http:// to OAuth endpoints', () => {
  const HTTP_HOST = 'http://auth.example.net';
  it.each(['issuer', 'authorization_endpoint', 'token_endpoint', 'device_authorization_endpoint', 'registration_endpoint', 'revocation_endpoint'])(
    'the metadata\'s %s on plain http:// to a non-loopback host: login refused (exit 2) before anything is sent',
    async (key) => {
      replyVersions(w.agent, HS);
      replyJson(w.agent, HS, 'GET', META_PATH, 200, { ...META, [key]: `${HTTP_HOST}/${key}` });
      const err = await rejectionOf(() => loginService(input(), w.deps, interaction()));
      expect(err).toMatchObject({ exitCode: 2, code: 'usage' });
      expect(err.message).toContain('auth.example.net');
      expect(err.hint).toContain('--insecure');
      expect(w.requests().filter((r) => r.method === 'POST')).toEqual([]);
      expect(await w.stored()).toEqual({ record: null, secret: null });
    },
  );

  /** A whole device login whose OAuth endpoints all live on `origin`. */
  function oauthServerOn(origin: string) {
    const meta = Object.fromEntries(Object.entries(META).map(([k, v]) => [k, typeof v === 'string' ? v.replace(ISSUER, origin) : v]));
    replyVersions(w.agent, HS);
    replyJson(w.agent, HS, 'GET', META_PATH, 200, meta);
    issuerDocument(meta, origin);
    replyJson(w.agent, origin, 'POST', '/oauth2/registration', 201, { client_id: 'client-1' });
    replyJson(w.agent, origin, 'POST', '/oauth2/device', 200, DEVICE);
    replyJson(w.agent, origin, 'POST', '/oauth2/token', 200, TOKENS);
    whoamiAndName('MYDEVICE01');
  }

  it('with --insecure the same endpoints are used, and the session remembers the choice', async () => {
    oauthServerOn(HTTP_HOST);
    await expect(loginService(input({ deviceId: 'MYDEVICE01', insecure: true }), w.deps, interaction())).resolves.toMatchObject({ method: 'oauth' });
    expect((await w.stored()).record).toMatchObject({ insecure: true, auth: { tokenEndpoint: `${HTTP_HOST}/oauth2/token` } });
  });

  it('loopback endpoints on plain http:// need no --insecure', async () => {
    oauthServerOn('http://127.0.0.1:8080');
    await expect(loginService(input({ deviceId: 'MYDEVICE01' }), w.deps, interaction())).resolves.toMatchObject({ method: 'oauth' });
  });

  async function seedPlainEndpoints(insecure: boolean) {
    const { record } = await w.seed({ oauth: true, accessToken: 'mat_a', refreshToken: 'mar_r', storage: 'file' });
    const auth = { ...record.auth, tokenEndpoint: `${HTTP_HOST}/oauth2/token`, revocationEndpoint: `${HTTP_HOST}/oauth2/revoke` };
    await w.deps.sessions.write({ ...record, auth, ...(insecure ? { insecure: true } : {}) } as typeof record);
    return w.stored();
  }

  it('a stored session whose token endpoint is plain http:// (not logged in with --insecure) does not send its refresh token there (exit 2)', async () => {
    const seeded = await seedPlainEndpoints(false);
    const err = await rejectionOf(() => refreshService('default', undefined, w.deps));
    expect(err).toMatchObject({ exitCode: 2 });
    expect(err.message).toContain('auth.example.net');
    expect(hintText(err)).toContain('mxs login');
    expect(w.requests()).toEqual([]);
    expect(await w.stored()).toEqual(seeded);
  });

  it('a stored session whose revocation endpoint is plain http:// is not revoked there: logout refuses (exit 2), keeps the session and offers --local', async () => {
    const seeded = await seedPlainEndpoints(false);
    const err = await rejectionOf(() => logoutService('default', { local: false, all: false }, w.deps));
    expect(err).toMatchObject({ exitCode: 2 });
    expect(hintText(err)).toContain('--local');
    expect(w.requests()).toEqual([]);
    expect(await w.stored()).toEqual(seeded);
  });

  it('a session logged in with --insecure keeps refreshing and revoking over plain http://', async () => {
    await seedPlainEndpoints(true);
    replyJson(w.agent, HTTP_HOST, 'POST', '/oauth2/token', 200, { access_token: 'mat_new', token_type: 'Bearer', expires_in: 300 });
    replyJson(w.agent, HTTP_HOST, 'POST', '/oauth2/revoke', 200, {}).times(2);
    await refreshService('default', undefined, w.deps);
    await expect(logoutService('default', { local: false, all: false }, w.deps)).resolves.toMatchObject({ serverSide: true });
  });
});

describe('a registration the server refuses', () => {
  it.each([
    ['invalid_client_metadata', 'client_uri must not be on localhost\u001b[31m'],
    ['invalid_redirect_uri', 'redirect_uris: not allowed'],
  ])('400 %s is final: exit 4 with the server\'s reason, no "retry later", nothing else sent', async (error, reason) => {
    replyVersions(w.agent, HS);
    replyJson(w.agent, HS, 'GET', META_PATH, 200, META);
    issuerDocument();
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/registration', 400, { error, error_description: reason });
    const err = await rejectionOf(() => loginService(input(), w.deps, interaction()));
    expect(err).toMatchObject({ exitCode: 4, code: error });
    expect(err.message).toContain(reason);
    expect(err.hint).not.toMatch(/retry/i);
    expect(w.requests().filter((r) => r.method === 'POST')).toHaveLength(1);
    expect(await w.stored()).toEqual({ record: null, secret: null });
  });
});

describe('--user as the OAuth login hint', () => {
  /** `mxs login example.org`: the server name resolves to HS through .well-known. */
  function serverName() {
    replyJson(w.agent, 'https://example.org', 'GET', '/.well-known/matrix/client', 200, { 'm.homeserver': { base_url: HS } });
  }

  it.each([
    ['alice', 'mxid:@alice:example.org'],
    ['@bob:other.example', 'mxid:@bob:other.example'],
  ])('device code: --user %s is sent as login_hint %s', async (user, hint) => {
    serverName();
    oauthServer();
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/device', 200, DEVICE);
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/token', 200, TOKENS);
    whoamiAndName('MYDEVICE01');
    await loginService(input({ server: 'example.org', user, deviceId: 'MYDEVICE01' }), w.deps, interaction());
    expect(w.requests().find((r) => r.url === `${ISSUER}/oauth2/device`)!.body).toMatchObject({ login_hint: hint });
  });

  it('browser: a bare --user is completed with the server name it was given', async () => {
    serverName();
    oauthServer();
    let hint: string | null = null;
    const io = interaction({
      openAuthorizationUrl: async (url) => {
        hint = new URL(url).searchParams.get('login_hint');
        throw new Error('stop here');
      },
    });
    await rejectionOf(() => loginService(input({ server: 'example.org', user: 'alice', browser: true }), w.deps, io));
    expect(hint).toBe('mxid:@alice:example.org');
  });

  it('a server given as a URL: a bare --user is completed with its host', async () => {
    oauthServer();
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/device', 200, DEVICE);
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/token', 200, TOKENS);
    whoamiAndName('MYDEVICE01');
    await loginService(input({ user: 'alice', deviceId: 'MYDEVICE01' }), w.deps, interaction());
    expect(w.requests().find((r) => r.url === `${ISSUER}/oauth2/device`)!.body).toMatchObject({ login_hint: 'mxid:@alice:matrix.example.org' });
  });
});

describe('refresh --lifetime on an OAuth session', () => {
  it('is not sent, and mxs says so in one line', async () => {
    await w.seed({ oauth: true, refreshToken: 'mar_old', storage: 'file' });
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/token', 200, { access_token: 'mat_new', token_type: 'Bearer', expires_in: 300 });
    await refreshService('default', 7 * 86_400_000, w.deps);
    expect(tokenRequests().map((r) => r.body)).toEqual([{ grant_type: 'refresh_token', refresh_token: 'mar_old', client_id: 'client-1' }]);
    expect(w.notices).toHaveLength(1);
    expect(w.notices[0]).toMatch(/--lifetime/);
    expect(w.notices[0]).not.toContain('\n');
  });

  it('without --lifetime nothing is said', async () => {
    await w.seed({ oauth: true, refreshToken: 'mar_old', storage: 'file' });
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/token', 200, { access_token: 'mat_new', token_type: 'Bearer', expires_in: 300 });
    await refreshService('default', undefined, w.deps);
    expect(w.notices).toEqual([]);
  });
});

describe("the issuer the homeserver names", () => {
  it("is refused (exit 3) when the issuer's own metadata document names another issuer; nothing is registered", async () => {
    replyVersions(w.agent, HS);
    replyJson(w.agent, HS, 'GET', META_PATH, 200, META);
    issuerDocument({ ...META, issuer: 'https://other.example/' });
    const err = await rejectionOf(() => loginService(input(), w.deps, interaction()));
    expect(err).toMatchObject({ exitCode: 3, code: 'bad_response' });
    expect(err.message).toContain('https://other.example/');
    expect(w.requests().filter((r) => r.method === 'POST')).toEqual([]);
    expect(await w.stored()).toEqual({ record: null, secret: null });
  });

  it('is taken as named when the issuer publishes no metadata document of its own (404)', async () => {
    replyVersions(w.agent, HS);
    replyJson(w.agent, HS, 'GET', META_PATH, 200, META);
    replyJson(w.agent, ISSUER, 'GET', '/.well-known/openid-configuration', 404, { error: 'not found' });
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/registration', 201, { client_id: 'client-1' });
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/device', 200, DEVICE);
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/token', 200, TOKENS);
    whoamiAndName('MYDEVICE01');
    await expect(loginService(input({ deviceId: 'MYDEVICE01' }), w.deps, interaction())).resolves.toMatchObject({ issuer: `${ISSUER}/` });
  });
});

describe('--device-id on an OAuth 2.0 server (the Matrix Authentication Service rule: [A-Za-z0-9-]{10,})', () => {
  it.each([
    ['too short', 'SHORT1'],
    ['a dot', 'my.device.01'],
    ['an underscore', 'my_device_01'],
    ['a tilde', 'mydevice~01'],
    ['longer than 64', 'A'.repeat(65)],
  ])('%s: exit 2 naming the rule and an example, before any client is registered', async (_case, deviceId) => {
    oauthServer();
    const err = await rejectionOf(() => loginService(input({ deviceId }), w.deps, interaction()));
    expect(err).toMatchObject({ exitCode: 2, code: 'usage' });
    expect(err.message).toContain('10 to 64 letters, digits and "-" (A-Z a-z 0-9 -)');
    expect(hintText(err)).toBe('Choose one such as --device-id mxs-laptop-01, or leave --device-id out to get a new one.');
    expect(w.requests().map((r) => r.url)).not.toContain(`${ISSUER}/oauth2/registration`);
  });

  it('a control character in the refused ID is shown escaped', async () => {
    oauthServer();
    const err = await rejectionOf(() => loginService(input({ deviceId: 'bad\x1b[31m' }), w.deps, interaction()));
    expect(err.message).toContain('"bad\\x1b[31m"');
  });

  it.each(['mxs-laptop-01', 'ABCDEFGHIJ', 'a'.repeat(64)])('%s is accepted and sent in the device scope', async (deviceId) => {
    oauthServer();
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/device', 200, DEVICE);
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/token', 200, TOKENS);
    whoamiAndName(deviceId);
    await expect(loginService(input({ deviceId }), w.deps, interaction())).resolves.toMatchObject({ deviceId });
    const device = w.requests().find((r) => r.url === `${ISSUER}/oauth2/device`)!;
    expect((device.body as Record<string, string>).scope).toContain(`urn:matrix:client:device:${deviceId}`);
  });
});

describe('login --admin', () => {
  const ADMIN_SCOPE = 'urn:matrix:client:api:* urn:matrix:client:device:ADMINDEV01 urn:mas:admin urn:synapse:admin:*';

  it('asks for urn:mas:admin and urn:synapse:admin:* beside the usual scopes and stores the scopes granted; status shows them', async () => {
    oauthServer();
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/device', 200, DEVICE);
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/token', 200, { ...TOKENS, scope: ADMIN_SCOPE });
    whoamiAndName('ADMINDEV01');
    await loginService(input({ admin: true, deviceId: 'ADMINDEV01' }), w.deps, interaction());
    const [device] = w.requests().filter((r) => r.url === `${ISSUER}/oauth2/device`);
    expect(device!.body).toEqual({ client_id: 'client-1', scope: ADMIN_SCOPE });
    const scopes = ADMIN_SCOPE.split(' ');
    expect((await w.stored()).record!.auth).toMatchObject({ type: 'oauth', scopes });
    expect((await statusService('default', w.deps)).status.scopes).toEqual(scopes);
  });

  it('a refresh that names the scopes replaces them; one that does not keeps them', async () => {
    oauthServer();
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/device', 200, DEVICE);
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/token', 200, { ...TOKENS, scope: ADMIN_SCOPE });
    whoamiAndName('ADMINDEV01');
    await loginService(input({ admin: true, deviceId: 'ADMINDEV01' }), w.deps, interaction());
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/token', 200, { access_token: 'mat_2', refresh_token: 'mar_2', token_type: 'Bearer', expires_in: 300 });
    await refreshService('default', undefined, w.deps);
    expect((await statusService('default', w.deps)).status.scopes).toEqual(ADMIN_SCOPE.split(' '));
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/token', 200, { access_token: 'mat_3', refresh_token: 'mar_3', token_type: 'Bearer', expires_in: 300, scope: 'urn:matrix:client:api:*' });
    await refreshService('default', undefined, w.deps);
    expect((await statusService('default', w.deps)).status.scopes).toEqual(['urn:matrix:client:api:*']);
  });

  it('status of an OAuth session that recorded no scopes (an older mxs made it) says null', async () => {
    await w.seed({ oauth: true });
    expect((await statusService('default', w.deps)).status.scopes).toBeNull();
  });

  it.each([
    ['invalid_scope at the device endpoint', () => replyJson(w.agent, ISSUER, 'POST', '/oauth2/device', 400, { error: 'invalid_scope', error_description: 'admin not allowed' }), 'invalid_scope'],
    [
      'access_denied while polling',
      () => {
        replyJson(w.agent, ISSUER, 'POST', '/oauth2/device', 200, DEVICE);
        replyJson(w.agent, ISSUER, 'POST', '/oauth2/token', 403, { error: 'access_denied' });
      },
      'access_denied',
    ],
  ])('a refusal (%s) says the user is not allowed to request admin: exit 4, nothing stored', async (_case, refuse, code) => {
    oauthServer();
    refuse();
    const err = await rejectionOf(() => loginService(input({ admin: true, deviceId: 'ADMINDEV01' }), w.deps, interaction()));
    expect(err).toMatchObject({ exitCode: 4, code });
    expect(err.message).toMatch(/^The server refused the admin scopes: this user is not allowed to request admin/);
    expect(hintText(err)).toMatch(/can_request_admin|without --admin/);
    expect(await w.stored()).toEqual({ record: null, secret: null });
  });

  it('on a server without OAuth: a usage error (exit 2) saying an admin user logs in as usual; nothing sent but discovery', async () => {
    replyVersions(w.agent, HS);
    replyJson(w.agent, HS, 'GET', META_PATH, 404, { errcode: 'M_UNRECOGNIZED' });
    replyJson(w.agent, HS, 'GET', UNSTABLE_META_PATH, 404, { errcode: 'M_UNRECOGNIZED' });
    const err = await rejectionOf(() => loginService(input({ admin: true }), w.deps, interaction()));
    expect(err).toMatchObject({ exitCode: 2 });
    expect(hintText(err)).toMatch(/admin user logs in as usual/);
    expect(w.requests().filter((r) => r.method === 'POST')).toEqual([]);
  });

  it('with a password method: a usage error (exit 2) before anything is sent', async () => {
    const err = await rejectionOf(() => loginService(input({ admin: true, method: 'password' }), w.deps, interaction()));
    expect(err).toMatchObject({ exitCode: 2 });
    expect(w.requests().filter((r) => r.method === 'POST')).toEqual([]);
  });
});
