// Checks the test OAuth homeserver itself (test/support/oauth-homeserver.ts): Synapse 1.156 delegating auth to
// oidc-provider behaves as the OAuth suites expect. Plain HTTP only, no mxs code.
import { createServer, type Server } from 'node:http';
import { createHash, randomBytes } from 'node:crypto';
import { describeWithOAuthHomeserver, oauthHomeserverFromEnv, type OAuthHomeserverHandle } from '../support/oauth-homeserver.js';

const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

interface Metadata {
  issuer: string;
  authorization_endpoint: string;
  token_endpoint: string;
  registration_endpoint: string;
  revocation_endpoint: string;
  device_authorization_endpoint: string;
  code_challenge_methods_supported: string[];
  grant_types_supported: string[];
  [key: string]: unknown;
}

interface TokenResponse {
  access_token: string;
  refresh_token: string;
  expires_in: number;
  token_type: string;
  scope: string;
}

async function form(url: string, body: Record<string, string>): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(url, { method: 'POST', body: new URLSearchParams(body) });
  const text = await res.text();
  return { status: res.status, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

async function postJson(url: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const scopeFor = (deviceId: string): string => `urn:matrix:client:api:* urn:matrix:client:device:${deviceId}`;
const randomDeviceId = (): string => randomBytes(8).toString('hex').toUpperCase().slice(0, 12);

describeWithOAuthHomeserver('test OAuth homeserver harness (Synapse 1.156 + oidc-provider)', () => {
  let hs: OAuthHomeserverHandle;
  let meta: Metadata;

  beforeAll(async () => {
    hs = oauthHomeserverFromEnv();
    const res = await fetch(`${hs.baseUrl}/_matrix/client/v1/auth_metadata`);
    expect(res.status).toBe(200);
    meta = (await res.json()) as Metadata;
  });

  async function registerDeviceClient(): Promise<string> {
    const reg = await postJson(meta.registration_endpoint, {
      client_name: 'mxs harness test',
      client_uri: 'https://example.org',
      grant_types: [DEVICE_GRANT, 'refresh_token'],
      response_types: [],
      token_endpoint_auth_method: 'none',
      application_type: 'native',
    });
    expect(reg.status).toBe(201);
    return reg.json.client_id as string;
  }

  async function deviceAuthorization(clientId: string, deviceId: string): Promise<Record<string, unknown>> {
    const da = await form(meta.device_authorization_endpoint, { client_id: clientId, scope: scopeFor(deviceId) });
    expect(da.status).toBe(200);
    return da.json;
  }

  const pollToken = (clientId: string, deviceCode: string): Promise<{ status: number; json: Record<string, unknown> }> =>
    form(meta.token_endpoint, { grant_type: DEVICE_GRANT, device_code: deviceCode, client_id: clientId });

  /** A full device login as `localpart`; returns the client and the token response. */
  async function deviceLogin(localpart: string, deviceId: string): Promise<{ clientId: string; tokens: TokenResponse }> {
    const clientId = await registerDeviceClient();
    const da = await deviceAuthorization(clientId, deviceId);
    await hs.approveDevice(da.user_code as string, localpart);
    const res = await pollToken(clientId, da.device_code as string);
    expect(res.status).toBe(200);
    return { clientId, tokens: res.json as unknown as TokenResponse };
  }

  test('Synapse serves the provider metadata at /_matrix/client/v1/auth_metadata', async () => {
    const own = (await (await fetch(`${hs.issuer}/.well-known/openid-configuration`)).json()) as Metadata;
    expect(hs.synapseVersion).toBe('1.156.0');
    expect(meta).toEqual(own);
    expect(meta).toMatchObject({
      issuer: hs.issuer,
      device_authorization_endpoint: `${hs.issuer}/device/auth`,
      token_endpoint: `${hs.issuer}/token`,
      registration_endpoint: `${hs.issuer}/reg`,
      revocation_endpoint: `${hs.issuer}/token/revocation`,
      authorization_endpoint: `${hs.issuer}/auth`,
      account_management_uri: `${hs.issuer}/account`,
    });
    expect(meta.code_challenge_methods_supported).toEqual(['S256']);
    expect(meta.grant_types_supported).toEqual(expect.arrayContaining([DEVICE_GRANT, 'refresh_token', 'authorization_code']));
  });

  test('device grant end to end: pending (400), approval, tokens, whoami, admin /devices, expiry, refresh rotation, revocation', async () => {
    const clientId = await registerDeviceClient();
    const da = await deviceAuthorization(clientId, 'ABCDEFGHIJ');
    expect(da).toMatchObject({
      device_code: expect.any(String),
      user_code: expect.stringMatching(/^[A-Z]{4}-[A-Z]{4}$/),
      verification_uri: hs.verificationUri,
      verification_uri_complete: `${hs.verificationUri}?user_code=${da.user_code as string}`,
      expires_in: 600,
    });
    // oidc-provider sends no `interval` (RFC 8628 then means 5 s) and never answers slow_down.
    expect(da.interval).toBeUndefined();

    const pending = await pollToken(clientId, da.device_code as string);
    expect(pending.status).toBe(400);
    expect(pending.json.error).toBe('authorization_pending');

    await hs.approveDevice(da.user_code as string, 'alice');
    const granted = await pollToken(clientId, da.device_code as string);
    expect(granted.status).toBe(200);
    const tokens = granted.json as unknown as TokenResponse;
    expect(tokens).toMatchObject({
      access_token: expect.any(String),
      refresh_token: expect.any(String),
      expires_in: hs.accessTokenTTL,
      token_type: 'Bearer',
      scope: scopeFor('ABCDEFGHIJ'),
    });
    const whoami = await hs.whoami(tokens.access_token);
    expect(whoami).toEqual({ status: 200, body: expect.objectContaining({ user_id: '@alice:localhost', device_id: 'ABCDEFGHIJ' }) });
    expect(await hs.devices('@alice:localhost')).toContain('ABCDEFGHIJ');
    expect(await hs.introspect(tokens.access_token)).toMatchObject({
      active: true,
      kind: 'AccessToken',
      username: 'alice',
      sub: 'alice',
      client_id: clientId,
      expires_in: expect.any(Number),
    });
    expect(await hs.grantCounts(clientId)).toEqual({
      grants: { device_code: 1 },
      attempts: { device_code: 2 },
      errors: { 'device_code:authorization_pending': 1 },
      revocations: 0,
    });

    // Synapse cached that introspection answer (2 minutes), but honours its relative expires_in.
    await sleep(hs.accessTokenTTL * 1000 + 1000);
    const expired = await hs.whoami(tokens.access_token);
    expect(expired.status).toBe(401);
    expect(expired.body).toMatchObject({ errcode: 'M_UNKNOWN_TOKEN', error: 'Token is not active', soft_logout: false });
    expect(await hs.introspect(tokens.access_token)).toEqual({ active: false });

    // refresh_token grant: rotates both tokens; the new access token works.
    const refreshed = await form(meta.token_endpoint, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token, client_id: clientId });
    expect(refreshed.status).toBe(200);
    const next = refreshed.json as unknown as TokenResponse;
    expect(next.access_token).not.toBe(tokens.access_token);
    expect(next.refresh_token).not.toBe(tokens.refresh_token);
    expect(next.expires_in).toBe(hs.accessTokenTTL);
    expect(next.scope).toBe(scopeFor('ABCDEFGHIJ'));
    expect((await hs.whoami(next.access_token)).body).toMatchObject({ user_id: '@alice:localhost', device_id: 'ABCDEFGHIJ' });
    expect((await hs.grantCounts(clientId)).grants).toEqual({ device_code: 1, refresh_token: 1 });

    // Revocation (RFC 7009) of the access token: the provider says inactive at once...
    const revoke = await form(meta.revocation_endpoint, { token: next.access_token, token_type_hint: 'access_token', client_id: clientId });
    expect(revoke.status).toBe(200);
    expect(await hs.introspect(next.access_token)).toEqual({ active: false });
    expect(await hs.revokedCount(clientId)).toBe(1);
    // ...but Synapse keeps its cached positive answer until the token's own expiry (at most 2 minutes).
    expect((await hs.whoami(next.access_token)).status).toBe(200);
    // Revoking the access token revoked the whole grant: the refresh token is dead too.
    expect(await hs.introspect(next.refresh_token)).toEqual({ active: false });
    const afterRevoke = await form(meta.token_endpoint, { grant_type: 'refresh_token', refresh_token: next.refresh_token, client_id: clientId });
    expect(afterRevoke).toMatchObject({ status: 400, json: { error: 'invalid_grant' } });
  }, 60_000);

  test('reusing a rotated refresh token answers 400 invalid_grant and ends the whole grant', async () => {
    const { clientId, tokens } = await deviceLogin('bob', randomDeviceId());
    const rt1 = tokens.refresh_token;
    const r2 = await form(meta.token_endpoint, { grant_type: 'refresh_token', refresh_token: rt1, client_id: clientId });
    expect(r2.status).toBe(200);
    const rt2 = r2.json.refresh_token as string;
    expect(await hs.introspect(rt2)).toMatchObject({ active: true, kind: 'RefreshToken' });

    const replay = await form(meta.token_endpoint, { grant_type: 'refresh_token', refresh_token: rt1, client_id: clientId });
    expect(replay.status).toBe(400);
    expect(replay.json.error).toBe('invalid_grant');
    // Stricter than the Matrix Authentication Service: the replay revoked the grant, so rt2 is dead as well.
    expect(await hs.introspect(rt2)).toEqual({ active: false });
    const r3 = await form(meta.token_endpoint, { grant_type: 'refresh_token', refresh_token: rt2, client_id: clientId });
    expect(r3).toMatchObject({ status: 400, json: { error: 'invalid_grant' } });
  });

  test('polling a consumed device code answers 400 invalid_grant and revokes the tokens it gave', async () => {
    const clientId = await registerDeviceClient();
    const da = await deviceAuthorization(clientId, randomDeviceId());
    await hs.approveDevice(da.user_code as string, 'bob');
    const first = await pollToken(clientId, da.device_code as string);
    expect(first.status).toBe(200);
    const tokens = first.json as unknown as TokenResponse;
    expect(await hs.introspect(tokens.access_token)).toMatchObject({ active: true });

    const again = await pollToken(clientId, da.device_code as string);
    expect(again).toMatchObject({ status: 400, json: { error: 'invalid_grant' } });
    // oidc-provider treats the replay like a replayed authorization code: the grant is revoked.
    expect(await hs.introspect(tokens.access_token)).toEqual({ active: false });
    expect(await hs.introspect(tokens.refresh_token)).toEqual({ active: false });
    expect((await hs.whoami(tokens.access_token)).status).toBe(401);
  });

  test('a denied device request answers 400 access_denied', async () => {
    const clientId = await registerDeviceClient();
    const da = await deviceAuthorization(clientId, randomDeviceId());
    await hs.approveDevice(da.user_code as string, 'alice', { deny: true });
    const denied = await pollToken(clientId, da.device_code as string);
    expect(denied.status).toBe(400);
    expect(denied.json.error).toBe('access_denied');
  });

  test('an expired device code answers 400 expired_token; a wrong user code makes approveDevice throw', async () => {
    const clientId = await registerDeviceClient();
    await hs.setTtls({ clientId, deviceCodeTTL: 1 });
    const da = await deviceAuthorization(clientId, randomDeviceId());
    expect(da.expires_in).toBe(1);
    await sleep(2100);
    const expired = await pollToken(clientId, da.device_code as string);
    expect(expired.status).toBe(400);
    expect(expired.json.error).toBe('expired_token');
    await expect(hs.approveDevice(da.user_code as string, 'alice')).rejects.toThrow(/code page/);
    await expect(hs.approveDevice('BCDF-GHJK', 'alice')).rejects.toThrow(/incorrect/);
  });

  test('faults: the token endpoint can be made to fail for one client', async () => {
    const { clientId, tokens } = await deviceLogin('alice', randomDeviceId());
    await hs.setFault({ route: 'token', clientId, grantType: 'refresh_token', status: 500, times: 1 });
    const failed = await form(meta.token_endpoint, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token, client_id: clientId });
    expect(failed).toMatchObject({ status: 500, json: { error: 'server_error' } });
    // The fault was not reached by oidc-provider: the same refresh token still works.
    const ok = await form(meta.token_endpoint, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token, client_id: clientId });
    expect(ok.status).toBe(200);
  });

  describe('authorization code + PKCE (S256) with a loopback redirect registered without a port', () => {
    let server: Server;
    let port: number;
    let received: URL[];

    beforeAll(async () => {
      received = [];
      server = createServer((req, res) => {
        received.push(new URL(req.url ?? '/', `http://127.0.0.1:${port}`));
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end('login finished, you can close this window');
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      port = (server.address() as { port: number }).port;
    });
    afterAll(async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    });

    async function registerCodeClient(): Promise<string> {
      const reg = await postJson(meta.registration_endpoint, {
        client_name: 'mxs harness test (code)',
        client_uri: 'https://example.org',
        redirect_uris: ['http://127.0.0.1/callback'],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'none',
        application_type: 'native',
      });
      expect(reg.status).toBe(201);
      return reg.json.client_id as string;
    }

    function authorizationUrl(clientId: string, deviceId: string, verifier: string, state: string): string {
      const url = new URL(meta.authorization_endpoint);
      url.search = new URLSearchParams({
        response_type: 'code',
        client_id: clientId,
        redirect_uri: `http://127.0.0.1:${port}/callback`,
        scope: scopeFor(deviceId),
        state,
        code_challenge: createHash('sha256').update(verifier).digest('base64url'),
        code_challenge_method: 'S256',
      }).toString();
      return url.href;
    }

    test('login and consent redirect to the loopback port with code, state and iss; the code gives working tokens', async () => {
      const clientId = await registerCodeClient();
      const verifier = randomBytes(32).toString('base64url');
      const state = randomBytes(8).toString('hex');
      const deviceId = randomDeviceId();
      const result = await hs.authorize(authorizationUrl(clientId, deviceId, verifier, state), 'alice');
      expect(result.status).toBe(200);
      expect(result.body).toBe('login finished, you can close this window');
      const callback = new URL(result.url);
      expect(`${callback.origin}${callback.pathname}`).toBe(`http://127.0.0.1:${port}/callback`);
      expect(received.at(-1)?.href).toBe(callback.href);
      expect(callback.searchParams.get('state')).toBe(state);
      expect(callback.searchParams.get('iss')).toBe(hs.issuer);
      const code = callback.searchParams.get('code') as string;
      expect(code).toBeTruthy();

      const exchange = (codeVerifier: string): Promise<{ status: number; json: Record<string, unknown> }> =>
        form(meta.token_endpoint, {
          grant_type: 'authorization_code',
          code,
          redirect_uri: `http://127.0.0.1:${port}/callback`,
          client_id: clientId,
          code_verifier: codeVerifier,
        });
      const wrong = await exchange(randomBytes(32).toString('base64url'));
      expect(wrong).toMatchObject({ status: 400, json: { error: 'invalid_grant' } });
      // A failed PKCE check consumed the code? oidc-provider checks PKCE before consuming: the right verifier still works.
      const tokens = await exchange(verifier);
      expect(tokens.status).toBe(200);
      expect(tokens.json).toMatchObject({ access_token: expect.any(String), refresh_token: expect.any(String), expires_in: hs.accessTokenTTL });
      expect((await hs.whoami(tokens.json.access_token as string)).body).toMatchObject({ user_id: '@alice:localhost', device_id: deviceId });
      expect((await hs.grantCounts(clientId)).grants).toEqual({ authorization_code: 1 });
    });

    test('PKCE is required for public clients', async () => {
      const clientId = await registerCodeClient();
      const url = new URL(authorizationUrl(clientId, randomDeviceId(), 'x'.repeat(43), 'st'));
      url.searchParams.delete('code_challenge');
      url.searchParams.delete('code_challenge_method');
      const result = await hs.authorize(url.href, 'alice');
      const callback = new URL(result.url);
      expect(callback.searchParams.get('error')).toBe('invalid_request');
      expect(callback.searchParams.get('error_description')).toMatch(/PKCE/);
    });

    test('a denied authorization redirects with error=access_denied', async () => {
      const clientId = await registerCodeClient();
      const result = await hs.authorize(authorizationUrl(clientId, randomDeviceId(), randomBytes(32).toString('base64url'), 'st8'), 'bob', { deny: true });
      const callback = new URL(result.url);
      expect(callback.port).toBe(String(port));
      expect(callback.searchParams.get('error')).toBe('access_denied');
      expect(callback.searchParams.get('state')).toBe('st8');
    });
  });
});
