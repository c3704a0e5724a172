// The HTTP layer (src/matrix/http.ts), exercised through the client functions that use it.
import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { openStream, retryWait } from '../../src/http/transport.js';
import { login, whoami } from '../../src/matrix/client.js';
import { errcodeOf, matrixErrorFields } from '../../src/matrix/http.js';
import { httpError } from '../../src/services/api.js';
import { HS, rejectionOf, replyJson, type UnitWorld, worldPerTest } from '../support/unit-deps.js';

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
    ['401 M_UNKNOWN_TOKEN with soft_logout', 401, { errcode: 'M_UNKNOWN_TOKEN', error: 'Access token has expired', soft_logout: true }, { code: 'M_UNKNOWN_TOKEN', exitCode: 4, status: 401, retryable: false }],
    ['401 M_UNKNOWN_TOKEN without soft_logout', 401, { errcode: 'M_UNKNOWN_TOKEN', error: 'Invalid access token passed.' }, { code: 'M_UNKNOWN_TOKEN', exitCode: 4, retryable: false }],
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
    expect(err.detail).toBe('You shall not pass'); // the server's own words, for callers that say them their way
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

  it('turns a slow answer into code "timeout" (exit 3) after deps.http.timeoutMs, said the way --timeout takes it', async () => {
    w.deps.http.timeoutMs = 1500;
    pool().intercept({ method: 'GET', path: WHOAMI }).reply(200, JSON.stringify(ME), { headers: { 'content-type': 'application/json' } }).delay(3000);
    const started = Date.now();
    const err = await rejectionOf(callWhoami);
    expect(err).toMatchObject({ code: 'timeout', exitCode: 3 });
    expect(err.message).toContain('did not answer within 1s500ms.');
    expect(Date.now() - started).toBeLessThan(2000);
  });
});

describe('one retry policy for send and openStream', () => {
  it.each([
    ['a retryable failure, first attempt', { retryable: true }, 1, true, 'backoff'],
    ['a retryable failure, second attempt', { retryable: true }, 2, true, 'backoff'],
    ['a retryable failure, third attempt: no more', { retryable: true }, 3, true, undefined],
    ['a request the caller says is not safe to repeat (POST)', { retryable: true }, 1, false, undefined],
    ['a failure retrying cannot help (TLS, 4xx)', { retryable: false }, 1, true, undefined],
    ['a 429 asking for 2 s', { retryable: true, retryAfterMs: 2000 }, 1, true, 2000],
    ['a 429 asking for 10 s', { retryable: true, retryAfterMs: 10_000 }, 1, true, 10_000],
    ['a 429 asking for more than 10 s: given up at once', { retryable: true, retryAfterMs: 10_001 }, 1, true, undefined],
  ] as const)('%s', (_case, failure, attempt, allowed, expected) => {
    const wait = retryWait(failure, attempt, allowed);
    if (expected === 'backoff') {
      expect(wait).toBeGreaterThan(0);
      expect(wait).toBeLessThanOrEqual(1000);
    } else {
      expect(wait).toBe(expected);
    }
  });

  const stream = (method: string, retry: boolean) => openStream(w.deps.http, { method, url: `${HS}${WHOAMI}`, accessToken: TOKEN, retry });

  it.each(['GET', 'PUT', 'DELETE'])('openStream retries a 5xx for %s, then hands over the answer', async (method) => {
    pool().intercept({ method, path: WHOAMI }).reply(502, 'bad gateway').times(2);
    pool().intercept({ method, path: WHOAMI }).reply(200, JSON.stringify(ME), { headers: { 'content-type': 'application/json' } });
    const res = await stream(method, true);
    expect(res.status).toBe(200);
    expect(JSON.parse(await res.body.text())).toEqual(ME);
    expect(w.sleeps).toHaveLength(2);
  });

  it('openStream does not repeat a POST: the 503 is the answer', async () => {
    pool().intercept({ method: 'POST', path: WHOAMI }).reply(503, 'down');
    const res = await stream('POST', false);
    expect(res.status).toBe(503);
    expect(await res.body.text()).toBe('down');
    expect(w.sleeps).toEqual([]);
  });

  it('openStream honours Retry-After on a 429 as send does', async () => {
    pool().intercept({ method: 'GET', path: WHOAMI }).reply(429, '{}', { headers: { 'retry-after': '2' } });
    pool().intercept({ method: 'GET', path: WHOAMI }).reply(200, '{}');
    expect((await stream('GET', true)).status).toBe(200);
    expect(w.sleeps).toEqual([2000]);
  });

  it('openStream, like send, does not sit out a long Retry-After: the 429 is the answer at once', async () => {
    pool().intercept({ method: 'GET', path: WHOAMI }).reply(429, '{"errcode":"M_LIMIT_EXCEEDED"}', { headers: { 'retry-after': '600' } });
    const res = await stream('GET', true);
    expect(res.status).toBe(429);
    expect(w.sleeps).toEqual([]);
    // ... and `mxs api` then exits 3, as for any 429 after retries.
    expect(httpError(429, await res.body.text(), 'matrix.example.org')).toMatchObject({ code: 'M_LIMIT_EXCEEDED', exitCode: 3 });
  });

  it('openStream retries network trouble for a GET, as send does', async () => {
    pool().intercept({ method: 'GET', path: WHOAMI }).replyWithError(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }));
    pool().intercept({ method: 'GET', path: WHOAMI }).reply(200, '{}');
    expect((await stream('GET', true)).status).toBe(200);
    expect(w.sleeps).toHaveLength(1);
  });

  it.each([
    ['send', () => whoami(HS, TOKEN, w.deps.http)],
    ['openStream', () => stream('GET', true)],
  ])('a TLS failure is never retried (%s)', async (_how, call) => {
    pool()
      .intercept({ method: 'GET', path: WHOAMI })
      .replyWithError(Object.assign(new Error("Hostname/IP does not match certificate's altnames"), { code: 'ERR_TLS_CERT_ALTNAME_INVALID' }))
      .persist();
    const err = await rejectionOf(call);
    expect(err).toMatchObject({ code: 'network', exitCode: 3, retryable: false });
    expect(err.message).toMatch(/^TLS failure talking to matrix\.example\.org/);
    expect(w.requests()).toHaveLength(1);
    expect(w.sleeps).toEqual([]);
  });

  it.each([
    ['a 503', 503, true],
    ['a 429', 429, true],
    ['a 400', 400, false],
    ['a 403', 403, false],
  ])('the decoded error says whether retrying helps: %s', async (_case, status, retryable) => {
    replyJson(w.agent, HS, 'GET', WHOAMI, status, { errcode: 'M_UNKNOWN', retry_after_ms: 60_000 }).persist();
    expect(await rejectionOf(callWhoami)).toMatchObject({ status, retryable });
  });
});

describe('one Matrix error decoder', () => {
  it.each([
    ['a JSON object', { errcode: 'M_FORBIDDEN', error: 'no\nsecond line' }, { errcode: 'M_FORBIDDEN', serverMessage: 'no' }],
    ['JSON text', '{"errcode":"M_UNKNOWN_TOKEN","error":"Token expired"}', { errcode: 'M_UNKNOWN_TOKEN', serverMessage: 'Token expired' }],
    ['bytes', Buffer.from('{"errcode":"M_LIMIT_EXCEEDED"}'), { errcode: 'M_LIMIT_EXCEEDED', serverMessage: undefined }],
    ['a proxy page', '<html>502 Bad Gateway</html>', {}],
    ['a JSON array', '[1,2]', {}],
    ['nothing', undefined, {}],
    ['a non-string errcode', { errcode: 42 }, { errcode: undefined, serverMessage: undefined }],
  ] as const)('reads %s', (_case, body, expected) => {
    expect(matrixErrorFields(body as never)).toEqual(expected);
    expect(errcodeOf(body as never)).toBe((expected as { errcode?: string }).errcode);
  });

  it.each([
    [404, '{"errcode":"M_NOT_FOUND","error":"Unknown room"}', 'M_NOT_FOUND', 7],
    [400, 'not json', 'http_error', 7],
    [500, '{"errcode":"M_UNKNOWN"}', 'M_UNKNOWN', 3],
    [502, '<html></html>', 'network', 3],
    [429, '{"errcode":"M_LIMIT_EXCEEDED"}', 'M_LIMIT_EXCEEDED', 3],
  ])('`mxs api`: HTTP %i becomes code and exit code from the same decoder', (status, text, code, exitCode) => {
    expect(httpError(status, text, 'matrix.example.org')).toMatchObject({ code, exitCode, status });
  });
});

describe('https:// to a port that never answers the TLS greeting (a wrong scheme)', () => {
  let silent: Server;
  let port: number;
  const sockets: Socket[] = [];
  beforeEach(async () => {
    silent = createServer((s) => {
      sockets.push(s);
      s.on('error', () => {});
    });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    port = (silent.address() as AddressInfo).port;
  });
  afterEach(async () => {
    for (const s of sockets.splice(0)) s.destroy();
    await new Promise((r) => silent.close(r));
  });

  it('the TLS handshake is bounded on its own (5s, within --timeout): a clear message, the http:// URL suggested, not retried; on a terminal mxs says what it waits for, then clears it', async () => {
    const waits: string[] = [];
    const http = { ...w.deps.http, dispatcher: undefined, timeoutMs: 30_000, onWaiting: (what: string) => (waits.push(what), () => waits.push('cleared')) };
    const started = Date.now();
    const err = await rejectionOf(() => whoami(`https://127.0.0.1:${port}`, TOKEN, http));
    expect(Date.now() - started).toBeLessThan(7000);
    expect(err).toMatchObject({ code: 'network', exitCode: 3, retryable: false });
    expect(err.message).toBe(`The TLS handshake with 127.0.0.1:${port} did not finish within 5s.`);
    expect(err.hint).toContain(`http://127.0.0.1:${port}`);
    expect(waits).toEqual([`Waiting for https://127.0.0.1:${port}/ (TLS handshake)…`, 'cleared']);
  }, 15_000);

  it('a --timeout shorter than 5s bounds the handshake too', async () => {
    const http = { ...w.deps.http, dispatcher: undefined, timeoutMs: 1000 };
    const started = Date.now();
    const err = await rejectionOf(() => whoami(`https://127.0.0.1:${port}`, TOKEN, http));
    expect(Date.now() - started).toBeLessThan(3000); // the 1s bound, then a look at what listens there
    expect(err.message).toBe(`The TLS handshake with 127.0.0.1:${port} did not finish within 1s.`);
  });
});
