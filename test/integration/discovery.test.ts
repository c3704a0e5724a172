// Server discovery end to end (client-server API §3.2): `mxs login example.org` fetches
// https://example.org/.well-known/matrix/client over real TLS, follows m.homeserver.base_url and
// confirms it with /versions. The "server name" here is localhost:PORT, served by an HTTPS server
// whose self-signed certificate the CLI trusts through NODE_EXTRA_CA_CERTS.
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { HomeserverDouble } from '../support/homeserver-double.js';
import { doublePerTest, homePerTest, makeHome, runMxs, type Home } from '../support/cli.js';

type Handler = (path: string) => { status: number; type?: string; body: string };

let hs: HomeserverDouble;
let home: Home;
let certDir: Home;
let server: https.Server;
let serverName: string;
let handler: Handler;

beforeAll(async () => {
  certDir = await makeHome();
  await promisify(execFile)('openssl', [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
    '-keyout', join(certDir.dir, 'key.pem'), '-out', join(certDir.dir, 'cert.pem'),
  ]);
  server = https.createServer({ key: await readFile(join(certDir.dir, 'key.pem')), cert: await readFile(join(certDir.dir, 'cert.pem')) }, (req, res) => {
    const { status, type, body } = handler(req.url ?? '/');
    res.writeHead(status, { 'content-type': type ?? 'application/json' });
    res.end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  serverName = `localhost:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await new Promise((r) => server.close(r));
  await certDir.cleanup();
});
doublePerTest({}, (d) => (hs = d));
homePerTest((h) => (home = h));

const login = (extraEnv: Record<string, string> = { NODE_EXTRA_CA_CERTS: join(certDir.dir, 'cert.pem') }) =>
  runMxs(['login', serverName, '-u', 'alice', '--password-stdin', '--json'], { input: 'alice-pw\n', env: { ...home.env, ...extraEnv } });

const wellKnown = (body: unknown): Handler => (path) =>
  path === '/.well-known/matrix/client' ? { status: 200, body: JSON.stringify(body) } : { status: 404, body: '{"errcode":"M_UNRECOGNIZED"}' };

describe('discovery through /.well-known/matrix/client', () => {
  it('resolves a server name to m.homeserver.base_url (trailing slash trimmed) and logs in there', async () => {
    handler = wellKnown({ 'm.homeserver': { base_url: `${hs.url}/` } });
    const r = await login();
    expect(r.code).toBe(0);
    expect(r.json()).toMatchObject({ homeserver: hs.url, userId: '@alice:localhost' });
    expect(hs.count('/versions')).toBe(1); // the base URL was confirmed before logging in
  });

  it.each([
    ['an HTML page', { status: 200, type: 'text/html', body: '<html>hello</html>' }],
    ['truncated JSON', { status: 200, body: '{"m.homeserver": {"base_u' }],
    ['no base_url', { status: 200, body: '{"m.homeserver": {}}' }],
  ])('fails clearly (exit 3) on a malformed .well-known: %s', async (_name, answer) => {
    handler = (path) => (path === '/.well-known/matrix/client' ? answer : { status: 404, body: '{}' });
    const r = await login();
    expect(r.code).toBe(3);
    expect(r.json().error.code).toBe('bad_response');
    expect(r.stderr.split('\n')[0]).toMatch(/well-known|m\.homeserver/);
    expect(hs.count('/login')).toBe(0);
  });

  it('without a .well-known (404) uses the server name itself, which here is no Matrix server', async () => {
    handler = () => ({ status: 404, body: '{"errcode":"M_NOT_FOUND"}' });
    const r = await login();
    expect(r.code).toBe(3);
    expect(r.stderr.split('\n')[0]).toMatch(new RegExp(`https://${serverName} does not look like a Matrix homeserver`));
  });

  it('refuses a .well-known that points at plain http:// on another host (exit 2)', async () => {
    handler = wellKnown({ 'm.homeserver': { base_url: 'http://matrix.example.org' } });
    const r = await login();
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/Refusing plain http:\/\/ to matrix\.example\.org/);
  });

  it('fails with a TLS error (exit 3), never falling back to plain http, when the certificate is not trusted', async () => {
    handler = wellKnown({ 'm.homeserver': { base_url: hs.url } });
    const r = await login({});
    expect(r.code).toBe(3);
    expect(r.stderr.split('\n')[0]).toMatch(/TLS failure talking to localhost:\d+/);
    expect(hs.requests).toEqual([]);
  });
});
