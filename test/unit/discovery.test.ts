// Client-server API §3.2 server discovery and the contract's http:// rule (src/matrix/discovery.ts).
import { describe, expect, it } from '@jest/globals';
import { MxsError } from '../../src/errors.js';
import { isLoopbackHost } from '../../src/http/loopback.js';
import { checkBaseUrl, resolveHomeserver } from '../../src/matrix/discovery.js';
import { parseListen } from '../../src/proxy/listen.js';
import { rejectionOf, replyJson, replyVersions, type UnitWorld, worldPerTest } from '../support/unit-deps.js';

const WELL_KNOWN = '/.well-known/matrix/client';
const VERSIONS = '/_matrix/client/versions';

let w: UnitWorld;
worldPerTest((made) => (w = made));

const resolve = (server: string, insecure = false) => resolveHomeserver(server, insecure, w.deps.http);
const paths = () => w.requests().map((r) => `${r.method} ${r.url}`);

describe('a server name', () => {
  it.each([
    ['https://matrix.example.org', 'https://matrix.example.org'],
    ['https://matrix.example.org/', 'https://matrix.example.org'],
    ['https://matrix.example.org///', 'https://matrix.example.org'],
    ['https://example.org/matrix/', 'https://example.org/matrix'],
  ])('resolves through .well-known: base_url %j is used as %j and checked with /versions', async (baseUrl, expected) => {
    replyJson(w.agent, 'https://example.org', 'GET', WELL_KNOWN, 200, { 'm.homeserver': { base_url: baseUrl } });
    replyVersions(w.agent, new URL(expected).origin);
    // a base URL with a path keeps it: /versions is asked below it
    if (new URL(expected).pathname !== '/') {
      w.agent.get(new URL(expected).origin).intercept({ method: 'GET', path: `${new URL(expected).pathname}${VERSIONS}` })
        .reply(200, JSON.stringify({ versions: ['v1.12'] }), { headers: { 'content-type': 'application/json' } });
    }
    await expect(resolve('example.org')).resolves.toBe(expected);
    expect(paths()[0]).toBe(`GET https://example.org${WELL_KNOWN}`);
    expect(paths()[1]).toBe(`GET ${expected}${VERSIONS}`);
  });

  it('uses https://<name> itself when .well-known is 404', async () => {
    replyJson(w.agent, 'https://example.org', 'GET', WELL_KNOWN, 404, { errcode: 'M_NOT_FOUND' });
    replyVersions(w.agent, 'https://example.org');
    await expect(resolve('example.org')).resolves.toBe('https://example.org');
    expect(paths()).toEqual([`GET https://example.org${WELL_KNOWN}`, `GET https://example.org${VERSIONS}`]);
  });

  it('keeps a port in the server name', async () => {
    replyJson(w.agent, 'https://example.org:8448', 'GET', WELL_KNOWN, 404, {});
    replyVersions(w.agent, 'https://example.org:8448');
    await expect(resolve('example.org:8448')).resolves.toBe('https://example.org:8448');
  });

  it.each([
    ['truncated JSON', '{"m.homeserver": {"base_url": "https://mat', 'application/json'],
    ['an HTML page', '<html>hello</html>', 'text/html'],
    ['a JSON array', '[]', 'application/json'],
  ])('with a malformed .well-known (%s) is bad_response naming .well-known', async (_case, body, type) => {
    w.agent.get('https://example.org').intercept({ method: 'GET', path: WELL_KNOWN }).reply(200, body, { headers: { 'content-type': type } });
    const err = await rejectionOf(() => resolve('example.org'));
    expect(err).toMatchObject({ code: 'bad_response', exitCode: 3 });
    expect(err.message).toContain('.well-known');
  });

  it.each([
    ['no m.homeserver', { 'm.identity_server': { base_url: 'https://id.example.org' } }],
    ['a non-string base_url', { 'm.homeserver': { base_url: 42 } }],
    ['an empty base_url', { 'm.homeserver': { base_url: '' } }],
  ])('whose .well-known has %s is bad_response naming .well-known', async (_case, body) => {
    replyJson(w.agent, 'https://example.org', 'GET', WELL_KNOWN, 200, body);
    const err = await rejectionOf(() => resolve('example.org'));
    expect(err).toMatchObject({ code: 'bad_response', exitCode: 3 });
    expect(err.message).toContain('.well-known');
  });

  it('whose .well-known points at plain http:// on another host is refused (usage, exit 2)', async () => {
    replyJson(w.agent, 'https://example.org', 'GET', WELL_KNOWN, 200, { 'm.homeserver': { base_url: 'http://matrix.example.org' } });
    const err = await rejectionOf(() => resolve('example.org'));
    expect(err).toMatchObject({ code: 'usage', exitCode: 2 });
    expect(paths()).toEqual([`GET https://example.org${WELL_KNOWN}`]);
  });

  it.each(['exa mple.org', 'example.org/path', 'user@example.org', 'example.org?x=1'])('%j that is neither a name nor a URL is a usage error', async (input) => {
    await expect(resolve(input)).rejects.toMatchObject({ code: 'usage', exitCode: 2 });
    expect(w.requests()).toEqual([]);
  });
});

describe('a base URL', () => {
  it.each([
    ['http://127.0.0.1:8008', 'http://127.0.0.1:8008'],
    ['http://127.1.2.3:8008/', 'http://127.1.2.3:8008'],
    ['http://localhost:8008', 'http://localhost:8008'],
    ['http://LOCALHOST:8008', 'http://localhost:8008'],
    ['http://[::1]:8008', 'http://[::1]:8008'],
    ['https://matrix.example.org', 'https://matrix.example.org'],
  ])('%s is allowed without --insecure', async (input, expected) => {
    replyVersions(w.agent, expected);
    await expect(resolve(input)).resolves.toBe(expected);
    expect(paths()).toEqual([`GET ${expected}${VERSIONS}`]);
  });

  it.each(['http://example.org', 'http://10.0.0.5:8008', 'http://127.0.0.1.evil.example', 'http://localhost.example.com'])(
    'plain %s is refused (usage, exit 2) without contacting it',
    async (input) => {
      const err = await rejectionOf(() => resolve(input));
      expect(err).toMatchObject({ code: 'usage', exitCode: 2 });
      expect(err.hint).toContain('--insecure');
      expect(w.requests()).toEqual([]);
    },
  );

  it('plain http:// to another host is allowed with --insecure', async () => {
    replyVersions(w.agent, 'http://example.org');
    await expect(resolve('http://example.org', true)).resolves.toBe('http://example.org');
  });

  it.each(['ftp://example.org', 'https://user:pw@example.org', 'https://'])('%s is a usage error', async (input) => {
    await expect(resolve(input)).rejects.toMatchObject({ code: 'usage', exitCode: 2 });
    expect(w.requests()).toEqual([]);
  });
});

describe('a server that is not a Matrix homeserver', () => {
  it.each([
    ['/versions is 404', (o: string) => replyJson(w.agent, o, 'GET', VERSIONS, 404, { errcode: 'M_UNRECOGNIZED' })],
    ['/versions is an HTML page', (o: string) => w.agent.get(o).intercept({ method: 'GET', path: VERSIONS }).reply(200, '<html/>', { headers: { 'content-type': 'text/html' } })],
    ['/versions has no versions list', (o: string) => replyJson(w.agent, o, 'GET', VERSIONS, 200, { hello: 'world' })],
    ['/versions lists non-strings', (o: string) => replyJson(w.agent, o, 'GET', VERSIONS, 200, { versions: [1, 2] })],
  ])('is reported as such when %s', async (_case, setup) => {
    setup('https://www.example.org');
    const err = await rejectionOf(() => resolve('https://www.example.org'));
    expect(err).toMatchObject({ code: 'bad_response', exitCode: 3 });
    expect(err.message).toContain('does not look like a Matrix homeserver');
  });

  it('an unreachable server stays a network error, not "not Matrix"', async () => {
    w.agent.get('https://www.example.org').intercept({ method: 'GET', path: VERSIONS }).replyWithError(new Error('getaddrinfo ENOTFOUND')).persist();
    await expect(resolve('https://www.example.org')).rejects.toMatchObject({ code: 'network', exitCode: 3 });
  });
});

describe('loopback: one check for the homeserver URL and the proxy listener', () => {
  it.each([
    ['127.0.0.1', true],
    ['127.255.255.254', true],
    ['localhost', true],
    ['LOCALHOST', true],
    ['::1', true],
    ['0:0:0:0:0:0:0:1', true],
    ['::ffff:127.0.0.1', true],
    ['::ffff:7f00:1', true],
    ['::FFFF:127.1.2.3', true],
    ['128.0.0.1', false],
    ['10.0.0.1', false],
    ['::2', false],
    ['::ffff:10.0.0.1', false],
    ['::ffff:128.0.0.1', false],
    ['localhost.example.org', false],
    ['matrix.example.org', false],
  ])('%s → %s, everywhere', (host, loopback) => {
    expect(isLoopbackHost(host)).toBe(loopback);
    const ipv6 = host.includes(':');
    expect(isLoopbackHost(ipv6 ? `[${host}]` : host)).toBe(loopback);
    // The contract's http:// rule for the homeserver (and every URL a secret goes to)...
    const url = `http://${ipv6 ? `[${host}]` : host}:8008`;
    if (loopback) expect(() => checkBaseUrl(url, false)).not.toThrow();
    else expect(() => checkBaseUrl(url, false)).toThrow(MxsError);
    // ... and the proxy's --listen rule agree.
    if (host.includes('.example.')) return; // --listen takes addresses, not names
    const listen = `${ipv6 ? `[${host}]` : host}:0`;
    if (loopback) expect(() => parseListen(listen, false)).not.toThrow();
    else expect(() => parseListen(listen, false)).toThrow(/not a loopback address/);
  });
});
