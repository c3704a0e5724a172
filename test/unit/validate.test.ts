// Every token response is validated before anything from it is stored (src/matrix/validate.ts),
// exercised through the login and refresh calls.
import { describe, expect, it } from '@jest/globals';
import { login, refresh } from '../../src/matrix/client.js';
import { refreshService } from '../../src/services/tokens.js';
import { HS, rejectionOf, replyJson, worldPerTest, type UnitWorld } from '../support/unit-deps.js';

const LOGIN = '/_matrix/client/v3/login';
const REFRESH = '/_matrix/client/v3/refresh';
const GOOD_LOGIN = { user_id: '@alice:example.org', device_id: 'DEVICE1', access_token: 'syt_new_access', refresh_token: 'syr_new_refresh', expires_in_ms: 300_000 };
const GOOD_REFRESH = { access_token: 'syt_new_access', refresh_token: 'syr_new_refresh', expires_in_ms: 300_000 };

let w: UnitWorld;
worldPerTest((made) => (w = made));

const doLogin = () => login(HS, { method: { type: 'm.login.password', user: 'alice', password: 'pw' }, refreshToken: true }, w.deps.http);
const doRefresh = () => refresh(HS, { refreshToken: 'syr_old_refresh' }, w.deps.http);

const HOSTILE_LIFETIMES: [string, unknown][] = [
  ['-1', -1],
  ['0', 0],
  ['1.5', 1.5],
  ['the string "60000"', '60000'],
  ['1e15 (decades)', 1e15],
  ['true', true],
  ['an object', { ms: 1000 }],
];

describe('expires_in_ms', () => {
  it.each(HOSTILE_LIFETIMES)('in a refresh response: %s is bad_response (exit 3)', async (_case, value) => {
    replyJson(w.agent, HS, 'POST', REFRESH, 200, { ...GOOD_REFRESH, expires_in_ms: value });
    const err = await rejectionOf(doRefresh);
    expect(err).toMatchObject({ code: 'bad_response', exitCode: 3 });
    expect(err.message).toContain('expires_in_ms');
  });

  it.each(HOSTILE_LIFETIMES)('in a login response: %s is bad_response (exit 3)', async (_case, value) => {
    replyJson(w.agent, HS, 'POST', LOGIN, 200, { ...GOOD_LOGIN, expires_in_ms: value });
    await expect(doLogin()).rejects.toMatchObject({ code: 'bad_response', exitCode: 3 });
  });

  it.each([
    ['absent', undefined],
    ['null', null],
  ])('%s means the token does not expire', async (_case, value) => {
    const { expires_in_ms: _drop, ...rest } = GOOD_REFRESH;
    replyJson(w.agent, HS, 'POST', REFRESH, 200, value === undefined ? rest : { ...rest, expires_in_ms: value });
    await expect(doRefresh()).resolves.toMatchObject({ accessToken: 'syt_new_access', expiresInMs: undefined });
  });

  it('accepts a whole positive number of milliseconds', async () => {
    replyJson(w.agent, HS, 'POST', REFRESH, 200, { ...GOOD_REFRESH, expires_in_ms: 1 });
    await expect(doRefresh()).resolves.toMatchObject({ expiresInMs: 1 });
  });
});

describe('tokens and identifiers', () => {
  it.each([
    ['missing access_token', { ...GOOD_REFRESH, access_token: undefined }],
    ['empty access_token', { ...GOOD_REFRESH, access_token: '' }],
    ['numeric access_token', { ...GOOD_REFRESH, access_token: 12345 }],
    ['access_token with a space', { ...GOOD_REFRESH, access_token: 'syt_a b' }],
    ['access_token with a newline', { ...GOOD_REFRESH, access_token: 'syt_a\nInjected: 1' }],
    ['access_token over 4 KiB', { ...GOOD_REFRESH, access_token: 'a'.repeat(4097) }],
    ['refresh_token that is a number', { ...GOOD_REFRESH, refresh_token: 7 }],
    ['refresh_token that is empty', { ...GOOD_REFRESH, refresh_token: '' }],
  ])('refresh response with %s is bad_response', async (_case, body) => {
    replyJson(w.agent, HS, 'POST', REFRESH, 200, body);
    await expect(doRefresh()).rejects.toMatchObject({ code: 'bad_response', exitCode: 3 });
  });

  it.each([
    ['missing access_token', { ...GOOD_LOGIN, access_token: undefined }],
    ['missing user_id', { ...GOOD_LOGIN, user_id: undefined }],
    ['missing device_id', { ...GOOD_LOGIN, device_id: undefined }],
    ['non-string user_id', { ...GOOD_LOGIN, user_id: ['@alice:example.org'] }],
  ])('login response with %s is bad_response', async (_case, body) => {
    replyJson(w.agent, HS, 'POST', LOGIN, 200, body);
    await expect(doLogin()).rejects.toMatchObject({ code: 'bad_response', exitCode: 3 });
  });

  it('a refresh response without refresh_token reports no new refresh token', async () => {
    const { refresh_token: _drop, ...rest } = GOOD_REFRESH;
    replyJson(w.agent, HS, 'POST', REFRESH, 200, rest);
    const grant = await doRefresh();
    expect(grant.refreshToken).toBeUndefined();
  });
});

describe('through the refresh service', () => {
  it('a refresh response without refresh_token keeps the stored refresh token', async () => {
    await w.seed({ refreshToken: 'syr_keep_me' });
    const { refresh_token: _drop, ...rest } = GOOD_REFRESH;
    replyJson(w.agent, HS, 'POST', REFRESH, 200, rest);
    const result = await refreshService('default', undefined, w.deps);
    expect(result.refreshTokenRotated).toBe(false);
    const { secret, record } = await w.stored();
    expect(secret).toMatchObject({ accessToken: 'syt_new_access', refreshToken: 'syr_keep_me' });
    expect(record!.refreshable).toBe(true);
  });

  it('a refresh response without expires_in_ms stores a token that does not expire', async () => {
    const { expires_in_ms: _drop, ...rest } = GOOD_REFRESH;
    await w.seed();
    replyJson(w.agent, HS, 'POST', REFRESH, 200, rest);
    const result = await refreshService('default', undefined, w.deps);
    expect(result).toMatchObject({ expiresAt: null, expiresInMs: null, refreshTokenRotated: true });
    const { secret, record } = await w.stored();
    expect(secret!.expiresAt).toBeNull();
    expect(record!.expiresAt).toBeNull();
  });

  it('a hostile refresh response stores nothing', async () => {
    const { record, secret } = await w.seed();
    replyJson(w.agent, HS, 'POST', REFRESH, 200, { ...GOOD_REFRESH, expires_in_ms: -1 });
    await expect(refreshService('default', undefined, w.deps)).rejects.toMatchObject({ code: 'bad_response', exitCode: 3 });
    expect(await w.stored()).toEqual({ record, secret });
  });
});
