// `logout` (src/services/logout.ts): server first, then forget; nothing forgotten when the server is unsure.
import { describe, expect, it } from '@jest/globals';
import { logoutService } from '../../src/services/logout.js';
import { HS, T0, rejectionOf, replyJson, type UnitWorld, hintText, worldPerTest } from '../support/unit-deps.js';

const LOGOUT = '/_matrix/client/v3/logout';
const LOGOUT_ALL = '/_matrix/client/v3/logout/all';
const REFRESH = '/_matrix/client/v3/refresh';
const MIN = 60_000;

let w: UnitWorld;
worldPerTest((made) => (w = made));

const forgotten = async () => {
  const { record, secret } = await w.stored();
  return record === null && secret === null && (await w.keychain.get('default')) === null;
};

describe('logoutService', () => {
  it.each([
    ['logout', false, LOGOUT],
    ['logout --all', true, LOGOUT_ALL],
  ])('%s ends the session on the server with the stored token, then forgets it here', async (_case, all, path) => {
    await w.seed();
    replyJson(w.agent, HS, 'POST', path, 200, {});
    await expect(logoutService('default', { local: false, all }, w.deps)).resolves.toEqual({ profile: 'default', serverSide: true });
    const [req] = w.requests();
    expect(req).toMatchObject({ method: 'POST', path });
    expect(req!.headers.authorization).toBe('Bearer syt_old_access');
    expect(await forgotten()).toBe(true);
  });

  it('does not refresh an expired token first (Synapse accepts it on /logout)', async () => {
    await w.seed({ issuedAt: T0, lifetimeMs: 5 * MIN });
    w.clock.set(T0 + 60 * MIN);
    replyJson(w.agent, HS, 'POST', LOGOUT, 200, {});
    await logoutService('default', { local: false, all: false }, w.deps);
    expect(w.requests().map((r) => r.path)).toEqual([LOGOUT]);
  });

  it('--local forgets the session without any request', async () => {
    await w.seed();
    await expect(logoutService('default', { local: true, all: false }, w.deps)).resolves.toEqual({ profile: 'default', serverSide: false });
    expect(w.requests()).toEqual([]);
    expect(await forgotten()).toBe(true);
  });

  it('forgets a file-stored session and its 0600 file', async () => {
    await w.seed({ storage: 'file' });
    replyJson(w.agent, HS, 'POST', LOGOUT, 200, {});
    await logoutService('default', { local: false, all: false }, w.deps);
    const { stat } = await import('node:fs/promises');
    await expect(stat(w.paths.secret('default'))).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await w.deps.sessions.read('default')).toBeNull();
  });

  it.each([
    ['a persistent 502', () => replyJson(w.agent, HS, 'POST', LOGOUT, 502, { errcode: 'M_UNKNOWN', error: 'bad gateway' }).persist()],
    ['a network error', () => w.agent.get(HS).intercept({ method: 'POST', path: LOGOUT }).replyWithError(new Error('ECONNRESET')).persist()],
    ['an HTML error page', () => w.agent.get(HS).intercept({ method: 'POST', path: LOGOUT }).reply(503, '<html>maintenance</html>', { headers: { 'content-type': 'text/html' } }).persist()],
    ['a 429 with a long wait', () => replyJson(w.agent, HS, 'POST', LOGOUT, 429, { errcode: 'M_LIMIT_EXCEEDED', retry_after_ms: 60_000 })],
  ])('on %s fails with exit 3 and forgets nothing', async (_case, setup) => {
    const before = await w.seed();
    setup();
    const err = await rejectionOf(() => logoutService('default', { local: false, all: false }, w.deps));
    expect(err.exitCode).toBe(3);
    expect(hintText(err)).toContain('mxs logout --local');
    expect(await w.stored()).toEqual({ record: before.record, secret: before.secret });
  });

  it('names the profile in the --local hint for a non-default profile', async () => {
    await w.seed({ profile: 'work' });
    replyJson(w.agent, HS, 'POST', LOGOUT, 500, { errcode: 'M_UNKNOWN' }).persist();
    const err = await rejectionOf(() => logoutService('work', { local: false, all: false }, w.deps));
    expect(hintText(err)).toContain('mxs logout --local --profile work');
  });

  it('forgets the session, with a notice, when the server no longer knows the token (401 M_UNKNOWN_TOKEN, no refresh token)', async () => {
    await w.seed({ refreshToken: null });
    replyJson(w.agent, HS, 'POST', LOGOUT, 401, { errcode: 'M_UNKNOWN_TOKEN', error: 'Invalid access token passed.', soft_logout: false });
    await expect(logoutService('default', { local: false, all: false }, w.deps)).resolves.toEqual({ profile: 'default', serverSide: false });
    expect(w.notices.join('\n')).toContain('M_UNKNOWN_TOKEN');
    expect(await forgotten()).toBe(true);
  });

  it('on 401 M_UNKNOWN_TOKEN with a refresh token: refreshes once, retries the logout with the new token', async () => {
    await w.seed();
    replyJson(w.agent, HS, 'POST', LOGOUT, 401, { errcode: 'M_UNKNOWN_TOKEN', error: 'Token is not active', soft_logout: false });
    replyJson(w.agent, HS, 'POST', REFRESH, 200, { access_token: 'syt_new_access', refresh_token: 'syr_new_refresh', expires_in_ms: 300_000 });
    replyJson(w.agent, HS, 'POST', LOGOUT, 200, {});
    await expect(logoutService('default', { local: false, all: false }, w.deps)).resolves.toEqual({ profile: 'default', serverSide: true });
    expect(w.requests().map((r) => `${r.path} ${r.headers.authorization ?? '-'}`)).toEqual([
      `${LOGOUT} Bearer syt_old_access`,
      `${REFRESH} -`,
      `${LOGOUT} Bearer syt_new_access`,
    ]);
    expect(await forgotten()).toBe(true);
  });

  // MATRIX-NOTES "Known client bugs": a proxy's 4xx page is not the homeserver ending the session.
  it('forgets nothing when a proxy answers 403 with an HTML page (no Matrix errcode)', async () => {
    const before = await w.seed();
    w.agent.get(HS).intercept({ method: 'POST', path: LOGOUT }).reply(403, '<html>Access denied by proxy</html>', { headers: { 'content-type': 'text/html' } });
    const err = await rejectionOf(() => logoutService('default', { local: false, all: false }, w.deps));
    expect(err.exitCode).toBe(3);
    expect(await w.stored()).toEqual({ record: before.record, secret: before.secret });
  });

  it('when no session is stored: exit 4 not_logged_in, no request', async () => {
    await expect(logoutService('default', { local: false, all: false }, w.deps)).rejects.toMatchObject({ code: 'not_logged_in', exitCode: 4 });
    expect(w.requests()).toEqual([]);
  });

  it('--local still forgets the record when the secret store is unusable', async () => {
    await w.seed({ storage: 'keychain' });
    w.deps.secretStores.keychain.delete = async () => {
      throw new Error('keychain locked');
    };
    await expect(logoutService('default', { local: true, all: false }, w.deps)).resolves.toMatchObject({ serverSide: false });
    expect(await w.deps.sessions.read('default')).toBeNull();
  });
});
