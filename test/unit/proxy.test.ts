// `mxs proxy` in process: the rules (request targets, credentials, routes, hop-by-hop headers, --listen),
// the session's tokens (single flight, replay after a refusal, network trouble, the end of a session), the
// log line and the bounded redactor, and runProxy itself against an undici MockAgent standing in for the
// homeserver. The spawned CLI against real servers is test/integration/proxy.test.ts.
import { describe, expect, it } from '@jest/globals';
import { request } from 'undici';
import { MxsError } from '../../src/errors.js';
import { isLoopback, parseListen, urlOf } from '../../src/proxy/listen.js';
import { RecentSecrets, requestLine } from '../../src/proxy/present.js';
import { downstreamHeaders, headersTimeoutFor, isTargetProblem, parseTarget, ProxyToken, route, upstreamHeaders, type Target } from '../../src/proxy/rules.js';
import { RefreshUnavailable, SessionEnded, SessionTokens } from '../../src/proxy/session-tokens.js';
import { checkProxyToken, newProxyToken, runProxy, type ProxyStartInfo } from '../../src/services/proxy.js';
import { loadSession, refreshWhenBelow } from '../../src/services/session.js';
import { HS, rejectionOf, replyJson, replyJsonWith, worldPerTest, type UnitWorld } from '../support/unit-deps.js';

const V3_REFRESH = '/_matrix/client/v3/refresh';
const NEW = { access_token: 'syt_new_access', refresh_token: 'syr_new_refresh', expires_in_ms: 300_000 };
const SEC = 1000;

let w: UnitWorld;
worldPerTest((made) => (w = made));

describe('parseTarget: origin-form only, dot segments refused, access_token taken out of the query', () => {
  it.each([
    ['/_matrix/client/v3/sync?since=s1&timeout=30000', { path: '/_matrix/client/v3/sync', query: 'since=s1&timeout=30000', queryTokens: [], canonical: '/_matrix/client/v3/sync' }],
    ['/_matrix/client/v3/rooms/!a%3Ab/send/m.room.message/t1', { path: '/_matrix/client/v3/rooms/!a%3Ab/send/m.room.message/t1', canonical: '/_matrix/client/v3/rooms/!a:b/send/m.room.message/t1' }],
    ['/_matrix//client/V3/LOGI%4E/', { canonical: '/_matrix/client/v3/login' }],
    ['/x?access_token=abc%2Bd&a=%20b&access_token=e', { query: 'a=%20b', queryTokens: ['abc+d', 'e'] }],
    ['/x?a=1&b', { query: 'a=1&b', queryTokens: [] }],
  ])('%s → accepted', (raw, expected) => {
    const t = parseTarget(raw);
    expect(isTargetProblem(t)).toBe(false);
    expect(t).toMatchObject(expected);
  });

  it.each([
    ['http://evil.example/_matrix/client/v3/sync', 'origin-form'],
    ['*', 'origin-form'],
    ['evil.example:443', 'origin-form'],
    ['/_matrix/client/v3/../../_synapse/admin/v1/users', '".."'],
    ['/_matrix/client/v3/./sync', '".."'],
    ['/_matrix/client/v3/%2e%2e/x', '".."'],
    ['/_matrix/client/v3/.%2E/x', '".."'],
    ['/_matrix/client/v3/x%5C..%5Clogin', '".."'],
    ['/_matrix/client/v3/%ZZ', 'percent-encoding'],
    ['/_matrix/client/v3/a%00b', 'control'],
    ['/x?access_token=%ZZ', 'percent-encoding'],
  ])('%s → refused (%s)', (raw, why) => {
    const t = parseTarget(raw);
    expect(isTargetProblem(t)).toBe(true);
    expect((t as { reason: string }).reason).toContain(why);
  });
});

describe('route: what the proxy answers itself', () => {
  const ctx = { oauthPaths: new Set(['/auth/token']) };
  const canonical = (p: string) => (parseTarget(p) as Target).canonical;
  it.each([
    ['GET', '/.well-known/matrix/client', 'well-known'],
    ['POST', '/.well-known/matrix/client', 'forward'],
    ['GET', '/_mxs/health', 'health'],
    ['POST', '/_mxs/health', 'mxs-unknown'],
    ['GET', '/_mxs/metrics', 'mxs-unknown'],
    ['POST', '/_matrix/client/v3/login', 'session-endpoint'],
    ['GET', '/_matrix/client/v3/login', 'forward'],
    ['GET', '/_matrix/client/r0/login', 'forward'],
    ['GET', '/_matrix/client/v3/login/sso/redirect', 'session-endpoint'],
    ['POST', '/_matrix/client/v1/login/get_token', 'session-endpoint'],
    ['POST', '/_matrix/client/api/v1/login', 'session-endpoint'],
    ['POST', '/_matrix/client/v3/logout', 'session-endpoint'],
    ['POST', '/_matrix/client/v3/logout/all', 'session-endpoint'],
    ['POST', '/_matrix/client/v3/refresh', 'session-endpoint'],
    ['POST', '/_matrix/client/v1/refresh', 'session-endpoint'],
    ['POST', '/_matrix/client/r0/refresh', 'session-endpoint'],
    ['POST', '/_matrix/client/unstable/org.matrix.msc2918/refresh', 'session-endpoint'],
    ['POST', '/_matrix/client/unstable/org.matrix.msc2918.refresh_token/refresh', 'session-endpoint'],
    ['POST', '/_matrix/client/r0/tokenrefresh', 'session-endpoint'],
    ['POST', '/oauth2/token', 'session-endpoint'],
    ['POST', '/auth/token', 'session-endpoint'],
    ['TRACE', '/_matrix/client/v3/sync', 'method-refused'],
    ['GET', '/_matrix/client/v3/sync', 'forward'],
    ['PUT', '/_matrix/client/v3/pushrules/global/override/refresh', 'forward'],
    ['GET', '/_matrix/client/v3/rooms/!r:x/messages', 'forward'],
  ])('%s %s → %s', (method, path, kind) => {
    expect(route(method, canonical(path), ctx).kind).toBe(kind);
  });
});

describe('ProxyToken: constant-time comparison of every credential a request carries', () => {
  const t = new ProxyToken('the-proxy-token-1234');
  const cred = (authorization: string[] | undefined, query: string[] = []) => t.credential({ authorization: authorization?.[0] }, { authorization }, query).kind;
  it.each([
    ['nothing', undefined, [], 'none'],
    ['the proxy token', ['Bearer the-proxy-token-1234'], [], 'proxy'],
    ['the proxy token, scheme in lower case', ['bearer the-proxy-token-1234'], [], 'proxy'],
    ['the proxy token in the query', undefined, ['the-proxy-token-1234'], 'proxy'],
    ['header and query, both the proxy token', ['Bearer the-proxy-token-1234'], ['the-proxy-token-1234'], 'proxy'],
    ['a wrong token', ['Bearer nope'], [], 'other'],
    ['a prefix of the proxy token', ['Bearer the-proxy-token-123'], [], 'other'],
    ['the proxy token with more after it', ['Bearer the-proxy-token-12345'], [], 'other'],
    ['Basic', ['Basic dGhlOnRva2Vu'], [], 'other'],
    ['an empty Bearer', ['Bearer '], [], 'other'],
    ['two headers, one wrong', ['Bearer the-proxy-token-1234', 'Bearer nope'], [], 'other'],
    ['the proxy token in the header, a wrong one in the query', ['Bearer the-proxy-token-1234'], ['nope'], 'other'],
  ])('%s → %s', (_case, authorization, query, kind) => {
    expect(cred(authorization, query)).toBe(kind);
  });

  it('new tokens are 256 random bits, distinct; MXS_PROXY_TOKEN is checked', () => {
    const a = newProxyToken();
    expect(a).toMatch(/^mxp_[A-Za-z0-9_-]{43}$/);
    expect(newProxyToken()).not.toBe(a);
    expect(checkProxyToken('0123456789abcdef')).toBe('0123456789abcdef');
    for (const bad of ['short', 'has a space in it!!', 'tab\there-and-more-chars', 'ünïcode-token-value']) expect(() => checkProxyToken(bad)).toThrow(MxsError);
  });
});

describe('headers (RFC 9110 §7.6.1)', () => {
  it('upstream: hop-by-hop, Connection-named, Proxy-*, Host, Authorization, Content-Length and Expect are dropped; the rest keeps order and duplicates', () => {
    const raw = ['Host', 'client', 'Connection', 'keep-alive, X-Drop', 'X-Drop', '1', 'Keep-Alive', 'timeout=5', 'TE', 'trailers', 'Trailer', 'X', 'Transfer-Encoding', 'chunked', 'Upgrade', 'h2c', 'Proxy-Authorization', 'Basic x', 'Authorization', 'Bearer t', 'Content-Length', '5', 'Expect', '100-continue', 'X-A', '1', 'Accept', 'application/json', 'X-A', '2'];
    expect(upstreamHeaders(raw)).toEqual(['X-A', '1', 'Accept', 'application/json', 'X-A', '2']);
  });

  it('downstream: hop-by-hop and Connection-named dropped; Content-Length and Set-Cookie lists kept', () => {
    expect(downstreamHeaders({ connection: 'close, x-up', 'x-up': '1', 'transfer-encoding': 'chunked', 'keep-alive': 'timeout=4', 'proxy-authenticate': 'Basic', 'content-length': '12', 'set-cookie': ['a=1', 'b=2'], 'content-type': 'application/json' })).toEqual({
      'content-length': '12',
      'set-cookie': ['a=1', 'b=2'],
      'content-type': 'application/json',
    });
  });

  it.each([
    ['since=x', 30_000],
    ['timeout=30000&since=x', 60_000],
    ['since=x&timeout=5000', 35_000],
    ['timeout=99999999999', 30_000],
    ['xtimeout=5000', 30_000],
  ])('the homeserver may take --timeout plus the long-poll asked for: %s → %d ms', (query, ms) => {
    expect(headersTimeoutFor(query, 30_000)).toBe(ms);
  });
});

describe('--listen', () => {
  it.each([
    ['127.0.0.1:8008', { host: '127.0.0.1', port: 8008 }, 'http://127.0.0.1:8008'],
    ['localhost:0', { host: '127.0.0.1', port: 0 }, 'http://127.0.0.1:0'],
    ['127.1.2.3:9', { host: '127.1.2.3', port: 9 }, 'http://127.1.2.3:9'],
    ['[::1]:8008', { host: '::1', port: 8008 }, 'http://[::1]:8008'],
  ])('%s is loopback', (value, spec, url) => {
    const parsed = parseListen(value, false);
    expect(parsed).toEqual({ kind: 'tcp', ...spec });
    expect(urlOf(parsed, spec.port)).toBe(url);
  });

  it.each(['0.0.0.0:8008', '10.0.0.1:80', '[::]:8008', 'example.org:80', '[::ffff:10.0.0.1]:80'])('%s is refused without --insecure (exit 2), allowed with it', (value) => {
    const err = (() => {
      try {
        parseListen(value, false);
      } catch (e) {
        return e as MxsError;
      }
      throw new Error('accepted');
    })();
    expect(err.exitCode).toBe(2);
    expect(err.hint).toMatch(/--insecure/);
    expect(parseListen(value, true).kind).toBe('tcp');
  });

  it.each(['8008', '127.0.0.1', '127.0.0.1:70000', '[127.0.0.1]:80', ':80'])('%s is not HOST:PORT (exit 2)', (value) => {
    expect(() => parseListen(value, true)).toThrow(MxsError);
  });

  it.each([
    ['::ffff:127.0.0.1', true],
    ['0:0:0:0:0:0:0:1', true],
    ['127.255.255.254', true],
    ['128.0.0.1', false],
    ['::2', false],
  ])('isLoopback(%s) → %s', (host, expected) => {
    expect(isLoopback(host)).toBe(expected);
  });
});

describe('the request log and the redactor', () => {
  it('one line: time, method, path (escaped), status (- when none was sent), ms', () => {
    expect(requestLine({ at: Date.UTC(2030, 0, 1, 12), method: 'GET', path: '/_matrix/client/v3/sync', status: 200, ms: 31 })).toBe('2030-01-01T12:00:00.000Z GET /_matrix/client/v3/sync 200 31ms');
    expect(requestLine({ at: Date.UTC(2030, 0, 1, 12), method: 'PUT', path: '/x\x1b[2J', status: 0, ms: 5 })).toBe('2030-01-01T12:00:00.000Z PUT /x\\x1b[2J - 5ms');
  });

  it('RecentSecrets hides the pinned token and the last N others, and forgets older ones', () => {
    const s = new RecentSecrets(2);
    s.pin('PINNEDTOKEN');
    s.add('FIRST-secret', 'SECOND-secret');
    s.add('THIRD-secret');
    expect(s.redact('PINNEDTOKEN FIRST-secret SECOND-secret THIRD-secret')).toBe('[REDACTED] FIRST-secret [REDACTED] [REDACTED]');
    expect(s.redact('syt_shaped_like_a_token')).toBe('[REDACTED]');
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe('SessionTokens: the access token in memory, refreshed through the session core', () => {
  const rule = refreshWhenBelow(60 * SEC);
  const tokensFor = async (notices: string[] = []) => new SessionTokens('default', w.deps, rule, await loadSession('default', w.deps), (m) => notices.push(m));
  const refreshes = () => w.requests().filter((r) => r.path.endsWith('/refresh'));

  it('a token that is not due is used without any I/O', async () => {
    await w.seed({ lifetimeMs: 300 * SEC });
    const tokens = await tokensFor();
    expect(await tokens.current()).toBe('syt_old_access');
    expect(refreshes()).toHaveLength(0);
  });

  it('50 concurrent requests on a due token: one refresh, all get the new token (single flight)', async () => {
    await w.seed({ lifetimeMs: 300 * SEC });
    const tokens = await tokensFor();
    w.clock.advance(250 * SEC);
    replyJson(w.agent, HS, 'POST', V3_REFRESH, 200, NEW);
    const got = await Promise.all(Array.from({ length: 50 }, () => tokens.current()));
    expect(new Set(got)).toEqual(new Set(['syt_new_access']));
    expect(refreshes()).toHaveLength(1);
    expect(tokens.refreshes).toBe(1);
    expect((await w.stored()).secret!.accessToken).toBe('syt_new_access');
  });

  it('refusals of the same token share one refresh; a refusal of an old token needs none', async () => {
    await w.seed({ lifetimeMs: 300 * SEC });
    const tokens = await tokensFor();
    replyJson(w.agent, HS, 'POST', V3_REFRESH, 200, NEW);
    const got = await Promise.all(Array.from({ length: 10 }, () => tokens.afterRejection('syt_old_access')));
    expect(new Set(got)).toEqual(new Set(['syt_new_access']));
    expect(await tokens.afterRejection('syt_old_access')).toBe('syt_new_access');
    expect(refreshes()).toHaveLength(1);
  });

  it('network trouble while the token is still valid: the token is used, one notice, a backoff before the next try', async () => {
    await w.seed({ lifetimeMs: 300 * SEC });
    const notices: string[] = [];
    const tokens = await tokensFor(notices);
    w.clock.advance(250 * SEC);
    for (let i = 0; i < 3; i++) replyJson(w.agent, HS, 'POST', V3_REFRESH, 503, { errcode: 'M_UNKNOWN', error: 'busy' });
    expect(await tokens.current()).toBe('syt_old_access');
    expect(await tokens.current()).toBe('syt_old_access'); // within the backoff: no new attempt
    expect(refreshes()).toHaveLength(3); // one refresh, the transport's 3 attempts
    expect(notices).toEqual([expect.stringMatching(/could not refresh the access token/)]);
    w.clock.advance(1 * SEC);
    replyJson(w.agent, HS, 'POST', V3_REFRESH, 200, NEW);
    expect(await tokens.current()).toBe('syt_new_access');
    expect(notices.at(-1)).toMatch(/could be refreshed again/);
  });

  it('network trouble once the token has expired: RefreshUnavailable (the proxy answers 502), the session goes on', async () => {
    await w.seed({ lifetimeMs: 300 * SEC });
    const tokens = await tokensFor();
    w.clock.advance(301 * SEC);
    for (let i = 0; i < 3; i++) replyJson(w.agent, HS, 'POST', V3_REFRESH, 502, { errcode: 'M_UNKNOWN', error: 'gateway' });
    expect(await rejectionOf(() => tokens.current())).toBeInstanceOf(RefreshUnavailable);
    expect(tokens.endedBy).toBeNull();
  });

  it('a refused refresh ends the session: listeners hear it once, every caller gets SessionEnded, health says not refreshable', async () => {
    await w.seed({ lifetimeMs: 300 * SEC });
    const tokens = await tokensFor();
    const ended: MxsError[] = [];
    tokens.onEnd((e) => ended.push(e));
    replyJson(w.agent, HS, 'POST', V3_REFRESH, 403, { errcode: 'M_FORBIDDEN', error: 'refresh token isn\'t valid anymore' });
    const e = await rejectionOf(() => tokens.afterRejection('syt_old_access'));
    expect(e).toBeInstanceOf(SessionEnded);
    expect((e as SessionEnded).reason.exitCode).toBe(4);
    expect(await rejectionOf(() => tokens.current())).toBeInstanceOf(SessionEnded);
    expect(ended).toHaveLength(1);
    expect(tokens.health()).toMatchObject({ userId: '@alice:example.org', deviceId: 'DEVICE1', refreshable: false });
  });

  it('a token stored by another process is picked up from the sessions file (in the background, at most every 2 s)', async () => {
    await w.seed({ lifetimeMs: 300 * SEC });
    const tokens = await tokensFor();
    await w.seed({ accessToken: 'syt_from_elsewhere', lifetimeMs: 300 * SEC, issuedAt: w.clock.now() + 1 });
    expect(await tokens.current()).toBe('syt_old_access');
    w.clock.advance(2001);
    await tokens.current();
    await tokens.settled();
    expect(await tokens.current()).toBe('syt_from_elsewhere');
    expect(refreshes()).toHaveLength(0);
  });

  it('the profile logged out, or logged in as another device, meanwhile: the session has ended for the proxy', async () => {
    await w.seed({ lifetimeMs: 300 * SEC });
    const tokens = await tokensFor();
    const record = (await w.stored()).record!;
    await w.deps.sessions.write({ ...record, deviceId: 'OTHERDEVICE', issuedAt: new Date(w.clock.now() + 5).toISOString() });
    w.clock.advance(2001);
    await tokens.current();
    await tokens.settled();
    expect(tokens.endedBy?.message).toMatch(/now holds another session/);
    expect(await rejectionOf(() => tokens.current())).toBeInstanceOf(SessionEnded);
  });
});

// ---------------------------------------------------------------------------------------------------------------

/** What the MockAgent saw: the proxy sends headers as a flat [name, value…] list and bodies as Buffers. */
function authorizationOf(headers: unknown): string | undefined {
  if (!Array.isArray(headers)) return (headers as Record<string, string>).authorization;
  for (let i = 0; i < headers.length; i += 2) if (String(headers[i]).toLowerCase() === 'authorization') return String(headers[i + 1]);
  return undefined;
}
const text = (body: unknown) => (Buffer.isBuffer(body) ? body.toString('utf8') : String(body));

describe('runProxy in process, the homeserver played by a MockAgent', () => {
  async function started(opts: { drainMs?: number } = {}) {
    let info: (ProxyStartInfo & { homeserver: string }) | undefined;
    let stop: (signal: string) => void = () => {};
    const notices: string[] = [];
    const log: string[] = [];
    const done = runProxy(
      { profile: 'default', listen: { kind: 'tcp', host: '127.0.0.1', port: 0 }, proxyToken: 'proxy-token-for-tests', tokenFile: null, drainMs: opts.drainMs ?? 1000, upstream: w.agent.get(HS) },
      w.deps,
      {
        onStart: (i) => (info = i),
        onRequest: (e) => log.push(requestLine(e)),
        onStopSignal: (s) => {
          stop = s;
          return () => {};
        },
        notice: (m) => notices.push(m),
      },
    );
    done.catch(() => {});
    for (let i = 0; !info && i < 200; i++) await new Promise((r) => setTimeout(r, 5));
    if (!info) throw new Error(`the proxy did not start: ${String(await done.catch((e) => e))}`);
    const call = async (path: string, init: { method?: string; token?: string | null; body?: string } = {}) => {
      const token = init.token === undefined ? 'proxy-token-for-tests' : init.token;
      const res = await request(info!.url + path, { method: (init.method ?? 'GET') as 'GET', headers: token === null ? {} : { authorization: `Bearer ${token}` }, body: init.body });
      return { status: res.statusCode, json: (await res.body.json().catch(() => undefined)) as any };
    };
    return { info: info!, call, done, stop: (s = 'SIGTERM') => stop(s), notices, log };
  }

  it('swaps the proxy token for the session\'s, and stops on a signal with the run\'s figures', async () => {
    await w.seed({ lifetimeMs: 300 * SEC });
    const p = await started();
    expect(p.info).toMatchObject({ profile: 'default', url: expect.stringMatching(/^http:\/\/127\.0\.0\.1:\d+$/), userId: '@alice:example.org', deviceId: 'DEVICE1', tokenFile: null, homeserver: HS });
    replyJsonWith(w.agent, HS, 'GET', '/_matrix/client/v3/account/whoami', (req) => ({ status: 200, body: { seen: authorizationOf(req.headers) } }));
    expect(await p.call('/_matrix/client/v3/account/whoami')).toEqual({ status: 200, json: { seen: 'Bearer syt_old_access' } });
    p.stop('SIGINT');
    expect(await p.done).toEqual({ signal: 'SIGINT', cut: 0, refreshes: 0 });
    expect(p.log).toEqual([expect.stringMatching(/ GET \/_matrix\/client\/v3\/account\/whoami 200 \d+ms$/)]);
  });

  it('an upstream 401 M_UNKNOWN_TOKEN: refresh once, replay once with the same body', async () => {
    await w.seed({ lifetimeMs: 300 * SEC });
    const p = await started();
    const seen: unknown[] = [];
    w.agent.get(HS).intercept({ method: 'PUT', path: '/_matrix/client/v3/profile/x/displayname' }).reply((o) => {
      seen.push([authorizationOf(o.headers), text(o.body)]);
      return { statusCode: 401, data: JSON.stringify({ errcode: 'M_UNKNOWN_TOKEN', error: 'Token is not active' }), responseOptions: { headers: { 'content-type': 'application/json' } } };
    });
    w.agent.get(HS).intercept({ method: 'PUT', path: '/_matrix/client/v3/profile/x/displayname' }).reply((o) => {
      seen.push([authorizationOf(o.headers), text(o.body)]);
      return { statusCode: 200, data: '{}', responseOptions: { headers: { 'content-type': 'application/json' } } };
    });
    replyJson(w.agent, HS, 'POST', V3_REFRESH, 200, NEW);
    expect((await p.call('/_matrix/client/v3/profile/x/displayname', { method: 'PUT', body: '{"displayname":"A"}' })).status).toBe(200);
    expect(seen).toEqual([
      ['Bearer syt_old_access', '{"displayname":"A"}'],
      ['Bearer syt_new_access', '{"displayname":"A"}'],
    ]);
    p.stop();
    expect((await p.done).refreshes).toBe(1);
  });

  it('the session ends: requests get 401, runProxy rejects with exit 4 and a hint to log in', async () => {
    await w.seed({ lifetimeMs: 300 * SEC });
    const p = await started();
    replyJson(w.agent, HS, 'GET', '/_matrix/client/v3/account/whoami', 401, { errcode: 'M_UNKNOWN_TOKEN', error: 'Invalid access token passed.' });
    replyJson(w.agent, HS, 'POST', V3_REFRESH, 401, { errcode: 'M_UNKNOWN_TOKEN', error: 'refresh token does not exist' });
    expect(await p.call('/_matrix/client/v3/account/whoami')).toMatchObject({ status: 401, json: { errcode: 'M_UNKNOWN_TOKEN', soft_logout: false } });
    const e = (await rejectionOf(() => p.done)) as MxsError;
    expect(e.exitCode).toBe(4);
    expect(e.hint).toMatch(/mxs login/);
    expect(p.notices.at(-1)).toMatch(/session has ended/);
  });

  it('not logged in: exit 4 before listening', async () => {
    const e = (await rejectionOf(() =>
      runProxy({ profile: 'default', listen: { kind: 'tcp', host: '127.0.0.1', port: 0 }, proxyToken: 'proxy-token-for-tests', tokenFile: null, drainMs: 0 }, w.deps, {
        onStart: () => {
          throw new Error('started');
        },
        onStopSignal: () => () => {},
        notice: () => {},
      }),
    )) as MxsError;
    expect(e.code).toBe('not_logged_in');
    expect(e.exitCode).toBe(4);
  });

  it('an address in use is a usage error (exit 2)', async () => {
    await w.seed({ lifetimeMs: 300 * SEC });
    const p = await started();
    const port = Number(new URL(p.info.url).port);
    const e = (await rejectionOf(() =>
      runProxy({ profile: 'default', listen: { kind: 'tcp', host: '127.0.0.1', port }, proxyToken: 'proxy-token-for-tests', tokenFile: null, drainMs: 0, upstream: w.agent.get(HS) }, w.deps, {
        onStart: () => {},
        onStopSignal: () => () => {},
        notice: () => {},
      }),
    )) as MxsError;
    expect(e.exitCode).toBe(2);
    expect(e.message).toMatch(/in use/);
    p.stop();
    await p.done;
  });
});

