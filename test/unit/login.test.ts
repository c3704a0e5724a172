// `login` (src/services/login.ts) with storage selection (src/services/storage.ts).
import { stat } from 'node:fs/promises';
import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import type { LoginInput } from '../../src/services/login.js';
import { loginService } from '../../src/services/login.js';
import { loginCommand } from '../../src/cli/commands/login.js';
import { runCommand } from '../support/run-command.js';
import { HS, T0, UnusableKeychain, makeDeps, rejectionOf, replyJson, replyJsonWith, replyVersions, type UnitWorld } from '../support/unit-deps.js';

const LOGIN = '/_matrix/client/v3/login';
const GRANT = { user_id: '@alice:example.org', device_id: 'NEWDEVICE', access_token: 'syt_login_access', refresh_token: 'syr_login_refresh', expires_in_ms: 300_000 };

let w: UnitWorld;
beforeEach(async () => {
  w = await makeDeps();
});
afterEach(async () => {
  await w.cleanup();
});

const input = (over: Partial<LoginInput> = {}): LoginInput => ({
  profile: 'default',
  server: HS,
  credentials: { type: 'm.login.password', user: 'alice', password: 'alice-pw-1' },
  refresh: true,
  insecure: false,
  storage: 'auto',
  ...over,
});

/** /versions and GET /login answered as a password-login server does. */
function serverBasics(origin = HS, flows = ['m.login.password', 'm.login.token']) {
  replyVersions(w.agent, origin);
  replyJson(w.agent, origin, 'GET', LOGIN, 200, { flows: flows.map((type) => ({ type })) });
}
const loginRequests = () => w.requests().filter((r) => r.method === 'POST' && r.path === LOGIN);

describe('a successful login', () => {
  it('stores the secret in the keychain and the record in the sessions file, expiry counted from when the request was sent', async () => {
    serverBasics();
    w.clock.set(T0);
    replyJsonWith(w.agent, HS, 'POST', LOGIN, () => {
      w.clock.advance(7_000); // the server (or the password hash) is slow: expiry must not count from here
      return { status: 200, body: GRANT };
    });
    const result = await loginService(input(), w.deps);

    const expiresAt = new Date(T0 + 300_000).toISOString();
    expect(result).toEqual({
      profile: 'default',
      homeserver: HS,
      userId: '@alice:example.org',
      deviceId: 'NEWDEVICE',
      expiresAt,
      expiresInMs: 300_000 - 7_000,
      method: 'password',
      issuer: null,
      refreshable: true,
      storage: 'keychain',
    });
    const { record, secret } = await w.stored();
    expect(secret).toEqual({ accessToken: 'syt_login_access', refreshToken: 'syr_login_refresh', issuedAt: new Date(T0).toISOString(), expiresAt });
    expect(record).toEqual({
      profile: 'default',
      homeserver: HS,
      userId: '@alice:example.org',
      deviceId: 'NEWDEVICE',
      issuedAt: new Date(T0).toISOString(),
      expiresAt,
      refreshable: true,
      storage: 'keychain',
      method: 'password',
      auth: { type: 'matrix' },
      clockSkewMs: null,
    });
  });

  it('keeps no token in any file when the keychain is used', async () => {
    serverBasics();
    replyJson(w.agent, HS, 'POST', LOGIN, 200, GRANT);
    await loginService(input(), w.deps);
    await expect(stat(w.paths.secret('default'))).rejects.toMatchObject({ code: 'ENOENT' });
    const { readFile } = await import('node:fs/promises');
    expect(await readFile(w.paths.session('default'), 'utf8')).not.toMatch(/syt_|syr_|alice-pw-1/);
  });

  it('asks for a refresh token, and sends the device id and name given', async () => {
    serverBasics();
    replyJson(w.agent, HS, 'POST', LOGIN, 200, GRANT);
    await loginService(input({ deviceId: 'MYDEVICE', deviceName: 'ci runner' }), w.deps);
    expect(loginRequests()[0]!.body).toEqual({
      type: 'm.login.password',
      identifier: { type: 'm.id.user', user: 'alice' },
      password: 'alice-pw-1',
      refresh_token: true,
      device_id: 'MYDEVICE',
      initial_device_display_name: 'ci runner',
    });
  });

  it('with --no-refresh does not ask for a refresh token and stores the session as not refreshable', async () => {
    serverBasics();
    const { refresh_token: _drop, ...noRefresh } = GRANT;
    replyJson(w.agent, HS, 'POST', LOGIN, 200, noRefresh);
    const result = await loginService(input({ refresh: false }), w.deps);
    expect(loginRequests()[0]!.body).not.toHaveProperty('refresh_token');
    expect(result.refreshable).toBe(false);
    expect((await w.stored()).secret!.refreshToken).toBeNull();
  });

  it('without expires_in_ms stores a token that does not expire', async () => {
    serverBasics();
    const { expires_in_ms: _drop, refresh_token: _r, ...forever } = GRANT;
    replyJson(w.agent, HS, 'POST', LOGIN, 200, forever);
    const result = await loginService(input(), w.deps);
    expect(result).toMatchObject({ expiresAt: null, expiresInMs: null, refreshable: false });
    expect((await w.stored()).record!.expiresAt).toBeNull();
  });

  it('with a login token sends m.login.token', async () => {
    serverBasics();
    replyJson(w.agent, HS, 'POST', LOGIN, 200, GRANT);
    await loginService(input({ credentials: { type: 'm.login.token', token: 'one-time-login-token' } }), w.deps);
    expect(loginRequests()[0]!.body).toMatchObject({ type: 'm.login.token', token: 'one-time-login-token' });
    expect(w.remembered).toContain('one-time-login-token');
  });

  it('resolves a server name through .well-known and stores the base URL', async () => {
    replyJson(w.agent, 'https://example.org', 'GET', '/.well-known/matrix/client', 200, { 'm.homeserver': { base_url: `${HS}/` } });
    serverBasics();
    replyJson(w.agent, HS, 'POST', LOGIN, 200, GRANT);
    const result = await loginService(input({ server: 'example.org' }), w.deps);
    expect(result.homeserver).toBe(HS);
    expect((await w.stored()).record!.homeserver).toBe(HS);
  });

  it('registers the new tokens for redaction, but not the password (it never reaches a message: issue 10 item 17)', async () => {
    serverBasics();
    replyJson(w.agent, HS, 'POST', LOGIN, 200, GRANT);
    await loginService(input(), w.deps);
    expect(w.remembered).toEqual(expect.arrayContaining(['syt_login_access', 'syr_login_refresh']));
    expect(w.remembered).not.toContain('alice-pw-1');
  });

  it('replaces an earlier session of the profile, deleting its secrets from the old store', async () => {
    await w.seed({ storage: 'keychain' });
    serverBasics();
    replyJson(w.agent, HS, 'POST', LOGIN, 200, GRANT);
    await loginService(input({ storage: 'file' }), w.deps);
    expect(await w.keychain.get('default')).toBeNull();
    const { record, secret } = await w.stored();
    expect(record!.storage).toBe('file');
    expect(secret!.accessToken).toBe('syt_login_access');
  });

  it('still logs in when GET /login fails (the flows check is advisory)', async () => {
    replyVersions(w.agent, HS);
    replyJson(w.agent, HS, 'GET', LOGIN, 400, { errcode: 'M_UNRECOGNIZED' });
    for (const path of ['/_matrix/client/v1/auth_metadata', '/_matrix/client/unstable/org.matrix.msc2965/auth_metadata']) {
      replyJson(w.agent, HS, 'GET', path, 404, { errcode: 'M_UNRECOGNIZED' });
    }
    replyJson(w.agent, HS, 'POST', LOGIN, 200, GRANT);
    await expect(loginService(input(), w.deps)).resolves.toMatchObject({ userId: '@alice:example.org' });
  });
});

describe('a failed login stores nothing', () => {
  it.each([
    ['403 M_FORBIDDEN (wrong password)', 403, { errcode: 'M_FORBIDDEN', error: 'Invalid username or password' }, 4, 'M_FORBIDDEN'],
    ['429 with a long wait', 429, { errcode: 'M_LIMIT_EXCEEDED', retry_after_ms: 300_000 }, 3, 'M_LIMIT_EXCEEDED'],
    ['400 M_BAD_JSON', 400, { errcode: 'M_BAD_JSON', error: 'nope' }, 3, 'M_BAD_JSON'],
    ['200 without access_token', 200, { user_id: '@alice:example.org', device_id: 'D' }, 3, 'bad_response'],
  ])('%s', async (_case, status, body, exitCode, code) => {
    serverBasics();
    replyJson(w.agent, HS, 'POST', LOGIN, status, body);
    const err = await rejectionOf(() => loginService(input(), w.deps));
    expect(err).toMatchObject({ exitCode, code });
    expect(await w.stored()).toEqual({ record: null, secret: null });
    expect(await w.deps.sessions.profiles()).toEqual([]);
  });

  it('a wrong password says so and names the user, never the password', async () => {
    serverBasics();
    replyJson(w.agent, HS, 'POST', LOGIN, 403, { errcode: 'M_FORBIDDEN', error: 'Invalid username or password' });
    const err = await rejectionOf(() => loginService(input(), w.deps));
    expect(err.message).toContain('wrong user name or password');
    expect(err.message).toContain('alice');
    expect(`${err.message} ${err.hint}`).not.toContain('alice-pw-1');
  });

  it('a server without password login is a usage error (exit 2) and no password is sent', async () => {
    serverBasics(HS, ['m.login.sso', 'm.login.token']);
    for (const path of ['/_matrix/client/v1/auth_metadata', '/_matrix/client/unstable/org.matrix.msc2965/auth_metadata']) {
      replyJson(w.agent, HS, 'GET', path, 404, { errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' });
    }
    const err = await rejectionOf(() => loginService(input(), w.deps));
    expect(err).toMatchObject({ code: 'usage', exitCode: 2 });
    expect(err.hint).toContain('--token-stdin');
    expect(loginRequests()).toEqual([]);
  });

  it('plain http:// to a remote host is refused (exit 2) before any request', async () => {
    await expect(loginService(input({ server: 'http://matrix.example.org' }), w.deps)).rejects.toMatchObject({ exitCode: 2 });
    expect(w.requests()).toEqual([]);
  });
});

describe('secret storage choice', () => {
  it("with 'auto' and an unusable keychain, falls back to a 0600 file and says so", async () => {
    await w.cleanup();
    w = await makeDeps({ keychain: new UnusableKeychain('no Secret Service is running') });
    serverBasics();
    replyJson(w.agent, HS, 'POST', LOGIN, 200, GRANT);
    const result = await loginService(input({ storage: 'auto' }), w.deps);
    expect(result.storage).toBe('file');
    expect(w.notices).toHaveLength(1);
    expect(w.notices[0]).toContain('keychain unavailable');
    expect(w.notices[0]).toContain('no Secret Service is running');
    // The keychain's reason (the error's detail), not its whole message re-edited.
    expect(w.notices[0]).toMatch(/^OS keychain unavailable: no Secret Service is running\. Secrets are stored in /);
    expect(w.notices[0]).toContain(w.paths.secret('default'));
    const { record, secret } = await w.stored();
    expect(record!.storage).toBe('file');
    expect(secret!.accessToken).toBe('syt_login_access');
    expect((await stat(w.paths.secret('default'))).mode & 0o777).toBe(0o600);
  });

  it("with 'keychain' and an unusable keychain, fails with exit 6 and stores nothing", async () => {
    await w.cleanup();
    w = await makeDeps({ keychain: new UnusableKeychain() });
    serverBasics();
    replyJson(w.agent, HS, 'POST', LOGIN, 200, GRANT);
    const err = await rejectionOf(() => loginService(input({ storage: 'keychain' }), w.deps));
    expect(err).toMatchObject({ code: 'storage', exitCode: 6 });
    expect(w.notices).toEqual([]);
    expect(await w.deps.sessions.read('default')).toBeNull();
    await expect(stat(w.paths.secret('default'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  // Logging in creates a device (and tokens) on the server; if they cannot be stored they are
  // lost, leaving a live session nobody can use or log out. Check the store before the password is sent.
  it("with 'keychain' and an unusable keychain, sends no password to the server", async () => {
    await w.cleanup();
    w = await makeDeps({ keychain: new UnusableKeychain() });
    serverBasics();
    replyJson(w.agent, HS, 'POST', LOGIN, 200, GRANT);
    await expect(loginService(input({ storage: 'keychain' }), w.deps)).rejects.toMatchObject({ exitCode: 6 });
    expect(loginRequests()).toEqual([]);
  });

  it("with 'file', uses the file store without touching the keychain", async () => {
    const keychain = new UnusableKeychain();
    await w.cleanup();
    w = await makeDeps({ keychain });
    serverBasics();
    replyJson(w.agent, HS, 'POST', LOGIN, 200, GRANT);
    await expect(loginService(input({ storage: 'file' }), w.deps)).resolves.toMatchObject({ storage: 'file' });
    expect(keychain.calls).toBe(0);
    expect(w.notices).toEqual([]);
  });
});

describe('mxs login --user', () => {
  it.each(['', '   ', '\t'])('a blank user name (%j) is a usage error before anything is read or sent', async (user) => {
    const r = await runCommand(loginCommand, ['http://127.0.0.1:9', '--user', user, '--password-stdin'], { env: { MXS_CONFIG_DIR: w.dir }, stdin: 'pw\n' });
    expect(r.exitCode).toBe(2);
    // Exit 2, not 3: nothing was sent to the (closed) port.
    expect(r.stderr.split('\n')[0]).toBe('Error: The user name is blank.');
  });
});
