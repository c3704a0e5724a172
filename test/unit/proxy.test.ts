// `mxs proxy` in process: the rules (request targets, credentials, routes, hop-by-hop headers, --listen),
// the session's tokens (single flight, replay after a refusal, network trouble, the end of a session), the
// log line and the bounded redactor, and runProxy itself against an undici MockAgent standing in for the
// homeserver. The spawned CLI against real servers is test/integration/proxy.test.ts.
import { describe, expect, it } from '@jest/globals';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { createServer, connect, type AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import { Pool, request, type Dispatcher } from 'undici';
import { MxsError } from '../../src/errors.js';
import { parseListen, urlOf } from '../../src/proxy/listen.js';
import { RecentSecrets, requestLine, startLines } from '../../src/proxy/present.js';
import { Redactor } from '../../src/redact.js';
import { downstreamHeaders, headersTimeoutFor, hostGuard, isTargetProblem, parseTarget, ProxyToken, route, upstreamHeaders, type Target } from '../../src/proxy/rules.js';
import { checkProxyToken, newProxyToken, runProxy, type ProxyStartInfo } from '../../src/proxy/run.js';
import { proxyCommand } from '../../src/cli/commands/proxy.js';
import { runCommand } from '../support/run-command.js';
import { HS, hintText, rejectionOf, replyJson, replyJsonWith, type UnitWorld, worldPerTest } from '../support/unit-deps.js';

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

  // Synapse (Twisted) splits the query on ';' as well as '&': a token after a ';' is a token too.
  it.each([
    ['/x?x=1;access_token=abc', { query: 'x=1', queryTokens: ['abc'] }],
    ['/x?access_token=abc;x=1&y=2', { query: 'x=1&y=2', queryTokens: ['abc'] }],
    ['/x?a=1&access_token=t;b=2', { query: 'a=1;b=2', queryTokens: ['t'] }],
    ['/x?a=1;access_token=t1&access_token=t2;b', { query: 'a=1;b', queryTokens: ['t1', 't2'] }],
    ['/x?a=1;b=2', { query: 'a=1;b=2', queryTokens: [] }],
    ['/x?;a=1&', { query: ';a=1&', queryTokens: [] }],
  ])('access_token is found whether the query is split on & or ;: %s', (raw, expected) => {
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
    // An admin minting a session as another user: a login like /login.
    ['POST', '/_synapse/admin/v1/users/@bob:example.org/login', 'session-endpoint'],
    ['POST', '/_synapse/admin/v1/users/%40bob%3Aexample.org/login', 'session-endpoint'],
    ['POST', '/_synapse//admin/V1/users/@bob:example.org/LOGIN/', 'session-endpoint'],
    ['GET', '/_synapse/admin/v2/users/@bob:example.org', 'forward'],
    ['GET', '/_synapse/admin/v1/users/@bob:example.org/joined_rooms', 'forward'],
    ['TRACE', '/_matrix/client/v3/sync', 'method-refused'],
    ['GET', '/_matrix/client/v3/sync', 'forward'],
    ['PUT', '/_matrix/client/v3/pushrules/global/override/refresh', 'forward'],
    ['GET', '/_matrix/client/v3/rooms/!r:x/messages', 'forward'],
  ])('%s %s → %s', (method, path, kind) => {
    expect(route(method, canonical(path), ctx).kind).toBe(kind);
  });
});

describe('hostGuard: a Host that names anything but the address listened on is refused (DNS rebinding)', () => {
  it.each([
    ['http://127.0.0.1:8008', '127.0.0.1:8008', true],
    ['http://127.0.0.1:8008', 'localhost:8008', true],
    ['http://127.0.0.1:8008', 'LOCALHOST:8008', true],
    ['http://127.0.0.1:8008', 'evil.example:8008', false],
    ['http://127.0.0.1:8008', 'rebound.attacker.example:8008', false],
    ['http://127.0.0.1:8008', '127.0.0.1:8009', false],
    ['http://127.0.0.1:8008', '127.0.0.1', false],
    ['http://127.0.0.1:8008', 'localhost', false],
    ['http://127.0.0.1:8008', '127.0.0.2:8008', false],
    ['http://127.0.0.1:8008', 'evil.example@127.0.0.1:8008', false],
    ['http://127.0.0.1:8008', '127.0.0.1:8008/x', false],
    ['http://127.0.0.1:8008', '', false],
    ['http://127.0.0.1:8008', undefined, false],
    ['http://127.0.0.1:80', '127.0.0.1', true],
    ['http://127.0.0.1:80', 'localhost', true],
    ['http://[::1]:8008', '[::1]:8008', true],
    ['http://[::1]:8008', '[0:0:0:0:0:0:0:1]:8008', true],
    ['http://[::1]:8008', 'localhost:8008', true],
    ['http://[::1]:8008', '::1:8008', false],
    ['http://[::1]:8008', '127.0.0.1:8008', false],
    // --insecure on a wildcard address: any IP literal of this machine (an IP cannot be rebound), and localhost.
    ['http://0.0.0.0:8008', '192.0.2.7:8008', true],
    ['http://0.0.0.0:8008', '[2001:db8::1]:8008', true],
    ['http://0.0.0.0:8008', 'localhost:8008', true],
    ['http://0.0.0.0:8008', 'myhost.example:8008', false],
    ['http://0.0.0.0:8008', '192.0.2.7:9000', false],
    ['http://[::]:8008', '192.0.2.7:8008', true],
    ['http://192.0.2.7:8008', '192.0.2.7:8008', true],
    ['http://192.0.2.7:8008', '192.0.2.8:8008', false],
    // A Unix socket: no browser can reach it, and clients send what they like (curl: localhost; others the path).
    ['http+unix://%2Ftmp%2Fp.sock', 'localhost', true],
    ['http+unix://%2Ftmp%2Fp.sock', '%2Ftmp%2Fp.sock', true],
    ['http+unix://%2Ftmp%2Fp.sock', undefined, true],
    // Not listening yet: nothing is accepted.
    ['', '127.0.0.1:8008', false],
  ])('listening on %s, Host %s → %s', (url, host, allowed) => {
    expect(hostGuard(url)(host)).toBe(allowed);
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
    ['since=x;timeout=5000', 35_000],
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
    expect(hintText(err)).toMatch(/--insecure/);
    expect(parseListen(value, true).kind).toBe('tcp');
  });

  it.each(['8008', '127.0.0.1', '127.0.0.1:70000', '[127.0.0.1]:80', ':80'])('%s is not HOST:PORT (exit 2)', (value) => {
    expect(() => parseListen(value, true)).toThrow(MxsError);
  });
});

describe('the request log and the redactor', () => {
  it('one line: time, method, path (escaped), status (- when none was sent), ms', () => {
    expect(requestLine({ at: Date.UTC(2030, 0, 1, 12), method: 'GET', path: '/_matrix/client/v3/sync', status: 200, ms: 31 })).toBe('2030-01-01T12:00:00.000Z GET /_matrix/client/v3/sync 200 31ms');
    expect(requestLine({ at: Date.UTC(2030, 0, 1, 12), method: 'PUT', path: '/x\x1b[2J', status: 0, ms: 5 })).toBe('2030-01-01T12:00:00.000Z PUT /x\\x1b[2J - 5ms');
  });

  const shown = { kind: 'shown', token: 'mxp_the_proxy_token_value' } as const;
  it.each([
    ['/run/mxs/proxy.sock', shown, null, 'curl --unix-socket /run/mxs/proxy.sock -H "Authorization: Bearer $TOKEN" http://localhost/_matrix/client/v3/account/whoami'],
    ["/tmp/my dir/it's.sock", shown, null, "curl --unix-socket '/tmp/my dir/it'\\''s.sock' -H \"Authorization: Bearer $TOKEN\" http://localhost/_matrix/client/v3/account/whoami"],
    ['/run/p.sock', { kind: 'env' } as const, null, 'curl --unix-socket /run/p.sock -H "Authorization: Bearer $MXS_PROXY_TOKEN" http://localhost/_matrix/client/v3/account/whoami'],
    ['/run/p.sock', shown, '/home/a/bot token', 'curl --unix-socket /run/p.sock -H "Authorization: Bearer $(cat \'/home/a/bot token\')" http://localhost/_matrix/client/v3/account/whoami'],
  ])('the --socket start lines give a curl example that works as printed, through the redactor: %s', (path, token, tokenFile, example) => {
    const info = { profile: 'default', url: `http+unix://${encodeURIComponent(path)}`, userId: '@a:x', deviceId: 'D', tokenFile, homeserver: HS };
    const redactor = new Redactor();
    redactor.add('mxp_the_proxy_token_value');
    const lines = startLines(info, token, 10_000).map((l) => redactor.redact(l));
    expect(lines).toContain(`  e.g.: ${example}`);
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

// ---------------------------------------------------------------------------------------------------------------

/** What the MockAgent saw: the proxy sends headers as a flat [name, value…] list and bodies as Buffers. */
function authorizationOf(headers: unknown): string | undefined {
  if (!Array.isArray(headers)) return (headers as Record<string, string>).authorization;
  for (let i = 0; i < headers.length; i += 2) if (String(headers[i]).toLowerCase() === 'authorization') return String(headers[i + 1]);
  return undefined;
}
/** Sends raw bytes to the proxy and returns every byte that came back until the connection closed. */
function rawExchange(url: string, bytes: Buffer): Promise<Buffer> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(u.port), u.hostname);
    const chunks: Buffer[] = [];
    socket.on('data', (d) => chunks.push(d));
    socket.on('error', reject);
    socket.on('close', () => resolve(Buffer.concat(chunks)));
    socket.write(bytes);
  });
}
const text = (body: unknown) => (Buffer.isBuffer(body) ? body.toString('utf8') : String(body));

describe('runProxy in process, the homeserver played by a MockAgent', () => {
  async function started(opts: { drainMs?: number; upstream?: Dispatcher; tokenFile?: string } = {}) {
    let info: (ProxyStartInfo & { homeserver: string }) | undefined;
    let stop: (signal: string) => void = () => {};
    const notices: string[] = [];
    const log: string[] = [];
    const done = runProxy(
      { profile: 'default', listen: { kind: 'tcp', host: '127.0.0.1', port: 0 }, proxyToken: 'proxy-token-for-tests', tokenFile: opts.tokenFile ?? null, drainMs: opts.drainMs ?? 1000, upstream: opts.upstream ?? w.agent.get(HS) },
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

  it('--token-file in directories that do not exist yet: they are created private (0700), the file 0600, removed at exit', async () => {
    await w.seed({ lifetimeMs: 300 * SEC });
    const file = join(w.dir, 'home', '.config', 'mybot', 'proxy-token');
    const p = await started({ tokenFile: file });
    expect(readFileSync(file, 'utf8')).toBe('proxy-token-for-tests');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(dirname(file)).mode & 0o777).toBe(0o700);
    expect(statSync(join(w.dir, 'home')).mode & 0o777).toBe(0o700);
    p.stop('SIGTERM');
    await p.done;
    expect(existsSync(file)).toBe(false);
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
    expect(hintText(e)).toMatch(/mxs login/);
    expect(p.notices.at(-1)).toMatch(/session has ended/);
  });

  it('a Host that names anything but the proxy\'s address → 421 (Matrix JSON), with or without a token, nothing forwarded', async () => {
    await w.seed({ lifetimeMs: 300 * SEC });
    const p = await started();
    const port = new URL(p.info.url).port;
    replyJson(w.agent, HS, 'GET', '/_matrix/client/versions', 200, { versions: ['v1.11'] }).times(2);
    for (const host of [`rebound.attacker.example:${port}`, `127.0.0.1:1`]) {
      for (const auth of ['Authorization: Bearer proxy-token-for-tests\r\n', '']) {
        const answer = (await rawExchange(p.info.url, Buffer.from(`GET /_matrix/client/versions HTTP/1.1\r\nHost: ${host}\r\n${auth}Connection: close\r\n\r\n`))).toString('latin1');
        expect(answer).toMatch(/^HTTP\/1\.1 421 /);
        expect(JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4))).toMatchObject({ errcode: 'M_FORBIDDEN', error: expect.stringContaining(`127.0.0.1:${port}`) });
      }
    }
    expect(w.requests()).toHaveLength(0);
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`]) {
      const answer = (await rawExchange(p.info.url, Buffer.from(`GET /_matrix/client/versions HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`))).toString('latin1');
      expect(answer).toMatch(/^HTTP\/1\.1 200 /);
    }
    p.stop();
    await p.done;
  });

  it('header bytes that are not ASCII pass unchanged both ways (UTF-8 and bare latin1 bytes alike)', async () => {
    await w.seed({ lifetimeMs: 300 * SEC });
    const utf8 = Buffer.from('café ☕', 'utf8');
    const latin1 = Buffer.from([0x63, 0x61, 0x66, 0xe9]);
    let seen = Buffer.alloc(0);
    const homeserver = createServer((socket) => {
      socket.on('data', (d) => {
        seen = Buffer.concat([seen, d]);
        if (!seen.includes('\r\n\r\n')) return;
        socket.end(Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nX-Back-Utf8: '), utf8, Buffer.from('\r\nX-Back-Latin1: '), latin1, Buffer.from('\r\nConnection: close\r\n\r\n2\r\n{}\r\n0\r\n\r\n')]));
      });
    });
    await new Promise<void>((r) => homeserver.listen(0, '127.0.0.1', r));
    const pool = new Pool(`http://127.0.0.1:${(homeserver.address() as AddressInfo).port}`);
    try {
      const p = await started({ upstream: pool });
      const host = new URL(p.info.url).host;
      const answer = await rawExchange(p.info.url, Buffer.concat([Buffer.from(`GET /_matrix/client/v3/account/whoami HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer proxy-token-for-tests\r\nX-Name-Utf8: `), utf8, Buffer.from('\r\nX-Name-Latin1: '), latin1, Buffer.from('\r\nConnection: close\r\n\r\n')]));
      expect(answer.toString('latin1')).toMatch(/^HTTP\/1\.1 200 /);
      expect(seen.includes(Buffer.concat([Buffer.from('X-Name-Utf8: '), utf8, Buffer.from('\r\n')]))).toBe(true);
      expect(seen.includes(Buffer.concat([Buffer.from('X-Name-Latin1: '), latin1, Buffer.from('\r\n')]))).toBe(true);
      expect(answer.includes(Buffer.concat([Buffer.from('x-back-utf8: '), utf8, Buffer.from('\r\n')]))).toBe(true);
      expect(answer.includes(Buffer.concat([Buffer.from('x-back-latin1: '), latin1, Buffer.from('\r\n')]))).toBe(true);
      p.stop();
      await p.done;
    } finally {
      await pool.destroy();
      homeserver.close();
    }
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

  it('started on an expired token the server refuses to refresh: exit 4 before listening, with a hint to log in', async () => {
    await w.seed({ lifetimeMs: 300 * SEC });
    w.clock.advance(301 * SEC);
    replyJson(w.agent, HS, 'POST', V3_REFRESH, 401, { errcode: 'M_UNKNOWN_TOKEN', error: 'refresh token does not exist' });
    const e = (await rejectionOf(() =>
      runProxy({ profile: 'default', listen: { kind: 'tcp', host: '127.0.0.1', port: 0 }, proxyToken: 'proxy-token-for-tests', tokenFile: null, drainMs: 0, upstream: w.agent.get(HS) }, w.deps, {
        onStart: () => {
          throw new Error('started');
        },
        onStopSignal: () => () => {},
        notice: () => {},
      }),
    )) as MxsError;
    expect(e).toMatchObject({ exitCode: 4 });
    expect(hintText(e)).toBe(`Run: mxs login ${HS}`);
  });

  it('started on an expired token while the server is down: it starts, says so once (the keeper\'s words), and requests get 502', async () => {
    await w.seed({ lifetimeMs: 300 * SEC });
    w.clock.advance(301 * SEC);
    for (let i = 0; i < 3; i++) replyJson(w.agent, HS, 'POST', V3_REFRESH, 503, { errcode: 'M_UNKNOWN', error: 'busy' });
    const p = await started();
    expect(p.notices).toEqual([expect.stringMatching(/^could not refresh the access token of profile "default": .*; the current token has expired\. Retrying\.$/)]);
    expect(await p.call('/_matrix/client/v3/account/whoami')).toMatchObject({ status: 502, json: { errcode: 'M_UNKNOWN' } });
    p.stop();
    await p.done;
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


describe('mxs proxy --token-file', () => {
  it.each(['~/.config/mybot/proxy-token', '~'])('%s with the ~ unexpanded (quoted, or after =) is a usage error that says so, before anything is written', async (path) => {
    const r = await runCommand(proxyCommand, [`--token-file=${path}`], { env: { MXS_CONFIG_DIR: w.dir } });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/^Error: --token-file .*~.* the shell did not expand ~/m);
    expect(r.stderr).toContain('$HOME/');
    expect(existsSync(join(process.cwd(), '~'))).toBe(false);
  });
});
