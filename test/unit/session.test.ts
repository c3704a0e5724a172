// The refresh transaction (src/services/session.ts) through `token` and `refresh` (src/services/tokens.ts).
import { readFile } from 'node:fs/promises';
import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { storageError } from '../../src/errors.js';
import type { SessionSecret } from '../../src/model.js';
import { loadSession, refreshWhenBelow, refreshWhenExpired } from '../../src/services/session.js';
import { refreshService, tokenService } from '../../src/services/tokens.js';
import { HS, MemorySecretStore, T0, hintText, makeDeps, rejectionOf, replyJson, replyJsonWith, type UnitWorld } from '../support/unit-deps.js';

const V3 = '/_matrix/client/v3/refresh';
const V1 = '/_matrix/client/v1/refresh';
const UNSTABLE = '/_matrix/client/unstable/org.matrix.msc2918/refresh';
const NEW = { access_token: 'syt_new_access', refresh_token: 'syr_new_refresh', expires_in_ms: 300_000 };
const SEC = 1000;
const MIN = 60_000;

let w: UnitWorld;
beforeEach(async () => {
  w = await makeDeps();
});
afterEach(async () => {
  await w.cleanup();
});

const iso = (ms: number) => new Date(ms).toISOString();
const secretAt = (issuedAt: number, lifetimeMs: number | null): SessionSecret => ({
  accessToken: 'syt_a',
  refreshToken: 'syr_r',
  issuedAt: iso(issuedAt),
  expiresAt: lifetimeMs === null ? null : iso(issuedAt + lifetimeMs),
});
const refreshRequests = () => w.requests().filter((r) => r.path.endsWith('/refresh'));
/** The stored state, including the sessions file byte for byte. */
const snapshot = async () => ({ ...(await w.stored()), file: await readFile(w.paths.session('default'), 'utf8') });

/** A refused refresh keeps the tokens (for logout) and only marks the record as no longer refreshable, so status says "log in again". */
async function expectMarkedNotRefreshable(before: Awaited<ReturnType<typeof snapshot>>) {
  const after = await snapshot();
  expect(after.secret).toEqual(before.secret);
  expect(after.record).toEqual({ ...before.record, refreshable: false });
}

describe('refreshWhenBelow (token --min-valid)', () => {
  it.each([
    ['5m token, 61s left, min-valid 60s', false, 5 * MIN, 5 * MIN - 61 * SEC, 60 * SEC],
    ['5m token, 59s left, min-valid 60s', true, 5 * MIN, 5 * MIN - 59 * SEC, 60 * SEC],
    ['5m token, just issued, min-valid 10m: capped at half the lifetime', false, 5 * MIN, 0, 10 * MIN],
    ['5m token, 2m31s left, min-valid 10m: above the half-lifetime cap', false, 5 * MIN, 149 * SEC, 10 * MIN],
    ['5m token, 2m29s left, min-valid 10m: below the half-lifetime cap', true, 5 * MIN, 151 * SEC, 10 * MIN],
    ['60s token, just issued, min-valid 60s: not refreshed on every call', false, 60 * SEC, 0, 60 * SEC],
    ['60s token, 31s left, min-valid 60s', false, 60 * SEC, 29 * SEC, 60 * SEC],
    ['60s token, 29s left, min-valid 60s', true, 60 * SEC, 31 * SEC, 60 * SEC],
    ['expired token, min-valid 60s', true, 5 * MIN, 6 * MIN, 60 * SEC],
    ['expired token, min-valid 0', true, 5 * MIN, 6 * MIN, 0],
    ['token expiring this very millisecond, min-valid 0', true, 5 * MIN, 5 * MIN, 0],
    ['5m token, 1s left, min-valid 0', false, 5 * MIN, 5 * MIN - SEC, 0],
  ])('%s → refresh: %s', (_case, expected, lifetime, elapsed, minValid) => {
    expect(refreshWhenBelow(minValid)(secretAt(T0, lifetime), T0 + elapsed)).toBe(expected);
  });

  it('never refreshes a token that does not expire', () => {
    expect(refreshWhenBelow(10 * MIN)(secretAt(T0, null), T0 + 365 * 24 * 60 * MIN)).toBe(false);
  });
});

describe('refreshWhenExpired (whoami)', () => {
  it.each([
    [-1, false],
    [0, true],
    [1, true],
  ])('%d ms past expiry → %s', (past, expected) => {
    expect(refreshWhenExpired(secretAt(T0, 5 * MIN), T0 + 5 * MIN + past)).toBe(expected);
  });
});

describe('tokenService', () => {
  it('returns the stored token without any request while enough time is left', async () => {
    await w.seed({ issuedAt: T0, lifetimeMs: 5 * MIN });
    w.clock.set(T0 + MIN);
    const result = await tokenService('default', 60 * SEC, w.deps);
    expect(result).toEqual({ accessToken: 'syt_old_access', expiresAt: iso(T0 + 5 * MIN), expiresInMs: 4 * MIN });
    expect(w.requests()).toEqual([]);
  });

  it('refreshes when less than min-valid is left, and has stored the new pair before returning it', async () => {
    await w.seed({ issuedAt: T0, lifetimeMs: 5 * MIN });
    w.clock.set(T0 + 4 * MIN + 10 * SEC);
    const sentAt = w.clock.now();
    replyJsonWith(w.agent, HS, 'POST', V3, () => {
      w.clock.advance(3 * SEC); // a slow answer: expiry still counts from the moment the request was sent
      return { status: 200, body: NEW };
    });
    const result = await tokenService('default', 60 * SEC, w.deps);
    expect(result).toEqual({ accessToken: 'syt_new_access', expiresAt: iso(sentAt + 5 * MIN), expiresInMs: 5 * MIN - 3 * SEC });
    const { record, secret } = await w.stored();
    expect(secret).toEqual({ accessToken: 'syt_new_access', refreshToken: 'syr_new_refresh', issuedAt: iso(sentAt), expiresAt: iso(sentAt + 5 * MIN) });
    expect(record).toMatchObject({ issuedAt: iso(sentAt), expiresAt: iso(sentAt + 5 * MIN), refreshable: true });
    expect(refreshRequests()).toHaveLength(1);
    expect(refreshRequests()[0]!.body).toEqual({ refresh_token: 'syr_old_refresh' });
    expect(refreshRequests()[0]!.headers.authorization).toBeUndefined();
    expect(w.remembered).toEqual(expect.arrayContaining(['syt_new_access', 'syr_new_refresh']));
  });

  it('does not hand out new tokens it could not store (exit 6), and the old session stays usable', async () => {
    const keychain = new (class extends MemorySecretStore {
      failWrites = false;
      override async set(account: string, secret: SessionSecret): Promise<void> {
        if (this.failWrites) throw storageError('keychain write failed', 'fix it');
        return super.set(account, secret);
      }
    })('keychain');
    await w.cleanup();
    w = await makeDeps({ keychain });
    const before = await w.seed({ issuedAt: T0, lifetimeMs: 5 * MIN });
    w.clock.set(T0 + 6 * MIN);
    keychain.failWrites = true;
    replyJson(w.agent, HS, 'POST', V3, 200, NEW);
    await expect(tokenService('default', 60 * SEC, w.deps)).rejects.toMatchObject({ exitCode: 6 });
    expect(await w.stored()).toEqual({ record: before.record, secret: before.secret });
  });

  it('with --min-valid 0 at the very millisecond of expiry, refreshes instead of calling the token unrefreshable', async () => {
    await w.seed({ issuedAt: T0, lifetimeMs: 5 * MIN });
    w.clock.set(T0 + 5 * MIN);
    replyJson(w.agent, HS, 'POST', V3, 200, NEW);
    await expect(tokenService('default', 0, w.deps)).resolves.toMatchObject({ accessToken: 'syt_new_access' });
  });

  it('fails with exit 4 when the token has expired and there is no refresh token, without any request', async () => {
    await w.seed({ issuedAt: T0, lifetimeMs: 5 * MIN, refreshToken: null });
    w.clock.set(T0 + 6 * MIN);
    const err = await rejectionOf(() => tokenService('default', 60 * SEC, w.deps));
    expect(err).toMatchObject({ code: 'M_UNKNOWN_TOKEN', exitCode: 4 });
    expect(hintText(err)).toBe(`Run: mxs login ${HS}`);
    expect(w.requests()).toEqual([]);
  });

  it('fails with exit 4 (not_logged_in) when no session is stored', async () => {
    await expect(tokenService('default', 60 * SEC, w.deps)).rejects.toMatchObject({ code: 'not_logged_in', exitCode: 4 });
  });
});

describe('refreshService', () => {
  it('refreshes now, reports the new expiry and that the refresh token rotated', async () => {
    await w.seed({ issuedAt: T0, lifetimeMs: 5 * MIN });
    w.clock.set(T0 + MIN);
    replyJson(w.agent, HS, 'POST', V3, 200, NEW);
    await expect(refreshService('default', undefined, w.deps)).resolves.toEqual({
      profile: 'default',
      expiresAt: iso(T0 + 6 * MIN),
      expiresInMs: 5 * MIN,
      refreshTokenRotated: true,
    });
  });

  it('sends --lifetime as com.famedly.refresh_token_lifetime_ms', async () => {
    await w.seed();
    replyJson(w.agent, HS, 'POST', V3, 200, NEW);
    await refreshService('default', 3_600_000, w.deps);
    expect(refreshRequests()[0]!.body).toEqual({ refresh_token: 'syr_old_refresh', 'com.famedly.refresh_token_lifetime_ms': 3_600_000 });
  });

  it('keeps the old refresh token when the response has none', async () => {
    await w.seed();
    const { refresh_token: _drop, ...noRotation } = NEW;
    replyJson(w.agent, HS, 'POST', V3, 200, noRotation);
    await expect(refreshService('default', undefined, w.deps)).resolves.toMatchObject({ refreshTokenRotated: false });
    expect((await w.stored()).secret).toMatchObject({ accessToken: 'syt_new_access', refreshToken: 'syr_old_refresh' });
  });

  it('fails with exit 4 when the profile has no refresh token', async () => {
    await w.seed({ refreshToken: null });
    await expect(refreshService('default', undefined, w.deps)).rejects.toMatchObject({ code: 'not_refreshable', exitCode: 4 });
    expect(w.requests()).toEqual([]);
  });

  it.each([
    ['403 M_FORBIDDEN (refresh token revoked)', 4, 'M_FORBIDDEN', () => replyJson(w.agent, HS, 'POST', V3, 403, { errcode: 'M_FORBIDDEN', error: "refresh token isn't valid anymore" })],
    ['403 M_FORBIDDEN (session expired)', 4, 'M_FORBIDDEN', () => replyJson(w.agent, HS, 'POST', V3, 403, { errcode: 'M_FORBIDDEN', error: 'The supplied refresh token has expired' })],
    ['401 M_UNKNOWN_TOKEN (garbage)', 4, 'M_UNKNOWN_TOKEN', () => replyJson(w.agent, HS, 'POST', V3, 401, { errcode: 'M_UNKNOWN_TOKEN', error: 'unknown' })],
    ['500 on every attempt', 3, 'M_UNKNOWN', () => replyJson(w.agent, HS, 'POST', V3, 500, { errcode: 'M_UNKNOWN', error: 'oops' }).persist()],
    ['a network error', 3, 'network', () => w.agent.get(HS).intercept({ method: 'POST', path: V3 }).replyWithError(new Error('socket hang up')).persist()],
    ['a timeout', 3, 'timeout', () => {
      w.deps.http.timeoutMs = 30;
      w.agent.get(HS).intercept({ method: 'POST', path: V3 }).reply(200, JSON.stringify(NEW), { headers: { 'content-type': 'application/json' } }).delay(1000);
    }],
    ['429 with a long wait', 3, 'M_LIMIT_EXCEEDED', () => replyJson(w.agent, HS, 'POST', V3, 429, { errcode: 'M_LIMIT_EXCEEDED', retry_after_ms: 120_000 })],
    ['a malformed 200', 3, 'bad_response', () => replyJson(w.agent, HS, 'POST', V3, 200, { refresh_token: 'syr_x' })],
  ])('on %s fails with exit %d (%s) and leaves the stored session exactly as it was', async (_case, exitCode, code, setup) => {
    await w.seed({ issuedAt: T0, lifetimeMs: 5 * MIN });
    const before = await snapshot();
    setup();
    const err = await rejectionOf(() => refreshService('default', undefined, w.deps));
    expect(err).toMatchObject({ exitCode, code });
    if (exitCode === 4) {
      expect(hintText(err)).toBe(`Run: mxs login ${HS}`);
      await expectMarkedNotRefreshable(before);
    } else {
      expect(await snapshot()).toEqual(before);
    }
  });

  it('the same refusal through `token` keeps the tokens and marks the session not refreshable', async () => {
    await w.seed({ issuedAt: T0, lifetimeMs: 5 * MIN });
    w.clock.set(T0 + 6 * MIN);
    const before = await snapshot();
    replyJson(w.agent, HS, 'POST', V3, 403, { errcode: 'M_FORBIDDEN', error: 'The session has expired and can no longer be refreshed' });
    await expect(tokenService('default', 60 * SEC, w.deps)).rejects.toMatchObject({ exitCode: 4, code: 'M_FORBIDDEN' });
    await expectMarkedNotRefreshable(before);
  });
});

describe('refresh endpoint fallback (v3 → v1 → MSC2918 unstable)', () => {
  const unrecognized = (path: string) => replyJson(w.agent, HS, 'POST', path, 404, { errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' });

  it.each([
    ['v3', [], V3, undefined],
    ['v1 (Synapse 1.49–1.71)', [V3], V1, '/v1/refresh'],
    ['unstable (Synapse 1.38–1.48)', [V3, V1], UNSTABLE, '/unstable/org.matrix.msc2918/refresh'],
  ])('finds %s and remembers it in the record', async (_case, failing, working, remembered) => {
    await w.seed();
    for (const p of failing) unrecognized(p);
    replyJson(w.agent, HS, 'POST', working, 200, NEW);
    await refreshService('default', undefined, w.deps);
    expect(refreshRequests().map((r) => r.path)).toEqual([...failing, working]);
    const { record } = await w.stored();
    expect(record!.auth).toEqual(remembered ? { type: 'matrix', refreshPath: remembered } : { type: 'matrix' });
  });

  it('tries the remembered path first next time', async () => {
    await w.seed();
    unrecognized(V3);
    unrecognized(V1);
    replyJson(w.agent, HS, 'POST', UNSTABLE, 200, NEW);
    await refreshService('default', undefined, w.deps);
    replyJson(w.agent, HS, 'POST', UNSTABLE, 200, { ...NEW, access_token: 'syt_third', refresh_token: 'syr_third' });
    await refreshService('default', undefined, w.deps);
    expect(refreshRequests().map((r) => r.path)).toEqual([V3, V1, UNSTABLE, UNSTABLE]);
    expect((await w.stored()).secret!.accessToken).toBe('syt_third');
  });

  it('forgets a remembered path once the server has moved on to v3', async () => {
    await w.seed({ refreshPath: '/v1/refresh' });
    unrecognized(V1);
    replyJson(w.agent, HS, 'POST', V3, 200, NEW);
    await refreshService('default', undefined, w.deps);
    expect(refreshRequests().map((r) => r.path)).toEqual([V1, V3]);
    expect((await w.stored()).record!.auth).toEqual({ type: 'matrix' });
  });

  it('also falls back on a bare 404/405 without a Matrix error body', async () => {
    await w.seed();
    w.agent.get(HS).intercept({ method: 'POST', path: V3 }).reply(404, '<html>Not Found</html>', { headers: { 'content-type': 'text/html' } });
    w.agent.get(HS).intercept({ method: 'POST', path: V1 }).reply(405, '', {});
    replyJson(w.agent, HS, 'POST', UNSTABLE, 200, NEW);
    await refreshService('default', undefined, w.deps);
    expect((await w.stored()).record!.auth).toEqual({ type: 'matrix', refreshPath: '/unstable/org.matrix.msc2918/refresh' });
  });

  it('reports refresh as unavailable (exit 4, M_UNRECOGNIZED) when every path is unrecognised, storing no token', async () => {
    await w.seed();
    const before = await snapshot();
    for (const p of [V3, V1, UNSTABLE]) unrecognized(p);
    await expect(refreshService('default', undefined, w.deps)).rejects.toMatchObject({ code: 'M_UNRECOGNIZED', exitCode: 4 });
    await expectMarkedNotRefreshable(before);
  });

  it('does not fall back on an auth error: a revoked token is not retried elsewhere', async () => {
    await w.seed();
    replyJson(w.agent, HS, 'POST', V3, 403, { errcode: 'M_FORBIDDEN', error: 'no' });
    await expect(refreshService('default', undefined, w.deps)).rejects.toMatchObject({ exitCode: 4 });
    expect(refreshRequests().map((r) => r.path)).toEqual([V3]);
  });
});

describe('crash repair', () => {
  it('a record whose times differ from the secret (crash between the two writes): the secret is the truth, and the record is not rewritten outside the lock', async () => {
    const { record } = await w.seed({ issuedAt: T0, lifetimeMs: 5 * MIN });
    // A refresh stored its new secret, then the process died before the sessions file was updated.
    const newer: SessionSecret = { accessToken: 'syt_newer', refreshToken: 'syr_newer', issuedAt: iso(T0 + 4 * MIN), expiresAt: iso(T0 + 9 * MIN) };
    await w.keychain.set('default', newer);
    w.clock.set(T0 + 5 * MIN);
    const result = await tokenService('default', 60 * SEC, w.deps);
    expect(result).toMatchObject({ accessToken: 'syt_newer', expiresAt: newer.expiresAt });
    expect(w.requests()).toEqual([]);
    expect((await w.stored()).record).toEqual(record);
  });

  it('a repaired record reflects a secret without refresh token as not refreshable', async () => {
    await w.seed({ issuedAt: T0, lifetimeMs: 5 * MIN });
    await w.keychain.set('default', { accessToken: 'syt_x', refreshToken: null, issuedAt: iso(T0 + MIN), expiresAt: null });
    const loaded = await loadSession('default', w.deps);
    expect(loaded.record).toMatchObject({ issuedAt: iso(T0 + MIN), expiresAt: null, refreshable: false });
  });

  it('tokens missing from the keychain while the record remains: exit 6 (a locked keyring reads as "not found")', async () => {
    await w.seed();
    await w.keychain.delete('default');
    const err = await rejectionOf(() => tokenService('default', 60 * SEC, w.deps));
    expect(err).toMatchObject({ code: 'storage', exitCode: 6 });
    expect(err.message).toMatch(/locked, or the item was deleted/);
    expect(hintText(err)).toMatch(/Unlock the keychain.*mxs login/);
  });
});

describe('concurrency', () => {
  it('two concurrent `token` calls that both need a refresh make exactly one refresh request', async () => {
    await w.seed({ issuedAt: T0, lifetimeMs: 5 * MIN });
    w.clock.set(T0 + 6 * MIN);
    replyJson(w.agent, HS, 'POST', V3, 200, NEW).delay(30);
    const [a, b] = await Promise.all([tokenService('default', 60 * SEC, w.deps), tokenService('default', 60 * SEC, w.deps)]);
    expect(a.accessToken).toBe('syt_new_access');
    expect(b.accessToken).toBe('syt_new_access');
    expect(refreshRequests()).toHaveLength(1);
  });
});
