// `mxs login --client-credentials` (RFC 6749 §4.4) through the services: the grant, the secret stored
// like a refresh token, the grant run again through the session core, logout, status, the file format.
import { readFile } from 'node:fs/promises';
import { describe, expect, it } from '@jest/globals';
import { loginService, type LoginInput } from '../../src/services/login.js';
import { resolveApiPath } from '../../src/services/api.js';
import { listDevicesService } from '../../src/services/devices.js';
import { logoutService } from '../../src/services/logout.js';
import { statusService } from '../../src/services/status.js';
import { tokenService } from '../../src/services/tokens.js';
import { HS, ISSUER, T0, hintText, rejectionOf, replyJson, replyJsonWith, replyVersions, type UnitWorld, worldPerTest, OAUTH_METADATA } from '../support/unit-deps.js';

const META = {
  ...OAUTH_METADATA,
  grant_types_supported: ['authorization_code', 'refresh_token', 'client_credentials'],
  token_endpoint_auth_methods_supported: ['none', 'client_secret_basic', 'client_secret_post'],
};
const SCOPE = 'urn:matrix:client:api:* urn:mas:admin urn:synapse:admin:*';
const SECRET = 'sekr3t with space';
const BASIC = `Basic ${Buffer.from(`01JCLIENT:${encodeURIComponent(SECRET).replace(/%20/g, '+')}`).toString('base64')}`;

let w: UnitWorld;
worldPerTest((made) => (w = made));

const input = (over: Partial<LoginInput> = {}): LoginInput => ({
  profile: 'ops',
  server: HS,
  refresh: true,
  insecure: false,
  storage: 'file',
  clientCredentials: { clientId: '01JCLIENT', clientSecret: SECRET },
  ...over,
});

function oauthServer(meta: object = META) {
  replyVersions(w.agent, HS);
  replyJson(w.agent, HS, 'GET', '/_matrix/client/v1/auth_metadata', 200, meta);
  replyJson(w.agent, ISSUER, 'GET', '/.well-known/openid-configuration', 200, meta);
}

/** Answers one token request, recording its form and Authorization header. */
function grant(seen: { body?: unknown; authorization?: string }[], answer = { access_token: 'mat_cc_1', token_type: 'Bearer', expires_in: 300, scope: SCOPE }) {
  replyJsonWith(w.agent, ISSUER, 'POST', '/oauth2/token', (req) => {
    const headers = req.headers as Record<string, string>;
    seen.push({ body: Object.fromEntries(new URLSearchParams(String(req.body))), authorization: headers.authorization ?? headers.Authorization });
    return { status: 200, body: answer };
  });
}

describe('login --client-credentials', () => {
  it('runs the grant with client_secret_basic and the admin scopes; stores the secret like a refresh token; no user, no device', async () => {
    oauthServer();
    const seen: { body?: unknown; authorization?: string }[] = [];
    grant(seen);
    const result = await loginService(input(), w.deps);
    expect(seen).toEqual([{ body: { grant_type: 'client_credentials', scope: SCOPE }, authorization: BASIC }]);
    expect(result).toMatchObject({ userId: null, deviceId: null, method: 'client_credentials', issuer: `${ISSUER}/`, refreshable: true });
    const { record, secret } = await w.stored('ops');
    expect(secret).toMatchObject({ accessToken: 'mat_cc_1', refreshToken: SECRET });
    expect(record!.auth).toEqual({
      type: 'oauth',
      issuer: `${ISSUER}/`,
      clientId: '01JCLIENT',
      tokenEndpoint: `${ISSUER}/oauth2/token`,
      revocationEndpoint: `${ISSUER}/oauth2/revoke`,
      scopes: SCOPE.split(' '),
      grant: 'client_credentials',
      clientAuthMethod: 'client_secret_basic',
    });
    // Format 3, so that an older mxs says a newer one wrote it rather than send the secret as a refresh token.
    expect(JSON.parse(await readFile(w.paths.session('ops'), 'utf8'))).toMatchObject({ format: 3, method: 'client_credentials', userId: null, deviceId: null });
    expect(w.remembered).toEqual(expect.arrayContaining([SECRET, 'mat_cc_1']));
    expect((await statusService('ops', w.deps)).status).toMatchObject({ loggedIn: true, method: 'client_credentials', userId: null, deviceId: null, scopes: SCOPE.split(' ') });
  });

  it('sends client_secret_post where the metadata offers only that', async () => {
    oauthServer({ ...META, token_endpoint_auth_methods_supported: ['client_secret_post'] });
    const seen: { body?: unknown; authorization?: string }[] = [];
    grant(seen);
    await loginService(input(), w.deps);
    expect(seen).toEqual([{ body: { grant_type: 'client_credentials', scope: SCOPE, client_id: '01JCLIENT', client_secret: SECRET }, authorization: undefined }]);
  });

  it('a refused client (invalid_client): exit 4 naming the client, nothing stored', async () => {
    oauthServer();
    replyJson(w.agent, ISSUER, 'POST', '/oauth2/token', 401, { error: 'invalid_client', error_description: 'bad secret' });
    const err = await rejectionOf(() => loginService(input(), w.deps));
    expect(err).toMatchObject({ exitCode: 4, code: 'invalid_client' });
    expect(err.message).toContain('01JCLIENT');
    expect(err.message).not.toContain(SECRET);
    expect(hintText(err)).toContain('admin client');
    expect(await w.stored('ops')).toEqual({ record: null, secret: null });
  });

  it.each([
    ['a server without OAuth', () => {
      replyVersions(w.agent, HS);
      replyJson(w.agent, HS, 'GET', '/_matrix/client/v1/auth_metadata', 404, { errcode: 'M_UNRECOGNIZED' });
      replyJson(w.agent, HS, 'GET', '/_matrix/client/unstable/org.matrix.msc2965/auth_metadata', 404, { errcode: 'M_UNRECOGNIZED' });
    }],
    ['a server that does not offer the grant', () => oauthServer({ ...META, grant_types_supported: ['authorization_code'] })],
    ['a server that takes no client secret', () => oauthServer({ ...META, token_endpoint_auth_methods_supported: ['none', 'private_key_jwt'] })],
  ])('%s: a usage error (exit 2), the secret never sent', async (_case, server) => {
    server();
    const err = await rejectionOf(() => loginService(input(), w.deps));
    expect(err).toMatchObject({ exitCode: 2 });
    expect(w.requests().filter((r) => r.method === 'POST')).toEqual([]);
  });
});

describe('a client-credentials session', () => {
  async function loggedIn() {
    oauthServer();
    grant([]);
    await loginService(input(), w.deps);
  }

  it('runs the grant again, under the profile lock, when the token is about to expire; the secret stays', async () => {
    await loggedIn();
    w.clock.set(T0 + 299_000);
    const seen: { body?: unknown; authorization?: string }[] = [];
    grant(seen, { access_token: 'mat_cc_2', token_type: 'Bearer', expires_in: 300, scope: SCOPE });
    const result = await tokenService('ops', 60_000, w.deps);
    expect(result).toMatchObject({ accessToken: 'mat_cc_2' });
    expect(seen).toEqual([{ body: { grant_type: 'client_credentials', scope: SCOPE }, authorization: BASIC }]);
    expect((await w.stored('ops')).secret).toMatchObject({ accessToken: 'mat_cc_2', refreshToken: SECRET });
  });

  it('a refresh token in a later answer is not kept: the secret stays the way to a new token', async () => {
    await loggedIn();
    w.clock.set(T0 + 299_000);
    grant([], { access_token: 'mat_cc_3', token_type: 'Bearer', expires_in: 300, refresh_token: 'mar_unexpected' } as never);
    await tokenService('ops', 60_000, w.deps);
    expect((await w.stored('ops')).secret).toMatchObject({ accessToken: 'mat_cc_3', refreshToken: SECRET });
  });

  it('api: {userId} and {deviceId} have no value there (exit 2); other paths resolve as usual', () => {
    const session = { homeserver: HS, userId: null, deviceId: null };
    expect(() => resolveApiPath('/_synapse/admin/v2/users/{userId}', session)).toThrow(expect.objectContaining({ exitCode: 2 }) as unknown as Error);
    expect(() => resolveApiPath('devices/{deviceId}', session)).toThrow(expect.objectContaining({ exitCode: 2 }) as unknown as Error);
    expect(resolveApiPath('/_synapse/admin/v2/users/@bob:example.org', session).pathname).toBe('/_synapse/admin/v2/users/@bob:example.org');
  });

  it('devices: a usage error (exit 2) pointing at mxs admin, nothing asked of the server', async () => {
    await loggedIn();
    const before = w.requests().length;
    await expect(listDevicesService('ops', w.deps)).rejects.toMatchObject({ exitCode: 2 });
    expect(w.requests().length).toBe(before);
  });

  it('logout revokes the access token with the client authentication, then forgets the secret', async () => {
    await loggedIn();
    let revoked: { body?: unknown; authorization?: string } = {};
    replyJsonWith(w.agent, ISSUER, 'POST', '/oauth2/revoke', (req) => {
      const headers = req.headers as Record<string, string>;
      revoked = { body: Object.fromEntries(new URLSearchParams(String(req.body))), authorization: headers.authorization };
      return { status: 200, body: {} };
    });
    await expect(logoutService('ops', { local: false, all: false }, w.deps)).resolves.toEqual({ profile: 'ops', serverSide: true });
    expect(revoked).toEqual({ body: { token: 'mat_cc_1', token_type_hint: 'access_token' }, authorization: BASIC });
    expect(await w.stored('ops')).toEqual({ record: null, secret: null });
  });
});
