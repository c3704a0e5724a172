// mxs against a real Synapse (the pinned release from test/support/synapse.ts): every case spawns bin/run.js
// (`npm run build` first) with a fresh MXS_CONFIG_DIR and file storage, and checks what mxs claims against what
// Synapse itself says, through direct `fetch`es with the tokens mxs stored or printed.
//
// The shared server (jest globalSetup, MXS_TEST_SYNAPSE_URL) gives refreshable access tokens 6 s of life and
// refresh tokens 1 h; expiry here is real (no faked clock): tests wait it out. Other test files use the same
// server in parallel workers, so every case that logs in registers its own user (shared-secret admin API) and
// nothing here can log alice or bob out. Only the wrong-password case uses TEST_USERS.alice: a failed login
// changes nothing (and the harness raised rc_login, so it does not rate-limit anybody either).
//
// Where Synapse departs from the Matrix client-server spec ("Refreshing access tokens", POST /refresh), the test
// names say so:
//  - reusing a refresh token after its successor was used: 403 M_FORBIDDEN "refresh token isn't valid anymore"
//    (the spec documents only 401 M_UNKNOWN_TOKEN for /refresh);
//  - an expired refresh token: 403 M_FORBIDDEN "The supplied refresh token has expired" (same);
//  - an expired access token: 401 M_UNKNOWN_TOKEN "Access token has expired" with soft_logout: true (as the spec
//    suggests), a logged-out one: soft_logout: false;
//  - /logout accepts an expired access token (the spec requires authentication and says nothing of expiry).
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { filesBelow, homesForSuite, runMxs, type Home, type RunResult } from '../support/cli.js';
import {
  describeWithSynapse,
  freshSynapseUser,
  startSynapse,
  TEST_USERS,
  testSynapseUrl,
  type SynapseHandle,
} from '../support/synapse.js';

interface User {
  user: string;
  password: string;
  userId: string;
}
interface Secret {
  accessToken: string;
  refreshToken: string | null;
  issuedAt: string;
  expiresAt: string | null;
}
interface MatrixAnswer {
  status: number;
  json: Record<string, unknown>;
}

const CLIENT = '/_matrix/client/v3';
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
/** Waits (for real) until `ms` past the given ISO time. */
const waitPast = async (iso: string, ms: number) => sleep(Math.max(0, Date.parse(iso) + ms - Date.now()));

const newHome = homesForSuite();

function mxsIn(home: Home) {
  return (args: string[], opts: { input?: string; env?: Record<string, string | undefined> } = {}): Promise<RunResult> =>
    runMxs(args, { input: opts.input, env: { ...home.env, ...opts.env } });
}

/** `mxs login URL -u USER --password-stdin --json [extra]`, asserted to succeed without leaking the password. */
async function login(home: Home, u: User, extra: string[] = [], baseUrl = testSynapseUrl()): Promise<RunResult> {
  const r = await mxsIn(home)(['login', baseUrl, '-u', u.user, '--password-stdin', '--json', ...extra], { input: `${u.password}\n` });
  if (r.code !== 0) throw new Error(`mxs login exited ${r.code}:\n${r.stderr}${r.stdout}`);
  expect(r.stdout + r.stderr).not.toContain(u.password);
  return r;
}

const secretFile = (home: Home, profile = 'default') => join(home.env.MXS_CONFIG_DIR!, 'secrets', `${profile}.json`);
const sessionFile = (home: Home, profile = 'default') => join(home.env.MXS_CONFIG_DIR!, 'sessions', `${profile}.json`);
const readSecret = async (home: Home, profile = 'default'): Promise<Secret> => JSON.parse(await readFile(secretFile(home, profile), 'utf8')) as Secret;

async function matrix(method: 'GET' | 'POST', url: string, opts: { token?: string; body?: unknown } = {}): Promise<MatrixAnswer> {
  const res = await fetch(url, {
    method,
    headers: { ...(opts.body !== undefined ? { 'content-type': 'application/json' } : {}), ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}) },
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
    signal: AbortSignal.timeout(10_000),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}
/** Synapse's own verdict on an access token. */
const directWhoami = (token: string, baseUrl = testSynapseUrl()) => matrix('GET', `${baseUrl}${CLIENT}/account/whoami`, { token });
/** A refresh sent straight to Synapse, bypassing mxs. */
const directRefresh = (refreshToken: string, baseUrl = testSynapseUrl()) => matrix('POST', `${baseUrl}${CLIENT}/refresh`, { body: { refresh_token: refreshToken } });

/** `--verbose` trace lines of refresh exchanges: `POST http://…/_matrix/client/v3/refresh → 200 (12 ms)`. */
const refreshTraces = (stderr: string): string[] => stderr.split('\n').filter((l) => /^POST \S+\/_matrix\/client\/\S*refresh → /.test(l));
const traces = (stderr: string, method: string, pathEnd: string): string[] =>
  stderr.split('\n').filter((l) => l.startsWith(`${method} `) && l.split(' ')[1]!.endsWith(pathEnd));

describeWithSynapse('mxs against a real Synapse', () => {
  const base = (): string => testSynapseUrl();
  const host = (): string => new URL(base()).host;

  describe('login', () => {
    test('password login asks for a refresh token: JSON shape, refreshable, expiresInMs ≈ 6000 (the server lifetime)', async () => {
      const home = await newHome();
      const u = await freshSynapseUser('login');
      const before = Date.now();
      const r = await login(home, u, ['--verbose']);
      const out = r.json();
      expect(out).toEqual({
        profile: 'default',
        homeserver: base(),
        userId: u.userId,
        deviceId: expect.stringMatching(/^[A-Z]{10}$/),
        expiresAt: expect.any(String),
        expiresInMs: expect.any(Number),
        refreshable: true,
        method: 'password',
        issuer: null,
        storage: 'file',
      });
      // Synapse answers expires_in_ms 6000 minus its own processing time; mxs counts from when it sent /login and
      // reports what is left when it is done (storing takes a moment: the lower bound allows for a slow machine).
      expect(out.expiresInMs).toBeGreaterThan(3000);
      expect(out.expiresInMs).toBeLessThanOrEqual(6000);
      expect(Date.parse(out.expiresAt)).toBeGreaterThanOrEqual(before + 5000);
      expect(Date.parse(out.expiresAt)).toBeLessThanOrEqual(Date.now() + 6000);
      expect(traces(r.stderr, 'POST', '/_matrix/client/v3/login')).toEqual([expect.stringMatching(/ → 200 \(\d+ ms\)$/)]);

      const secret = await readSecret(home);
      expect(secret.accessToken).toMatch(/^syt_/);
      expect(secret.refreshToken).toMatch(/^syr_/);
      expect(secret.expiresAt).toBe(out.expiresAt);
      // The stored lifetime is exactly Synapse's expires_in_ms, counted from when /login was sent.
      expect(Date.parse(secret.expiresAt!) - Date.parse(secret.issuedAt)).toBeGreaterThan(5000);
      expect(Date.parse(secret.expiresAt!) - Date.parse(secret.issuedAt)).toBeLessThanOrEqual(6000);
      expect(Date.parse(secret.issuedAt)).toBeGreaterThanOrEqual(before);
      expect((await stat(secretFile(home))).mode & 0o777).toBe(0o600);
      // Tokens live in the 0600 secret file only: not in the sessions file, not on stdout/stderr (--verbose included).
      const leaks = (await filesBelow(home.dir)).filter(
        (f) => f.path !== secretFile(home) && (f.content.includes(secret.accessToken) || f.content.includes(secret.refreshToken!)),
      );
      expect(leaks).toEqual([]);
      expect(r.stdout + r.stderr).not.toContain(secret.accessToken);
      expect(r.stdout + r.stderr).not.toContain(secret.refreshToken);
      // ...and Synapse agrees that the stored access token is this user's on that device.
      expect(await directWhoami(secret.accessToken)).toEqual({ status: 200, json: { user_id: u.userId, device_id: out.deviceId, is_guest: false } });
    });

    test('--no-refresh: Synapse sends neither refresh_token nor expires_in_ms, so the token does not expire', async () => {
      const home = await newHome();
      const u = await freshSynapseUser('norefresh');
      const r = await login(home, u, ['--no-refresh']);
      expect(r.json()).toMatchObject({ userId: u.userId, refreshable: false, expiresAt: null, expiresInMs: null });
      const secret = await readSecret(home);
      expect(secret.refreshToken).toBeNull();
      const status = await mxsIn(home)(['status']);
      expect(status.code).toBe(0);
      expect(status.stdout).toMatch(/Token: +does not expire/);
      expect(status.stdout).toMatch(/Refresh: +not needed \(the token does not expire\)/);
    });

    test('a wrong password ends with exit 4, M_FORBIDDEN under --json (Synapse: 403, as the spec says), and stores nothing', async () => {
      const home = await newHome();
      const mxs = mxsIn(home);
      const { alice } = TEST_USERS;
      const json = await mxs(['login', base(), '-u', alice.user, '--password-stdin', '--json'], { input: 'not-the-password\n' });
      expect(json.code).toBe(4);
      expect(json.json()).toEqual({ error: { code: 'M_FORBIDDEN', message: expect.stringMatching(/wrong user name or password/), exitCode: 4 } });
      const text = await mxs(['login', base(), '-u', alice.user, '--password-stdin'], { input: 'not-the-password\n' });
      expect(text.code).toBe(4);
      expect(text.stdout).toBe('');
      const lines = text.stderr.trim().split('\n');
      expect(lines).toHaveLength(2); // what happened, what to do next
      expect(lines[0]).toMatch(new RegExp(`Login refused for alice on ${host()}.*M_FORBIDDEN`));
      expect(json.stdout + json.stderr + text.stderr).not.toContain('not-the-password');
      expect((await mxs(['status'])).code).toBe(4);
      expect(await filesBelow(join(home.dir, 'config', 'secrets'))).toEqual([]);
    });
  });

  describe('with a fresh session (access token 6 s)', () => {
    test('status shows the countdown from local state, as text and as JSON', async () => {
      const home = await newHome();
      const u = await freshSynapseUser('status');
      const loggedIn = (await login(home, u)).json();
      const mxs = mxsIn(home);
      // Both at once, right after login: the token lives 6 s, and a loaded machine takes a while per spawn.
      const [text, json] = await Promise.all([mxs(['status']), mxs(['status', '--json'])]);
      expect(text.code).toBe(0);
      expect(text.stdout).toContain(`User:      ${u.userId} (device ${loggedIn.deviceId})`);
      expect(text.stdout).toContain(`Server:    ${base()}`);
      expect(text.stdout).toMatch(/Token: +expires in [1-6]s \(\d\d:\d\d:\d\d UTC\)/);
      expect(text.stdout).toMatch(/Refresh: +on use: mxs token, whoami and refresh renew it \(refresh token stored\)/);
      expect(json.code).toBe(0);
      const s = json.json();
      expect(s).toEqual({
        profile: 'default',
        loggedIn: true,
        homeserver: base(),
        userId: u.userId,
        deviceId: loggedIn.deviceId,
        issuedAt: expect.any(String),
        expiresAt: loggedIn.expiresAt,
        expiresInMs: expect.any(Number),
        expired: false,
        refreshable: true,
        method: 'password',
        issuer: null,
        scopes: null,
        storage: 'file',
      });
      expect(s.expiresInMs).toBeGreaterThan(0);
      expect(s.expiresInMs).toBeLessThan(6000);
      // issuedAt = when /login was sent; the lifetime is Synapse's expires_in_ms (6000 minus its processing time).
      expect(Date.parse(s.expiresAt) - Date.parse(s.issuedAt)).toBeGreaterThan(5000);
      expect(Date.parse(s.expiresAt) - Date.parse(s.issuedAt)).toBeLessThanOrEqual(6000);
    });

    test('token prints only the access token, and Synapse accepts it on /account/whoami', async () => {
      const home = await newHome();
      const u = await freshSynapseUser('token');
      await login(home, u);
      const r = await mxsIn(home)(['token']);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/^syt_\S+\n$/);
      const token = r.stdout.trim();
      expect(token).toBe((await readSecret(home)).accessToken);
      const who = await directWhoami(token);
      expect(who.status).toBe(200);
      expect(who.json.user_id).toBe(u.userId);
      const json = await mxsIn(home)(['token', '--json']);
      expect(json.json()).toEqual({ accessToken: (await readSecret(home)).accessToken, expiresAt: expect.any(String), expiresInMs: expect.any(Number) });
    });

    test('whoami --json reports user and device from Synapse without refreshing a valid token', async () => {
      const home = await newHome();
      const u = await freshSynapseUser('whoami');
      const loggedIn = (await login(home, u)).json();
      const r = await mxsIn(home)(['whoami', '--json', '--verbose']);
      expect(r.code).toBe(0);
      expect(r.json()).toEqual({ profile: 'default', homeserver: base(), userId: u.userId, deviceId: loggedIn.deviceId, isGuest: false, refreshed: false });
      expect(refreshTraces(r.stderr)).toEqual([]);
      expect(traces(r.stderr, 'GET', '/_matrix/client/v3/account/whoami')).toEqual([expect.stringMatching(/ → 200 /)]);
      const text = await mxsIn(home)(['whoami']);
      expect(text.code).toBe(0);
      expect(text.stdout).toMatch(new RegExp(`^${u.userId} \\(device ${loggedIn.deviceId}\\) on ${base()}( \\(token refreshed first\\))?\\n$`));
    });

    test('whoami --token-stdin SERVER checks a token with no stored session and stores nothing', async () => {
      const owner = await newHome();
      const u = await freshSynapseUser('tokenstdin');
      const loggedIn = (await login(owner, u)).json();
      const token = (await readSecret(owner)).accessToken;
      const other = await newHome();
      const r = await mxsIn(other)(['whoami', base(), '--token-stdin', '--json'], { input: `${token}\n` });
      expect(r.code).toBe(0);
      expect(r.json()).toEqual({ profile: null, homeserver: base(), userId: u.userId, deviceId: loggedIn.deviceId, isGuest: false, refreshed: false });
      expect(r.stdout + r.stderr).not.toContain(token);
      expect(await filesBelow(other.dir)).toEqual([]);
      // A token Synapse does not know: 401 M_UNKNOWN_TOKEN, exit 4, still nothing stored.
      const bad = await mxsIn(other)(['whoami', base(), '--token-stdin', '--json'], { input: 'syt_bm90aGluZw_notARealToken_000000\n' });
      expect(bad.code).toBe(4);
      expect(bad.json().error).toMatchObject({ code: 'M_UNKNOWN_TOKEN', exitCode: 4 });
      expect(await filesBelow(other.dir)).toEqual([]);
    });

    test('status --all lists every stored profile (two users), as text and as JSON', async () => {
      const home = await newHome();
      const [a, b] = await Promise.all([freshSynapseUser('all-a'), freshSynapseUser('all-b')]);
      await login(home, a);
      await login(home, b, ['--profile', 'work']);
      const json = await mxsIn(home)(['status', '--all', '--json']);
      expect(json.code).toBe(0);
      const profiles = json.json().profiles as { profile: string; userId: string; loggedIn: boolean; refreshable: boolean }[];
      expect(profiles.map((p) => [p.profile, p.userId, p.loggedIn, p.refreshable])).toEqual([
        ['default', a.userId, true, true],
        ['work', b.userId, true, true],
      ]);
      const text = await mxsIn(home)(['status', '--all']);
      expect(text.code).toBe(0);
      // The default profile is named default: its name says so, no "(default)" mark (mxs switch moves the mark).
      expect(text.stdout).toMatch(new RegExp(`Profile: +default\\nUser: +${a.userId}[\\s\\S]*\\n\\nProfile: +work\\nUser: +${b.userId}`));
    });
  });

  // One real wait for several sessions: each is logged in (and prepared) in beforeAll, then the 6 s lifetime runs out.
  describe('after the access token has expired for real (one shared wait, no faked clock)', () => {
    interface Prepared {
      home: Home;
      user: User;
      loggedIn: { deviceId: string; expiresAt: string };
      first: Secret;
    }
    let natural: Prepared;
    let crowd: Prepared;
    let stale: Prepared;

    async function prepare(prefix: string): Promise<Prepared> {
      const home = await newHome();
      const user = await freshSynapseUser(prefix);
      const loggedIn = (await login(home, user)).json() as Prepared['loggedIn'];
      return { home, user, loggedIn, first: await readSecret(home) };
    }

    beforeAll(async () => {
      [natural, crowd, stale] = await Promise.all([prepare('expiry'), prepare('crowd'), prepare('stale')]);
      // `stale` believes its token lives an hour: only Synapse knows it has expired (as after a clock jump or a
      // server-side shorter lifetime). Sessions file and secret are edited alike, so mxs sees a consistent state.
      const hourLater = new Date(Date.now() + 3_600_000).toISOString();
      const record = JSON.parse(await readFile(sessionFile(stale.home), 'utf8')) as Record<string, unknown>;
      await writeFile(sessionFile(stale.home), JSON.stringify({ ...record, expiresAt: hourLater }));
      await writeFile(secretFile(stale.home), JSON.stringify({ ...stale.first, expiresAt: hourLater }), { mode: 0o600 });
      const latest = Math.max(...[natural, crowd, stale].map((p) => Date.parse(p.loggedIn.expiresAt)));
      await waitPast(new Date(latest).toISOString(), 400);
    }, 60_000);

    test('status exits 5, Synapse answers the old token 401 M_UNKNOWN_TOKEN soft_logout: true, whoami refreshes first, token prints a working token', async () => {
      const { home, user: u, loggedIn, first } = natural;
      const mxs = mxsIn(home);

      const status = await mxs(['status']);
      expect(status.code).toBe(5);
      expect(status.stdout).toMatch(/Token: +expired \d+(ms|s) ago \(\d\d:\d\d:\d\d UTC\)/);
      expect(status.stderr).toMatch(/Run: mxs refresh/);
      const statusJson = await mxs(['status', '--json']);
      expect(statusJson.code).toBe(5);
      expect(statusJson.json()).toMatchObject({ expired: true, refreshable: true });
      expect(statusJson.json().expiresInMs).toBeLessThanOrEqual(0);

      // What Synapse says about the expired token: 401 M_UNKNOWN_TOKEN with soft_logout: true (refresh, don't log out).
      expect(await directWhoami(first.accessToken)).toEqual({
        status: 401,
        json: { errcode: 'M_UNKNOWN_TOKEN', error: 'Access token has expired', soft_logout: true },
      });

      const who = await mxs(['whoami', '--json', '--verbose']);
      expect(who.code).toBe(0);
      expect(who.json()).toEqual({ profile: 'default', homeserver: base(), userId: u.userId, deviceId: loggedIn.deviceId, isGuest: false, refreshed: true });
      // Refreshed before use (local expiry is computed from when /login was sent, so it is never later than
      // Synapse's): one refresh, one whoami, no 401 round trip.
      expect(refreshTraces(who.stderr)).toEqual([expect.stringMatching(/\/_matrix\/client\/v3\/refresh → 200 /)]);
      expect(traces(who.stderr, 'GET', '/account/whoami')).toEqual([expect.stringMatching(/ → 200 /)]);
      const second = await readSecret(home);
      expect(second.accessToken).not.toBe(first.accessToken);
      expect(second.refreshToken).not.toBe(first.refreshToken);
      expect(who.stdout + who.stderr).not.toContain(second.accessToken);

      // `token` refreshes again only if less than half the lifetime (3 s) is left by now (a slow machine).
      const token = await mxs(['token', '--verbose']);
      expect(token.code).toBe(0);
      expect(token.stdout).toMatch(/^syt_\S+\n$/);
      expect(token.stdout.trim()).toBe((await readSecret(home)).accessToken);
      if (refreshTraces(token.stderr).length === 0) expect(token.stdout.trim()).toBe(second.accessToken);
      expect((await directWhoami(token.stdout.trim())).status).toBe(200);
      expect((await mxs(['status'])).code).toBe(0);
    });

    test('six processes at once (5 whoami, 1 token) refresh once between them, and every token they end with works', async () => {
      // Synapse lets one refresh token be exchanged twice until the new access token is used, and then revokes the
      // earlier pair: without mxs's cross-process lock some of these would end with a dead token.
      const mxs = mxsIn(crowd.home);
      const runs = await Promise.all([
        ...Array.from({ length: 5 }, () => mxs(['whoami', '--json', '--verbose'])),
        // --min-valid 1s: `token` must not refresh a second time merely because this machine is slow to spawn six.
        mxs(['token', '--verbose', '--min-valid', '1s']),
      ]);
      expect(runs.map((r) => r.code)).toEqual([0, 0, 0, 0, 0, 0]);
      const refreshes = runs.flatMap((r) => refreshTraces(r.stderr));
      expect(refreshes).toEqual([expect.stringMatching(/ → 200 /)]);
      for (const r of runs.slice(0, 5)) {
        expect(r.json()).toMatchObject({ userId: crowd.user.userId, deviceId: crowd.loggedIn.deviceId });
        expect(traces(r.stderr, 'GET', '/account/whoami')).toEqual([expect.stringMatching(/ → 200 /)]);
      }
      const final = await readSecret(crowd.home);
      expect(runs[5]!.stdout.trim()).toBe(final.accessToken);
      expect((await directWhoami(final.accessToken)).status).toBe(200);
      expect(await directRefresh(crowd.first.refreshToken!)).toMatchObject({ status: 403 }); // the one refresh really rotated
    });

    test('a token Synapse expired while mxs still thinks it valid: 401 M_UNKNOWN_TOKEN (soft_logout) → one refresh, one retry', async () => {
      const r = await mxsIn(stale.home)(['whoami', '--json', '--verbose']);
      expect(r.code).toBe(0);
      expect(r.json()).toMatchObject({ userId: stale.user.userId, refreshed: true });
      const exchanges = r.stderr.split('\n').filter((l) => /^(GET|POST) .*\/_matrix\/client\/v3\/(account\/whoami|refresh) → /.test(l));
      expect(exchanges).toEqual([
        expect.stringMatching(/^GET \S+\/account\/whoami → 401 /),
        expect.stringMatching(/^POST \S+\/refresh → 200 /),
        expect.stringMatching(/^GET \S+\/account\/whoami → 200 /),
      ]);
      const now = await readSecret(stale.home);
      expect(now.accessToken).not.toBe(stale.first.accessToken);
      expect(Date.parse(now.expiresAt!) - Date.now()).toBeLessThanOrEqual(6000); // the real lifetime again
      expect((await directWhoami(now.accessToken)).status).toBe(200);
    });
  });

  describe('refresh', () => {
    test('rotation: one POST /refresh per refresh, a new refresh token each time; Synapse then refuses the old one with 403 M_FORBIDDEN (spec: 401 M_UNKNOWN_TOKEN)', async () => {
      const home = await newHome();
      const mxs = mxsIn(home);
      const u = await freshSynapseUser('rotate');
      await login(home, u);
      const s1 = await readSecret(home);

      const r1 = await mxs(['refresh', '--json', '--verbose']);
      expect(r1.code).toBe(0);
      expect(r1.json()).toEqual({ profile: 'default', expiresAt: expect.any(String), expiresInMs: expect.any(Number), refreshTokenRotated: true });
      expect(r1.json().expiresInMs).toBeGreaterThan(4000);
      expect(refreshTraces(r1.stderr)).toEqual([expect.stringMatching(/^POST http:\/\/127\.0\.0\.1:\d+\/_matrix\/client\/v3\/refresh → 200 \(\d+ ms\)$/)]);
      const s2 = await readSecret(home);
      expect(s2.refreshToken).toMatch(/^syr_/);
      expect(s2.refreshToken).not.toBe(s1.refreshToken);
      expect(s2.accessToken).not.toBe(s1.accessToken);
      for (const t of [s1.accessToken, s1.refreshToken!, s2.accessToken, s2.refreshToken!]) expect(r1.stdout + r1.stderr).not.toContain(t);

      // Use the new access token (through mxs: no refresh needed, it is fresh).
      const who = await mxs(['whoami', '--json', '--verbose']);
      expect(who.code).toBe(0);
      expect(who.json().refreshed).toBe(false);
      expect(refreshTraces(who.stderr)).toEqual([]);

      // Synapse: once the new access token has been used, the old refresh token is dead. It answers
      // 403 {"errcode":"M_FORBIDDEN","error":"refresh token isn't valid anymore"} -- not the spec's 401 M_UNKNOWN_TOKEN.
      // (Before that first use it would still have been accepted, per the spec's "remains valid until the new
      // access token or refresh token is used" -- and would have revoked the new pair.)
      expect(await directRefresh(s1.refreshToken!)).toEqual({
        status: 403,
        json: { errcode: 'M_FORBIDDEN', error: "refresh token isn't valid anymore" },
      });

      // mxs refreshes again with the current refresh token: had it sent the old one, Synapse would have said 403.
      const r2 = await mxs(['refresh', '--verbose']);
      expect(r2.code).toBe(0);
      expect(r2.stderr).toMatch(/Refreshed profile default: token expires in \d+s .*\(refresh token rotated\)/);
      expect(refreshTraces(r2.stderr)).toEqual([expect.stringMatching(/ → 200 /)]);
      const s3 = await readSecret(home);
      expect(new Set([s1.refreshToken, s2.refreshToken, s3.refreshToken]).size).toBe(3);
      const token = await mxs(['token']);
      expect(token.code).toBe(0);
      expect(token.stdout.trim()).toBe((await readSecret(home)).accessToken); // s3's, unless under 3 s were left by now
      expect((await directWhoami(token.stdout.trim())).status).toBe(200);
      // The refresh token mxs just retired is refused too, the moment the new access token has been used.
      expect((await directRefresh(s2.refreshToken!)).status).toBe(403);
    });

    test('refresh --lifetime: Synapse ignores com.famedly.refresh_token_lifetime_ms and refreshes as usual', async () => {
      const home = await newHome();
      const u = await freshSynapseUser('lifetime');
      await login(home, u);
      const r = await mxsIn(home)(['refresh', '--lifetime', '1h', '--json']);
      expect(r.code).toBe(0);
      expect(r.json()).toMatchObject({ refreshTokenRotated: true });
      expect((await directWhoami((await readSecret(home)).accessToken)).status).toBe(200);
    });
  });

  describe('logout', () => {
    test('logout ends the session on Synapse (the token then gets 401 M_UNKNOWN_TOKEN, soft_logout false) and forgets it here', async () => {
      const home = await newHome();
      const mxs = mxsIn(home);
      const u = await freshSynapseUser('logout');
      await login(home, u);
      const s = await readSecret(home);
      expect((await directWhoami(s.accessToken)).status).toBe(200);
      const r = await mxs(['logout', '--json']);
      expect(r.code).toBe(0);
      expect(r.json()).toEqual({ profile: 'default', serverSide: true });
      expect(await directWhoami(s.accessToken)).toEqual({
        status: 401,
        json: { errcode: 'M_UNKNOWN_TOKEN', error: 'Invalid access token passed.', soft_logout: false },
      });
      // Deleting the device also deleted its refresh token: Synapse treats it as unknown (401, no soft_logout field).
      expect(await directRefresh(s.refreshToken!)).toEqual({ status: 401, json: { errcode: 'M_UNKNOWN_TOKEN', error: expect.any(String) } });
      await expect(stat(sessionFile(home))).rejects.toThrow();
      await expect(stat(secretFile(home))).rejects.toThrow();
      expect((await mxs(['status'])).code).toBe(4);
    });

    test('logout --all with two profiles of the same user kills both tokens; the other profile then finds its session gone', async () => {
      const home = await newHome();
      const mxs = mxsIn(home);
      const u = await freshSynapseUser('logoutall'); // own user: /logout/all must not touch anybody else's sessions
      const one = (await login(home, u)).json();
      const two = (await login(home, u, ['--profile', 'second'])).json();
      expect(two.deviceId).not.toBe(one.deviceId);
      const [a, b] = [await readSecret(home), await readSecret(home, 'second')];
      expect((await directWhoami(a.accessToken)).status).toBe(200);
      expect((await directWhoami(b.accessToken)).status).toBe(200);

      const r = await mxs(['logout', '--all', '--json', '--verbose']);
      expect(r.code).toBe(0);
      expect(r.json()).toEqual({ profile: 'default', serverSide: true });
      expect(traces(r.stderr, 'POST', '/_matrix/client/v3/logout/all')).toEqual([expect.stringMatching(/ → 200 /)]);
      expect((await directWhoami(a.accessToken)).status).toBe(401);
      expect((await directWhoami(b.accessToken)).json).toMatchObject({ errcode: 'M_UNKNOWN_TOKEN', soft_logout: false });
      expect((await directRefresh(b.refreshToken!)).status).toBe(401);

      // The second profile is still stored here, but Synapse no longer knows it: exit 4 with a login hint...
      const who = await mxs(['whoami', '--profile', 'second']);
      expect(who.code).toBe(4);
      expect(who.stderr).toContain(`mxs login ${base()} --profile second`);
      // ...and logging it out just forgets it (nothing left to end on the server).
      const out = await mxs(['logout', '--profile', 'second', '--json']);
      expect(out.code).toBe(0);
      expect(out.json()).toEqual({ profile: 'second', serverSide: false });
      expect(out.stderr).toMatch(/no longer recognised the session/);
      expect((await mxs(["status", "--all", "--json"])).json()).toEqual({ defaultProfile: "default", profiles: [] });
    });
  });

  // A second Synapse with very short lifetimes: access tokens 2 s, refresh tokens 3 s.
  describe('short-lived refresh tokens (second Synapse: access 2 s, refresh 3 s)', () => {
    let short: SynapseHandle | undefined;
    beforeAll(async () => {
      short = await startSynapse({ accessTokenLifetime: '2s', refreshTokenLifetime: '3s' });
    }, 90_000);
    afterAll(async () => {
      await short?.stop();
    });
    const shortUser = (prefix: string) => freshSynapseUser(prefix, short!.baseUrl, short!.registrationSharedSecret);

    test('an expired refresh token ends in exit 4 with a "log in again" hint (Synapse: 403 M_FORBIDDEN "The supplied refresh token has expired"; spec: 401 M_UNKNOWN_TOKEN)', async () => {
      const home = await newHome();
      const mxs = mxsIn(home);
      const u = await shortUser('rtexpiry');
      const before = Date.now();
      const loggedIn = (await login(home, u, [], short!.baseUrl)).json();
      expect(loggedIn.expiresInMs).toBeLessThanOrEqual(2000);
      const stored = await readFile(secretFile(home), 'utf8');
      await sleep(Math.max(0, before + 3000 + 600 - Date.now()));

      // status works from local state only: it cannot know the refresh token's lifetime (Synapse never tells),
      // so it still says "expired, refreshable" (exit 5).
      expect((await mxs(['status'])).code).toBe(5);

      const r = await mxs(['refresh', '--verbose']);
      expect(r.code).toBe(4);
      expect(refreshTraces(r.stderr)).toEqual([expect.stringMatching(/\/v3\/refresh → 403 /)]);
      const errLines = r.stderr.split('\n').filter((l) => !/^(GET|POST) /.test(l) && l.trim() !== '');
      expect(errLines[0]).toMatch(/^Error: The session of profile "default" has ended: .*The supplied refresh token has expired.*M_FORBIDDEN/);
      expect(errLines[1]).toBe(`Run: mxs login ${short!.baseUrl}`);
      expect(r.stderr).toContain('mxs login');

      const json = await mxs(['refresh', '--json']);
      expect(json.code).toBe(4);
      expect(json.json()).toEqual({ error: { code: 'M_FORBIDDEN', message: expect.stringMatching(/has ended/), exitCode: 4 } });
      // Commands that need a token fail the same way, and nothing stored is touched (the user decides).
      const who = await mxs(['whoami']);
      expect(who.code).toBe(4);
      expect(who.stderr).toContain(`mxs login ${short!.baseUrl}`);
      expect(await readFile(secretFile(home), 'utf8')).toBe(stored);
    });

    test('logout with an expired access token succeeds without refreshing (Synapse accepts an expired token on /logout)', async () => {
      const home = await newHome();
      const u = await shortUser('expiredlogout');
      const loggedIn = (await login(home, u, [], short!.baseUrl)).json();
      const s = await readSecret(home);
      await waitPast(loggedIn.expiresAt, 300);
      expect((await directWhoami(s.accessToken, short!.baseUrl)).json).toMatchObject({ errcode: 'M_UNKNOWN_TOKEN', soft_logout: true });
      const r = await mxsIn(home)(['logout', '--json', '--verbose']);
      expect(r.code).toBe(0);
      expect(r.json()).toEqual({ profile: 'default', serverSide: true });
      expect(refreshTraces(r.stderr)).toEqual([]);
      expect(traces(r.stderr, 'POST', '/_matrix/client/v3/logout')).toEqual([expect.stringMatching(/ → 200 /)]);
      // The device is gone: the token is no longer "expired" but unknown.
      expect((await directWhoami(s.accessToken, short!.baseUrl)).json).toMatchObject({ errcode: 'M_UNKNOWN_TOKEN', soft_logout: false });
    });
  });
});
