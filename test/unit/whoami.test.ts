// `whoami` (src/services/whoami.ts) and the contract's refresh-once-and-retry (withAccessToken).
import { describe, expect, it } from '@jest/globals';
import { whoamiService, whoamiTokenService } from '../../src/services/whoami.js';
import { HS, T0, rejectionOf, replyJson, replyVersions, type UnitWorld, hintText, worldPerTest } from '../support/unit-deps.js';

const WHOAMI = '/_matrix/client/v3/account/whoami';
const REFRESH = '/_matrix/client/v3/refresh';
const ME = { user_id: '@alice:example.org', device_id: 'DEVICE1' };
const NEW = { access_token: 'syt_new_access', refresh_token: 'syr_new_refresh', expires_in_ms: 300_000 };
const MIN = 60_000;
const UNKNOWN_TOKEN = { errcode: 'M_UNKNOWN_TOKEN', error: 'Invalid access token passed.', soft_logout: false };
const EXPIRED_TOKEN = { errcode: 'M_UNKNOWN_TOKEN', error: 'Access token has expired', soft_logout: true };

let w: UnitWorld;
worldPerTest((made) => (w = made));

/** Each request as "METHOD path (bearer token or -)". */
const trail = () => w.requests().map((r) => `${r.method} ${r.path} ${r.headers.authorization?.replace('Bearer ', '') ?? '-'}`);

describe('whoamiService', () => {
  it('asks the server with the stored token, without refreshing a valid one', async () => {
    await w.seed({ issuedAt: T0, lifetimeMs: 5 * MIN });
    w.clock.set(T0 + 4 * MIN + 59_000); // 1 s left: whoami refreshes only once expired
    replyJson(w.agent, HS, 'GET', WHOAMI, 200, { ...ME, is_guest: false });
    const { result } = await whoamiService('default', w.deps);
    expect(result).toEqual({ profile: 'default', homeserver: HS, userId: '@alice:example.org', deviceId: 'DEVICE1', isGuest: false, refreshed: false });
    expect(trail()).toEqual([`GET ${WHOAMI} syt_old_access`]);
  });

  it('reports an absent device_id as null and an absent is_guest as false', async () => {
    await w.seed();
    replyJson(w.agent, HS, 'GET', WHOAMI, 200, { user_id: '@alice:example.org' });
    const { result } = await whoamiService('default', w.deps);
    expect(result).toMatchObject({ deviceId: null, isGuest: false });
  });

  it('refreshes first when the stored token has expired, then asks with the new token', async () => {
    await w.seed({ issuedAt: T0, lifetimeMs: 5 * MIN });
    w.clock.set(T0 + 6 * MIN);
    replyJson(w.agent, HS, 'POST', REFRESH, 200, NEW);
    replyJson(w.agent, HS, 'GET', WHOAMI, 200, ME);
    const { result } = await whoamiService('default', w.deps);
    expect(result.refreshed).toBe(true);
    expect(trail()).toEqual([`POST ${REFRESH} -`, `GET ${WHOAMI} syt_new_access`]);
    expect((await w.stored()).secret).toMatchObject({ accessToken: 'syt_new_access', refreshToken: 'syr_new_refresh' });
  });

  it.each([
    ['soft_logout: true', EXPIRED_TOKEN],
    ['soft_logout: false (MAS-style servers)', UNKNOWN_TOKEN],
  ])('on 401 M_UNKNOWN_TOKEN (%s) with a refresh token: refreshes once and retries once', async (_case, body) => {
    await w.seed({ issuedAt: T0, lifetimeMs: 5 * MIN });
    w.clock.set(T0 + MIN);
    replyJson(w.agent, HS, 'GET', WHOAMI, 401, body);
    replyJson(w.agent, HS, 'POST', REFRESH, 200, NEW);
    replyJson(w.agent, HS, 'GET', WHOAMI, 200, ME);
    const { result } = await whoamiService('default', w.deps);
    expect(result).toMatchObject({ userId: '@alice:example.org', refreshed: true });
    expect(trail()).toEqual([`GET ${WHOAMI} syt_old_access`, `POST ${REFRESH} -`, `GET ${WHOAMI} syt_new_access`]);
  });

  it('a second 401 after the refresh fails with exit 4, after exactly one refresh', async () => {
    await w.seed({ issuedAt: T0, lifetimeMs: 5 * MIN });
    replyJson(w.agent, HS, 'GET', WHOAMI, 401, UNKNOWN_TOKEN).times(2);
    replyJson(w.agent, HS, 'POST', REFRESH, 200, NEW);
    const err = await rejectionOf(() => whoamiService('default', w.deps));
    expect(err).toMatchObject({ code: 'M_UNKNOWN_TOKEN', exitCode: 4 });
    expect(hintText(err)).toBe(`Run: mxs login ${HS}`);
    expect(trail()).toEqual([`GET ${WHOAMI} syt_old_access`, `POST ${REFRESH} -`, `GET ${WHOAMI} syt_new_access`]);
  });

  it('an expired token is refreshed first; a 401 on the new token gets the one refresh-and-retry, and no more', async () => {
    await w.seed({ issuedAt: T0, lifetimeMs: 5 * MIN });
    w.clock.set(T0 + 6 * MIN);
    replyJson(w.agent, HS, 'POST', REFRESH, 200, NEW);
    replyJson(w.agent, HS, 'GET', WHOAMI, 401, UNKNOWN_TOKEN).times(2);
    replyJson(w.agent, HS, 'POST', REFRESH, 200, { ...NEW, access_token: 'syt_third', refresh_token: 'syr_third' });
    await expect(whoamiService('default', w.deps)).rejects.toMatchObject({ code: 'M_UNKNOWN_TOKEN', exitCode: 4 });
    expect(trail()).toEqual([`POST ${REFRESH} -`, `GET ${WHOAMI} syt_new_access`, `POST ${REFRESH} -`, `GET ${WHOAMI} syt_third`]);
  });

  it('on 401 M_UNKNOWN_TOKEN without a refresh token fails with exit 4 and no refresh', async () => {
    await w.seed({ refreshToken: null });
    replyJson(w.agent, HS, 'GET', WHOAMI, 401, UNKNOWN_TOKEN);
    const err = await rejectionOf(() => whoamiService('default', w.deps));
    expect(err).toMatchObject({ code: 'M_UNKNOWN_TOKEN', exitCode: 4 });
    expect(trail()).toEqual([`GET ${WHOAMI} syt_old_access`]);
  });

  it('an expired token without refresh token fails with exit 4 before any request', async () => {
    await w.seed({ issuedAt: T0, lifetimeMs: 5 * MIN, refreshToken: null });
    w.clock.set(T0 + 6 * MIN);
    await expect(whoamiService('default', w.deps)).rejects.toMatchObject({ code: 'M_UNKNOWN_TOKEN', exitCode: 4 });
    expect(w.requests()).toEqual([]);
  });

  it.each([
    ['403 M_FORBIDDEN', 403, { errcode: 'M_FORBIDDEN', error: 'no' }, 4],
    ['a persistent 500', 500, { errcode: 'M_UNKNOWN', error: 'boom' }, 3],
  ])('%s is not retried through a refresh', async (_case, status, body, exitCode) => {
    await w.seed();
    replyJson(w.agent, HS, 'GET', WHOAMI, status, body).persist();
    await expect(whoamiService('default', w.deps)).rejects.toMatchObject({ exitCode });
    expect(w.requests().filter((r) => r.path === REFRESH)).toEqual([]);
  });

  it('when no session is stored: exit 4 not_logged_in', async () => {
    await expect(whoamiService('default', w.deps)).rejects.toMatchObject({ code: 'not_logged_in', exitCode: 4 });
  });
});

describe('whoamiTokenService (--token-stdin)', () => {
  it('checks the given token against the server and stores nothing', async () => {
    replyVersions(w.agent, HS);
    replyJson(w.agent, HS, 'GET', WHOAMI, 200, ME);
    const { result } = await whoamiTokenService('syt_given_token', HS, false, w.deps);
    expect(result).toEqual({ profile: null, homeserver: HS, userId: '@alice:example.org', deviceId: 'DEVICE1', isGuest: false, refreshed: false });
    expect(trail()).toContain(`GET ${WHOAMI} syt_given_token`);
    expect(w.remembered).toContain('syt_given_token');
    expect(await w.deps.sessions.profiles()).toEqual([]);
  });
});
