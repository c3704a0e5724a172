// mxs against a real OAuth 2.0 homeserver: Synapse 1.156 delegating auth to oidc-provider (test/support/
// oauth-homeserver.ts), plus `--method auto` against the legacy Synapse 1.163. Every case spawns the built CLI
// with its own MXS_CONFIG_DIR (file storage), plays the user in the provider's HTML pages through the handle, and
// checks what mxs printed and stored against what Synapse (whoami, admin /devices) and the provider (grant
// counters, introspection) say.
//
// The provider and Synapse are shared with other test files running in parallel jest workers, so nothing here
// changes global provider state: counters, TTL overrides and faults are all scoped to the client ID of the login
// under test. Expiry is real (no faked clock). To keep the suite short:
// - sessions for the command cases log in through --browser (no device-grant poll interval to sit out), and their
//   first access token is given 4 s of life instead of 6 (a per-client TTL set between registration and the grant:
//   the authorization URL names the client); later tokens get the server's usual 6 s, or more where a test must
//   not race the refresh-ahead rule. Not less than 4 s: oidc-provider counts in whole seconds from the start of the
//   second the token was issued (so a token lives TTL - 0..1 s) and Synapse floors the `expires_in` it is told, so
//   Synapse may refuse a token up to 2 s before the `expires_in` mxs was given says; with 2 s, a login's own
//   whoami right after the grant could find its brand-new token "not active" on a loaded machine;
// - cases that wait run side by side (test.concurrent): each has its own client, device and config dir.
// The device code's lifetime is fixed when mxs asks for the code, right after registering, so no test can learn
// the client ID in time through mxs's output: the expiry case puts a registration tap (below) in front of Synapse.
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { homesForSuite, type RunResult } from '../support/cli.js';
import { exists, listenLocally, sessionPaths, snapshot, startMxs, useIsolatedBuild, waitFor, type Started } from '../support/fault-kit.js';
import { describeWithOAuthHomeserver, oauthHomeserverFromEnv, type OAuthHomeserverHandle } from '../support/oauth-homeserver.js';
import { describeWithSynapse, TEST_USERS, testSynapseUrl } from '../support/synapse.js';

interface Secret {
  accessToken: string;
  refreshToken: string | null;
  issuedAt: string;
  expiresAt: string | null;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
/** Waits (for real) until `ms` past the given ISO time. */
const waitPast = async (iso: string | null, ms = 300) => sleep(Math.max(0, Date.parse(iso!) + ms - Date.now()));

/** Seconds of life of the first access token of the command cases' sessions (see the header). */
const SHORT_TTL = 4;
const USER_CODE = /enter the code: ([A-Z0-9-]+)/;
const AUTHORIZATION_URL = /Open this URL in a browser to log in:\r?\n\s+(http\S+)/;

// Other engineers rebuild dist/ while suites run: spawn a private copy of the build (fault-kit).
useIsolatedBuild();

// ---------------------------------------------------------------------------------------------------------------
// One config dir per case

type Home = Awaited<ReturnType<typeof newHome>>;
const suiteHome = homesForSuite();

async function newHome() {
  const home = await suiteHome();
  const configDir = home.env.MXS_CONFIG_DIR!;
  const env = { ...home.env, MXS_NO_BROWSER: '1' };
  const paths = sessionPaths(configDir);
  return {
    configDir,
    run: (args: string[], input?: string): Promise<RunResult> => startMxs(args, { env, input }).done,
    /** Starts mxs and collects its stderr as it comes. */
    spawn(args: string[]) {
      const run: Started = startMxs(args, { env });
      let text = '';
      run.child.stderr!.on('data', (d) => (text += d));
      return {
        ...run,
        stderr: () => text,
        async match(re: RegExp): Promise<RegExpMatchArray> {
          await waitFor(`mxs's stderr to match ${re}`, () => re.test(text), 20_000, 20);
          return text.match(re)!;
        },
      };
    },
    record: async () => JSON.parse(await readFile(paths.session, 'utf8')),
    secret: async (): Promise<Secret> => JSON.parse(await readFile(paths.secret, 'utf8')),
    /** Whether anything of a session is stored (sessions file or secrets file). */
    stored: async () => (await exists(paths.session)) || (await exists(paths.secret)),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Shared steps and checks

/**
 * The output of a successful OAuth login, the stored session, and Synapse's view of the stored token: whoami
 * names the user and the stored device, and the admin API lists that device. Returns what was stored.
 */
async function expectOAuthSession(hs: OAuthHomeserverHandle, home: Home, r: RunResult, userId = '@alice:localhost') {
  expect({ code: r.code, stderr: r.code === 0 ? '' : r.stderr }).toEqual({ code: 0, stderr: '' });
  const out = r.json();
  expect(out).toEqual({
    profile: 'default',
    homeserver: hs.baseUrl,
    userId,
    deviceId: expect.stringMatching(/^[A-Za-z0-9]{10,}$/),
    method: 'oauth',
    issuer: hs.issuer,
    expiresAt: expect.any(String),
    expiresInMs: expect.any(Number),
    refreshable: true,
    storage: 'file',
  });
  const record = await home.record();
  expect(record).toMatchObject({
    format: 2,
    profile: 'default',
    homeserver: hs.baseUrl,
    userId,
    deviceId: out.deviceId,
    expiresAt: out.expiresAt,
    refreshable: true,
    storage: 'file',
    method: 'oauth',
    auth: {
      type: 'oauth',
      issuer: hs.issuer,
      clientId: expect.any(String),
      tokenEndpoint: `${hs.issuer}/token`,
      revocationEndpoint: `${hs.issuer}/token/revocation`,
    },
  });
  const secret = await home.secret();
  expect(secret).toEqual({ accessToken: expect.any(String), refreshToken: expect.any(String), issuedAt: record.issuedAt, expiresAt: out.expiresAt });
  expect(await hs.whoami(secret.accessToken)).toEqual({ status: 200, body: expect.objectContaining({ user_id: userId, device_id: out.deviceId }) });
  expect(await hs.devices(userId)).toContain(out.deviceId);
  expect(await hs.introspect(secret.accessToken)).toMatchObject({ active: true, client_id: record.auth.clientId, username: userId.slice(1).split(':')[0] });
  return { out, record, secret, clientId: record.auth.clientId as string, deviceId: out.deviceId as string };
}

/**
 * `mxs login --browser --user alice`: reads the authorization URL from stderr, optionally gives this client's
 * first access token `firstTokenTtl` seconds of life, and plays the browser (login as alice, consent, redirect to
 * mxs's loopback listener).
 */
async function browserLogin(hs: OAuthHomeserverHandle, home: Home, opts: { firstTokenTtl?: number } = {}) {
  const run = home.spawn(['login', hs.baseUrl, '--browser', '--user', 'alice', '--json']);
  const [, url] = await run.match(AUTHORIZATION_URL);
  const authorizationUrl = new URL(url!);
  const clientId = authorizationUrl.searchParams.get('client_id')!;
  if (opts.firstTokenTtl !== undefined) await hs.setTtls({ clientId, accessTokenTTL: opts.firstTokenTtl });
  const browser = await hs.authorize(url!, 'alice');
  const r = await run.done;
  return { r, authorizationUrl, clientId, browser };
}

/** A stored OAuth session as alice whose first access token lives 4 s; later tokens live `thenTtl` seconds. */
async function shortLivedSession(hs: OAuthHomeserverHandle, home: Home, thenTtl = hs.accessTokenTTL) {
  const { r } = await browserLogin(hs, home, { firstTokenTtl: SHORT_TTL });
  const session = await expectOAuthSession(hs, home, r);
  expect(Date.parse(session.secret.expiresAt!) - Date.parse(session.secret.issuedAt)).toBe(SHORT_TTL * 1000);
  await hs.setTtls({ clientId: session.clientId, accessTokenTTL: thenTtl });
  return session;
}

/** Waits until the stored access token has expired, and checks that Synapse refuses it by then. */
async function waitForExpiry(hs: OAuthHomeserverHandle, secret: Secret) {
  await waitPast(secret.expiresAt, 400);
  expect((await hs.whoami(secret.accessToken)).body).toMatchObject({ errcode: 'M_UNKNOWN_TOKEN' });
}

/**
 * A registration tap: a front for the OAuth Synapse that passes everything through, except that the
 * auth_metadata it serves sends client registration through itself, so the test learns the client ID mxs
 * registers (and can act on it, e.g. set that client's TTLs) before mxs's next request.
 */
async function startRegistrationTap(hs: OAuthHomeserverHandle, onRegistered: (clientId: string) => Promise<unknown>) {
  const clientIds: string[] = [];
  let base = '';
  const server = createServer((req, res) => {
    void (async () => {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      const path = req.url ?? '/';
      const registration = path === '/_tap/reg';
      const headers: Record<string, string> = {};
      for (const name of ['content-type', 'authorization', 'accept']) if (req.headers[name]) headers[name] = String(req.headers[name]);
      const upstream = await fetch(registration ? `${hs.issuer}/reg` : `${hs.baseUrl}${path}`, {
        method: req.method,
        headers,
        body: req.method === 'GET' || req.method === 'HEAD' ? undefined : Buffer.concat(chunks),
        redirect: 'manual',
      });
      let text = await upstream.text();
      if (upstream.ok && /\/auth_metadata$/.test(path.split('?')[0]!)) {
        text = JSON.stringify({ ...JSON.parse(text), registration_endpoint: `${base}/_tap/reg` });
      }
      if (registration && upstream.ok) {
        const clientId = JSON.parse(text).client_id as string;
        clientIds.push(clientId);
        await onRegistered(clientId);
      }
      res.writeHead(upstream.status, { 'content-type': upstream.headers.get('content-type') ?? 'application/json' });
      res.end(text);
    })().catch(() => res.destroy());
  });
  const served = await listenLocally(server);
  base = served.url;
  return { ...served, clientIds };
}

// ---------------------------------------------------------------------------------------------------------------

describeWithOAuthHomeserver('mxs against a real OAuth 2.0 homeserver (Synapse 1.156 delegating to oidc-provider)', () => {
  let hs: OAuthHomeserverHandle;
  beforeAll(() => {
    hs = oauthHomeserverFromEnv();
  });

  // Each of these sits out the provider's poll interval (5 s: oidc-provider sends none): run them side by side.
  describe('device-code login', () => {
    test.concurrent('--method auto (the default) logs in with a device code: approved as alice, Synapse knows the stored token and device', async () => {
      const home = await newHome();
      const run = home.spawn(['login', hs.baseUrl, '--json']);
      const [, code] = await run.match(USER_CODE);
      // The two lines may come in separate chunks: wait for the second before reading both.
      await run.match(/Or open this link, which carries the code: \S+\n/);
      expect(run.stderr()).toContain(`To log in, open ${hs.verificationUri} in a browser and enter the code: ${code}`);
      expect(run.stderr()).toContain(`Or open this link, which carries the code: ${hs.verificationUri}?user_code=${code}`);
      await hs.approveDevice(code!, 'alice');
      const r = await run.done;
      const { clientId, deviceId } = await expectOAuthSession(hs, home, r);
      expect(r.stdout).not.toContain(code!);
      expect((await hs.introspect((await home.secret()).accessToken)).scope).toContain(`urn:matrix:client:device:${deviceId}`);
      expect((await hs.grantCounts(clientId)).grants).toEqual({ device_code: 1 });
    });

    test.concurrent('a code denied in the browser: exit 4 access_denied, nothing stored, no account on Synapse', async () => {
      const home = await newHome();
      // A user of its own: Synapse's accounts are created when a token is first issued, so none may exist after.
      const localpart = `denied-${randomBytes(4).toString('hex')}`;
      const run = home.spawn(['login', hs.baseUrl, '--json']);
      const [, code] = await run.match(USER_CODE);
      await hs.approveDevice(code!, localpart, { deny: true });
      const r = await run.done;
      expect(r.code).toBe(4);
      expect(r.json()).toEqual({ error: { code: 'access_denied', message: expect.stringMatching(/denied/), exitCode: 4 } });
      expect(r.stderr).toMatch(/Error: The login was denied/);
      expect(await home.stored()).toBe(false);
      await expect(hs.devices(`@${localpart}:localhost`)).rejects.toThrow(/answered 404/);
    });

    test.concurrent('a code that expires before approval: exit 4 expired_token, nothing stored, the provider refuses the code too', async () => {
      const home = await newHome();
      // The code's lifetime is fixed when mxs asks for it, right after registering: the tap sets it for this client.
      const tap = await startRegistrationTap(hs, (clientId) => hs.setTtls({ clientId, deviceCodeTTL: 1 }));
      try {
        const run = home.spawn(['login', tap.url, '--json']);
        const [, code] = await run.match(USER_CODE);
        await run.match(/the code expires in (1s|\d+ms)/); // printed right after the code, maybe in a later write
        const r = await run.done;
        expect(r.code).toBe(4);
        expect(r.json()).toEqual({ error: { code: 'expired_token', message: expect.stringMatching(/expired/), exitCode: 4 } });
        expect(r.stderr).toMatch(/Run mxs login again/);
        expect(await home.stored()).toBe(false);
        // The provider agrees the code is dead: the verification page no longer takes it, and no token was issued.
        await expect(hs.approveDevice(code!, 'alice')).rejects.toThrow();
        expect(tap.clientIds).toHaveLength(1);
        expect((await hs.grantCounts(tap.clientIds[0])).grants).toEqual({});
      } finally {
        await tap.close();
      }
    });
  });

  describe('browser login', () => {
    test('--browser: authorization code + PKCE through the loopback listener; Synapse knows the stored token and device', async () => {
      const home = await newHome();
      const { r, authorizationUrl, clientId, browser } = await browserLogin(hs, home);
      const q = authorizationUrl.searchParams;
      expect(`${authorizationUrl.origin}${authorizationUrl.pathname}`).toBe(`${hs.issuer}/auth`);
      expect(q.get('response_type')).toBe('code');
      expect(q.get('code_challenge_method')).toBe('S256');
      expect(q.get('code_challenge')).toMatch(/^[A-Za-z0-9_-]{43}$/);
      expect(q.get('state')).toBeTruthy();
      expect(q.get('login_hint')).toBe(`mxid:@alice:${new URL(hs.baseUrl).host}`);
      expect(q.get('redirect_uri')).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/callback$/);
      // The browser came back to mxs's listener with the code, and mxs told it the login worked.
      expect(browser.url.startsWith(`${q.get('redirect_uri')}?`)).toBe(true);
      expect(browser.status).toBe(200);
      const session = await expectOAuthSession(hs, home, r);
      expect(session.clientId).toBe(clientId);
      expect(q.get('scope')!.split(' ')).toEqual(['urn:matrix:client:api:*', `urn:matrix:client:device:${session.deviceId}`]);
      expect((await hs.grantCounts(clientId)).grants).toEqual({ authorization_code: 1 });
    });
  });

  // Each case has its own login (client, device, config dir) and mostly waits on expiry: run them side by side.
  describe('an OAuth session on Synapse', () => {
    test.concurrent('refresh once the access token expired: the refresh token rotates, the new access token works on Synapse', async () => {
      const home = await newHome();
      const { clientId, deviceId, secret: before } = await shortLivedSession(hs, home);
      await waitForExpiry(hs, before);
      const r = await home.run(['refresh', '--json']);
      expect(r.code).toBe(0);
      expect(r.json()).toEqual({ profile: 'default', expiresAt: expect.any(String), expiresInMs: expect.any(Number), refreshTokenRotated: true });
      const after = await home.secret();
      expect(after.accessToken).not.toBe(before.accessToken);
      expect(after.refreshToken).not.toBe(before.refreshToken);
      expect(after.expiresAt).toBe(r.json().expiresAt);
      expect(Date.parse(after.expiresAt!) - Date.parse(after.issuedAt)).toBe(hs.accessTokenTTL * 1000);
      expect(await home.record()).toMatchObject({ deviceId, expiresAt: after.expiresAt, issuedAt: after.issuedAt, auth: { clientId } });
      expect(await hs.whoami(after.accessToken)).toEqual({ status: 200, body: expect.objectContaining({ user_id: '@alice:localhost', device_id: deviceId }) });
      expect(await hs.devices('@alice:localhost')).toContain(deviceId);
      expect(await hs.introspect(before.refreshToken!)).toEqual({ active: false });
      expect(await hs.introspect(after.refreshToken!)).toMatchObject({ active: true, kind: 'RefreshToken', client_id: clientId });
      expect(await hs.grantCounts(clientId)).toMatchObject({ grants: { authorization_code: 1, refresh_token: 1 }, errors: {} });
    });

    test.concurrent('whoami refreshes an expired token (refreshed: true), and token refreshes one too; Synapse accepts both', async () => {
      const home = await newHome();
      // The token whoami gets is short-lived as well, so token has an expired one to refresh soon after.
      const { clientId, deviceId, secret: first } = await shortLivedSession(hs, home, SHORT_TTL);
      await waitForExpiry(hs, first);
      const who = await home.run(['whoami', '--json']);
      expect(who.code).toBe(0);
      expect(who.json()).toEqual({ profile: 'default', homeserver: hs.baseUrl, userId: '@alice:localhost', deviceId, isGuest: false, refreshed: true });
      const second = await home.secret();
      expect(second.accessToken).not.toBe(first.accessToken);
      expect((await hs.grantCounts(clientId)).grants.refresh_token).toBe(1);

      await hs.setTtls({ clientId, accessTokenTTL: hs.accessTokenTTL });
      await waitForExpiry(hs, second);
      const token = await home.run(['token', '--json']);
      expect(token.code).toBe(0);
      const third = await home.secret();
      expect(token.json()).toEqual({ accessToken: third.accessToken, expiresAt: third.expiresAt, expiresInMs: expect.any(Number) });
      expect(third.accessToken).not.toBe(second.accessToken);
      expect(await hs.whoami(third.accessToken)).toEqual({ status: 200, body: expect.objectContaining({ user_id: '@alice:localhost', device_id: deviceId }) });
      expect((await hs.grantCounts(clientId)).grants.refresh_token).toBe(2);
      // Plain `mxs token` prints that same, still fresh token and nothing else; whoami no longer refreshes.
      const plain = await home.run(['token']);
      expect(plain).toMatchObject({ code: 0, stdout: `${third.accessToken}\n` });
      expect((await home.run(['whoami', '--json'])).json()).toMatchObject({ deviceId, refreshed: false });
      expect((await hs.grantCounts(clientId)).grants.refresh_token).toBe(2);
    });

    test.concurrent('20 concurrent `mxs token` on an expired session: one refresh at the provider, no failure, one token that Synapse accepts', async () => {
      const home = await newHome();
      // The refreshed token lives 60 s: the 20 processes (on a loaded machine) must not also race the
      // refresh-ahead rule (min(60 s, half the lifetime)), which would make a second refresh legitimate.
      const { clientId, deviceId, secret: before } = await shortLivedSession(hs, home, 60);
      await waitForExpiry(hs, before);
      const runs = await Promise.all(Array.from({ length: 20 }, () => home.run(['token'])));
      expect(runs.map((r) => r.code)).toEqual(Array(20).fill(0));
      expect(runs.filter((r) => r.stderr !== '').map((r) => r.stderr)).toEqual([]);
      const tokens = new Set(runs.map((r) => r.stdout));
      const after = await home.secret();
      expect([...tokens]).toEqual([`${after.accessToken}\n`]);
      expect(after.accessToken).not.toBe(before.accessToken);
      expect(await hs.whoami(after.accessToken)).toEqual({ status: 200, body: expect.objectContaining({ user_id: '@alice:localhost', device_id: deviceId }) });
      const counts = await hs.grantCounts(clientId);
      expect(counts.attempts.refresh_token).toBe(1);
      expect(counts.grants.refresh_token).toBe(1);
      expect(counts.errors).toEqual({});
    });

    test.concurrent('logout revokes the refresh and access tokens with the session\'s client ID and forgets the session; logout --all is refused', async () => {
      const home = await newHome();
      const { clientId, deviceId, secret } = await shortLivedSession(hs, home);

      const all = await home.run(['logout', '--all', '--json']);
      expect(all.code).toBe(2);
      expect(all.json().error).toMatchObject({ code: 'usage', exitCode: 2 });
      expect(all.stderr).toContain(`${hs.issuer}/account`);
      expect(await hs.revokedCount(clientId)).toBe(0);
      expect(await home.secret()).toEqual(secret);

      const r = await home.run(['logout', '--json']);
      expect(r.code).toBe(0);
      expect(r.json()).toEqual({ profile: 'default', serverSide: true });
      expect(await hs.revokedCount(clientId)).toBe(2);
      expect(await hs.introspect(secret.accessToken)).toEqual({ active: false });
      expect(await hs.introspect(secret.refreshToken!)).toEqual({ active: false });
      expect(await home.stored()).toBe(false);
      // Synapse may serve its cached answer until the token's own expiry; after that, it refuses the token.
      await waitForExpiry(hs, secret);
      expect((await hs.whoami(secret.accessToken)).status).toBe(401);
      expect((await home.run(['status', '--json'])).json()).toMatchObject({ loggedIn: false });
      // The device stays in Synapse: deleting devices is the OAuth server's job (MAS does; oidc-provider does not).
      expect(await hs.devices('@alice:localhost')).toContain(deviceId);
    });

    test.concurrent('token-endpoint faults (500 three times, a hang past --timeout): exit 3, the stored session byte-identical; then mxs token works', async () => {
      const home = await newHome();
      const { clientId, deviceId, secret: before } = await shortLivedSession(hs, home);
      await waitForExpiry(hs, before);
      const stored = await snapshot(home.configDir);

      await hs.setFault({ route: 'token', clientId, grantType: 'refresh_token', status: 500, times: 3 });
      const failing = await home.run(['token', '--json']);
      expect(failing.code).toBe(3);
      expect(failing.json()).toEqual({ error: { code: 'server_error', message: expect.any(String), exitCode: 3 } });
      expect(failing.stdout).not.toContain(before.accessToken);
      expect(await snapshot(home.configDir)).toEqual(stored);

      await hs.setFault({ route: 'token', clientId, grantType: 'refresh_token', hang: true, hangMs: 6000, times: 1 });
      const hanging = await home.run(['token', '--timeout', '2s', '--json']);
      expect(hanging.code).toBe(3);
      expect(hanging.json()).toEqual({ error: { code: 'timeout', message: expect.any(String), exitCode: 3 } });
      expect(hanging.ms).toBeGreaterThanOrEqual(2000);
      expect(hanging.ms).toBeLessThan(5500);
      expect(await snapshot(home.configDir)).toEqual(stored);
      // None of it reached oidc-provider: the refresh token was never used.
      expect((await hs.grantCounts(clientId)).attempts.refresh_token).toBeUndefined();

      // Both faults are used up (times), so this one reaches the provider.
      const r = await home.run(['token']);
      expect(r.code).toBe(0);
      const after = await home.secret();
      expect(r.stdout).toBe(`${after.accessToken}\n`);
      expect(after.refreshToken).not.toBe(before.refreshToken);
      expect(await hs.whoami(after.accessToken)).toEqual({ status: 200, body: expect.objectContaining({ user_id: '@alice:localhost', device_id: deviceId }) });
      expect(await hs.grantCounts(clientId)).toMatchObject({ grants: { authorization_code: 1, refresh_token: 1 }, errors: {} });
    });
  });

  describe('--method auto', () => {
    // Without --password-stdin, auto picks OAuth on this server: see the first device-code case.
    test('--password-stdin on the OAuth Synapse (no password login there): exit 2, nothing stored', async () => {
      const home = await newHome();
      const r = await home.run(['login', hs.baseUrl, '-u', 'alice', '--password-stdin', '--json'], 'alice-pw-1\n');
      expect(r.code).toBe(2);
      expect(r.json()).toEqual({ error: { code: 'usage', message: expect.stringMatching(/OAuth 2\.0/), exitCode: 2 } });
      expect(r.stderr).toMatch(/without --password-stdin/);
      expect(await home.stored()).toBe(false);
      // Synapse itself has no /login at all once auth is delegated.
      const flows = await fetch(`${hs.baseUrl}/_matrix/client/v3/login`);
      expect({ status: flows.status, body: await flows.json() }).toMatchObject({ status: 404, body: { errcode: 'M_UNRECOGNIZED' } });
    });
  });
});

describeWithSynapse('--method auto on the legacy Synapse 1.163 (no OAuth)', () => {
  test('-u alice --password-stdin: a password session that Synapse knows; logout ends it', async () => {
    const url = testSynapseUrl();
    // The legacy server publishes no auth_metadata.
    expect((await fetch(`${url}/_matrix/client/v1/auth_metadata`)).status).toBe(404);
    const home = await newHome();
    const r = await home.run(['login', url, '-u', TEST_USERS.alice.user, '--password-stdin', '--json'], `${TEST_USERS.alice.password}\n`);
    expect({ code: r.code, stderr: r.code === 0 ? '' : r.stderr }).toEqual({ code: 0, stderr: '' });
    const out = r.json();
    expect(out).toEqual({
      profile: 'default',
      homeserver: url,
      userId: TEST_USERS.alice.userId,
      deviceId: expect.any(String),
      method: 'password',
      issuer: null,
      expiresAt: expect.any(String),
      expiresInMs: expect.any(Number),
      refreshable: true,
      storage: 'file',
    });
    expect(await home.record()).toMatchObject({ format: 2, method: 'password', auth: { type: 'matrix' }, homeserver: url, userId: TEST_USERS.alice.userId, deviceId: out.deviceId });
    const { accessToken } = await home.secret();
    const get = async (path: string) => {
      const res = await fetch(`${url}/_matrix/client/v3${path}`, { headers: { authorization: `Bearer ${accessToken}` } });
      return { status: res.status, body: (await res.json()) as Record<string, any> };
    };
    expect(await get('/account/whoami')).toEqual({ status: 200, body: expect.objectContaining({ user_id: TEST_USERS.alice.userId, device_id: out.deviceId }) });
    expect((await get('/devices')).body.devices.map((d: { device_id: string }) => d.device_id)).toContain(out.deviceId);

    // Leave no device of the shared user behind.
    const logout = await home.run(['logout', '--json']);
    expect(logout.code).toBe(0);
    expect(logout.json()).toEqual({ profile: 'default', serverSide: true });
    expect((await get('/account/whoami')).status).toBe(401);
    expect(await home.stored()).toBe(false);
  });
});
