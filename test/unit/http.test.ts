// The HTTP layer (src/matrix/http.ts), exercised through the client functions that use it.
import { describe, expect, it } from '@jest/globals';
import { login, whoami } from '../../src/matrix/client.js';
import { HS, rejectionOf, replyJson, worldPerTest, type UnitWorld } from '../support/unit-deps.js';

const WHOAMI = '/_matrix/client/v3/account/whoami';
const TOKEN = 'syt_YWxpY2U_secretAccess_123';
const ME = { user_id: '@alice:example.org', device_id: 'DEVICE1' };

let w: UnitWorld;
worldPerTest((made) => (w = made));

const callWhoami = () => whoami(HS, TOKEN, w.deps.http);
const pool = () => w.agent.get(HS);
const html = { headers: { 'content-type': 'text/html' } };

describe('requests', () => {
  it('send the access token as an Authorization: Bearer header and never in the URL', async () => {
    replyJson(w.agent, HS, 'GET', WHOAMI, 200, ME);
    await callWhoami();
    const [req] = w.requests();
    expect(req!.headers.authorization).toBe(`Bearer ${TOKEN}`);
    expect(req!.url).toBe(`${HS}${WHOAMI}`);
    expect(req!.url).not.toContain(TOKEN);
  });

  it('send no Authorization header on login, and the JSON body the spec describes', async () => {
    replyJson(w.agent, HS, 'POST', '/_matrix/client/v3/login', 200, { ...ME, access_token: TOKEN });
    await login(HS, { method: { type: 'm.login.password', user: 'alice', password: 'pw-1' }, refreshToken: true, deviceName: 'laptop' }, w.deps.http);
    const [req] = w.requests();
    expect(req!.headers.authorization).toBeUndefined();
    expect(req!.headers['content-type']).toBe('application/json');
    expect(req!.body).toEqual({
      type: 'm.login.password',
      identifier: { type: 'm.id.user', user: 'alice' },
      password: 'pw-1',
      refresh_token: true,
      initial_device_display_name: 'laptop',
    });
  });

  it('write a trace line per exchange without any token in it', async () => {
    const lines: string[] = [];
    w.deps.http.trace = (l) => lines.push(l);
    replyJson(w.agent, HS, 'GET', WHOAMI, 200, ME);
    await callWhoami();
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(`GET ${HS}${WHOAMI}`);
    expect(lines[0]).toContain('200');
    expect(lines.join('\n')).not.toContain(TOKEN);
  });
});

describe('server errors map to one MxsError with the contract exit code', () => {
  it.each([
    ['401 M_UNKNOWN_TOKEN with soft_logout', 401, { errcode: 'M_UNKNOWN_TOKEN', error: 'Access token has expired', soft_logout: true }, { code: 'M_UNKNOWN_TOKEN', exitCode: 4, softLogout: true, status: 401 }],
    ['401 M_UNKNOWN_TOKEN without soft_logout', 401, { errcode: 'M_UNKNOWN_TOKEN', error: 'Invalid access token passed.' }, { code: 'M_UNKNOWN_TOKEN', exitCode: 4, softLogout: false }],
    ['403 M_FORBIDDEN', 403, { errcode: 'M_FORBIDDEN', error: 'nope' }, { code: 'M_FORBIDDEN', exitCode: 4, status: 403 }],
    ['400 M_BAD_JSON', 400, { errcode: 'M_BAD_JSON', error: 'bad' }, { code: 'M_BAD_JSON', exitCode: 3, status: 400 }],
    ['404 without errcode', 404, { nothing: true }, { code: 'bad_response', exitCode: 3, status: 404 }],
  ])('%s', async (_case, status, body, expected) => {
    replyJson(w.agent, HS, 'GET', WHOAMI, status, body);
    const err = await rejectionOf(callWhoami);
    expect(err).toMatchObject({ name: 'MxsError', ...expected });
    expect(w.requests()).toHaveLength(1); // 4xx is never retried
    expect(w.sleeps).toEqual([]);
  });

  it('keeps the server message, one line, in the error message', async () => {
    replyJson(w.agent, HS, 'GET', WHOAMI, 403, { errcode: 'M_FORBIDDEN', error: 'You shall not pass\nsecond line' });
    const err = await rejectionOf(callWhoami);
    expect(err.message).toContain('You shall not pass');
    expect(err.message).not.toContain('second line');
  });

  // MATRIX-NOTES "Known client bugs": a proxy or captive portal answering 401/403 with its own page
  // must not look like the server ending the session (element-web #27914, matrix-js-sdk #5494).
  it.each([
    [401, '<html>proxy authentication required</html>'],
    [403, '<html>Forbidden by the corporate proxy</html>'],
  ])('treats a non-Matrix %d (HTML, no errcode) as server trouble (exit 3), not as "log in again"', async (status, page) => {
    pool().intercept({ method: 'GET', path: WHOAMI }).reply(status, page, html);
    const err = await rejectionOf(callWhoami);
    expect(err).toMatchObject({ code: 'bad_response', exitCode: 3 });
  });
});

describe('retries', () => {
  it('waits the retry_after_ms of a 429 and then succeeds', async () => {
    replyJson(w.agent, HS, 'GET', WHOAMI, 429, { errcode: 'M_LIMIT_EXCEEDED', error: 'Too many requests', retry_after_ms: 1500 });
    replyJson(w.agent, HS, 'GET', WHOAMI, 200, ME);
    await expect(callWhoami()).resolves.toMatchObject({ userId: '@alice:example.org' });
    expect(w.sleeps).toEqual([1500]);
    expect(w.requests()).toHaveLength(2);
  });

  it('honours a Retry-After header (seconds) when the body has no retry_after_ms', async () => {
    replyJson(w.agent, HS, 'GET', WHOAMI, 429, { errcode: 'M_LIMIT_EXCEEDED' }, { 'retry-after': '2' });
    replyJson(w.agent, HS, 'GET', WHOAMI, 200, ME);
    await callWhoami();
    expect(w.sleeps).toEqual([2000]);
  });

  it('gives up at once on a 429 that asks for a long wait (exit 3, M_LIMIT_EXCEEDED)', async () => {
    replyJson(w.agent, HS, 'GET', WHOAMI, 429, { errcode: 'M_LIMIT_EXCEEDED', error: 'Too many requests', retry_after_ms: 60_000 });
    const err = await rejectionOf(callWhoami);
    expect(err).toMatchObject({ code: 'M_LIMIT_EXCEEDED', exitCode: 3, status: 429, retryAfterMs: 60_000 });
    expect(err.hint).toContain('60s');
    expect(w.sleeps).toEqual([]);
    expect(w.requests()).toHaveLength(1);
  });

  it('gives up after three attempts of 429 (exit 3)', async () => {
    replyJson(w.agent, HS, 'GET', WHOAMI, 429, { errcode: 'M_LIMIT_EXCEEDED', retry_after_ms: 100 }).times(3);
    const err = await rejectionOf(callWhoami);
    expect(err).toMatchObject({ code: 'M_LIMIT_EXCEEDED', exitCode: 3 });
    expect(w.sleeps).toEqual([100, 100]);
    expect(w.requests()).toHaveLength(3);
  });

  it('retries a 5xx twice with short backoff and then succeeds', async () => {
    replyJson(w.agent, HS, 'GET', WHOAMI, 500, { errcode: 'M_UNKNOWN', error: 'Internal server error' }).times(2);
    replyJson(w.agent, HS, 'GET', WHOAMI, 200, ME);
    await expect(callWhoami()).resolves.toMatchObject({ userId: '@alice:example.org' });
    expect(w.requests()).toHaveLength(3);
    expect(w.sleeps).toHaveLength(2);
    for (const ms of w.sleeps) {
      expect(ms).toBeGreaterThan(0);
      expect(ms).toBeLessThanOrEqual(1000);
    }
  });

  it('fails with exit 3 when the 5xx persists', async () => {
    replyJson(w.agent, HS, 'GET', WHOAMI, 503, { errcode: 'M_UNKNOWN', error: 'down' }).persist();
    const err = await rejectionOf(callWhoami);
    expect(err).toMatchObject({ code: 'M_UNKNOWN', exitCode: 3, status: 503 });
    expect(w.requests()).toHaveLength(3);
  });
});

describe('unusable answers are bad_response (exit 3)', () => {
  it.each([
    ['502 with an HTML page', 502, '<html><body>Bad Gateway</body></html>', 'text/html'],
    ['200 with an HTML page', 200, '<!doctype html><title>Welcome to nginx</title>', 'text/html'],
    ['200 with no content type', 200, '{}', undefined],
    ['200 with truncated JSON', 200, '{"user_id": "@alice:exa', 'application/json'],
    ['200 with a JSON array', 200, '[1,2]', 'application/json'],
    ['200 with an empty body', 200, '', 'application/json'],
  ])('%s', async (_case, status, body, contentType) => {
    pool()
      .intercept({ method: 'GET', path: WHOAMI })
      .reply(status, body, contentType ? { headers: { 'content-type': contentType } } : {})
      .persist();
    const err = await rejectionOf(callWhoami);
    expect(err).toMatchObject({ code: 'bad_response', exitCode: 3 });
  });

  it('refuses a body over 1 MiB', async () => {
    const huge = JSON.stringify({ ...ME, padding: 'x'.repeat(1024 * 1024 + 10) });
    pool().intercept({ method: 'GET', path: WHOAMI }).reply(200, huge, { headers: { 'content-type': 'application/json' } });
    const err = await rejectionOf(callWhoami);
    expect(err).toMatchObject({ code: 'bad_response', exitCode: 3 });
    expect(err.message).toContain('larger than');
  });

  it('accepts a body just under 1 MiB', async () => {
    const body = JSON.stringify({ ...ME, padding: 'x'.repeat(1024 * 1024 - 200) });
    pool().intercept({ method: 'GET', path: WHOAMI }).reply(200, body, { headers: { 'content-type': 'application/json; charset=utf-8' } });
    await expect(callWhoami()).resolves.toMatchObject({ userId: '@alice:example.org' });
  });

  it.each([
    [302, 'https://evil.example.net/steal'],
    [307, 'https://evil.example.net/_matrix/client/v3/account/whoami'],
    [301, '//evil.example.net/x'],
    [302, 'http://[not-a-url'],
  ])('refuses a %d redirect to %s and never follows it', async (status, location) => {
    pool().intercept({ method: 'GET', path: WHOAMI }).reply(status, '', { headers: { location } });
    const err = await rejectionOf(callWhoami);
    expect(err).toMatchObject({ code: 'bad_response', exitCode: 3 });
    expect(w.requests().map((r) => r.url)).toEqual([`${HS}${WHOAMI}`]);
  });
});

describe('transport failures', () => {
  it('turns a connection error into code "network" (exit 3), after retrying', async () => {
    pool()
      .intercept({ method: 'GET', path: WHOAMI })
      .replyWithError(Object.assign(new Error('connect ECONNREFUSED 10.0.0.1:443'), { code: 'ECONNREFUSED' }))
      .persist();
    const err = await rejectionOf(callWhoami);
    expect(err).toMatchObject({ code: 'network', exitCode: 3 });
    expect(err.message).toContain('matrix.example.org');
    expect(w.requests()).toHaveLength(3);
  });

  it('turns an unreachable host (no interceptor, real network disabled) into code "network"', async () => {
    const err = await rejectionOf(() => whoami('https://nowhere.example.com', TOKEN, w.deps.http));
    expect(err).toMatchObject({ code: 'network', exitCode: 3 });
  });

  it('turns a slow answer into code "timeout" (exit 3) after deps.http.timeoutMs', async () => {
    w.deps.http.timeoutMs = 50;
    pool().intercept({ method: 'GET', path: WHOAMI }).reply(200, JSON.stringify(ME), { headers: { 'content-type': 'application/json' } }).delay(2000);
    const started = Date.now();
    const err = await rejectionOf(callWhoami);
    expect(err).toMatchObject({ code: 'timeout', exitCode: 3 });
    expect(err.message).toContain('50 ms');
    expect(Date.now() - started).toBeLessThan(1500);
  });
});
