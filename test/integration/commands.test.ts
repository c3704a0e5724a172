// Every command and flag of the contract against the homeserver double: in-process through the
// command definitions (test/support/run-command.ts), and as a real process where only a process
// shows it (what it loads, the keychain helper, unknown commands).
import { chmod, readFile, stat, writeFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { startHomeserverDouble, type HomeserverDouble } from '../support/homeserver-double.js';
import { filesBelow, homePerTest, makeHome, REPO, runMxs, type Home } from '../support/cli.js';
import { mxsInProcess } from '../support/run-command.js';

const PW = 'alice-pw';
let hs: HomeserverDouble;
let home: Home;

type Extra = { input?: string; env?: Record<string, string | undefined> };

async function mxs(args: string[], extra: Extra = {}) {
  return mxsInProcess(args, { stdin: extra.input, env: { ...home.env, ...extra.env } });
}

async function mxsProcess(args: string[], extra: Extra = {}) {
  return runMxs(args, { input: extra.input, env: { ...home.env, ...extra.env } });
}

async function login(args: string[] = [], run = mxs) {
  const r = await run(['login', hs.url, '-u', 'alice', '--password-stdin', '--json', ...args], { input: PW + '\n' });
  expect(r.stderr).not.toContain(PW);
  return r;
}

const sessionFile = (profile = 'default') => join(home.env.MXS_CONFIG_DIR!, 'sessions', `${profile}.json`);
const secretFile = (profile = 'default') => join(home.env.MXS_CONFIG_DIR!, 'secrets', `${profile}.json`);
const readJson = async (p: string) => JSON.parse(await readFile(p, 'utf8'));

beforeEach(async () => {
  hs = await startHomeserverDouble({ accessTokenLifetimeMs: 60_000 });
});
afterEach(() => hs.close()); // the one the test left: some start their own
homePerTest((h) => (home = h));

describe('login', () => {
  it('logs in with a password from stdin, asks for a refresh token, and stores the session', async () => {
    const r = await login();
    expect(r.code).toBe(0);
    const out = r.json();
    expect(out).toEqual({
      profile: 'default',
      homeserver: hs.url,
      userId: '@alice:localhost',
      method: 'password',
      issuer: null,
      deviceId: expect.any(String),
      expiresAt: expect.any(String),
      expiresInMs: expect.any(Number),
      refreshable: true,
      storage: 'file',
    });
    expect(out.expiresInMs).toBeGreaterThan(55_000);
    expect(out.expiresInMs).toBeLessThanOrEqual(60_000);
    const loginReq = hs.requests.find((q) => q.method === 'POST' && q.path.endsWith('/v3/login'))!;
    expect(loginReq.body).toMatchObject({ type: 'm.login.password', identifier: { type: 'm.id.user', user: 'alice' }, refresh_token: true });
    const [session] = hs.sessions();
    const secret = await readJson(secretFile());
    expect(secret.accessToken).toBe(session!.accessToken);
    expect(secret.refreshToken).toBe(session!.refreshToken);
    expect((await stat(secretFile())).mode & 0o777).toBe(0o600);
    expect((await stat(join(home.env.MXS_CONFIG_DIR!, 'secrets'))).mode & 0o777).toBe(0o700);
    const record = await readJson(sessionFile());
    expect(record).toMatchObject({ homeserver: hs.url, userId: '@alice:localhost', refreshable: true, storage: 'file' });
    expect(JSON.stringify(record)).not.toContain(session!.accessToken);
    expect(r.stdout + r.stderr).not.toContain(session!.accessToken);
  });

  it('sends --device-id and --device-name, and omits refresh_token with --no-refresh', async () => {
    const r = await login(['--device-id', 'MYDEVICE01', '--device-name', 'CI runner', '--no-refresh']);
    expect(r.code).toBe(0);
    expect(r.json()).toMatchObject({ deviceId: 'MYDEVICE01', refreshable: false, expiresAt: null, expiresInMs: null });
    const body = hs.requests.find((q) => q.path.endsWith('/v3/login') && q.method === 'POST')!.body;
    expect(body).toMatchObject({ device_id: 'MYDEVICE01', initial_device_display_name: 'CI runner' });
    expect(body).not.toHaveProperty('refresh_token');
  });

  it('accepts a full user ID', async () => {
    const r = await mxs(['login', hs.url, '-u', '@alice:localhost', '--password-stdin', '--json'], { input: PW });
    expect(r.code).toBe(0);
    expect(r.json().userId).toBe('@alice:localhost');
  });

  it('logs in with an m.login.token from stdin', async () => {
    await hs.close();
    hs = await startHomeserverDouble({ loginTokens: { 'login-token-123': 'alice' } });
    const r = await mxs(['login', hs.url, '--token-stdin', '--json'], { input: 'login-token-123\n' });
    expect(r.code).toBe(0);
    expect(hs.requests.find((q) => q.path.endsWith('/v3/login') && q.method === 'POST')!.body).toMatchObject({ type: 'm.login.token', token: 'login-token-123' });
  });

  it.each([
    ['a wrong password', ['-u', 'alice', '--password-stdin'], 'not-the-password\n', 4, /wrong user name or password/],
    ['an unknown user', ['-u', 'mallory', '--password-stdin'], 'x\n', 4, /wrong user name or password/],
    ['empty stdin for --password-stdin', ['-u', 'alice', '--password-stdin'], '', 2, /standard input held no password/],
    ['no user', ['--password-stdin'], PW, 2, /No user given/],
    ['no password source off a terminal', ['-u', 'alice'], '', 2, /cannot prompt/],
  ])('fails clearly on %s', async (_name, args, input, code, message) => {
    const r = await mxs(['login', hs.url, ...args], { input });
    expect(r.code).toBe(code);
    const lines = r.stderr.trim().split('\n');
    expect(lines[0]).toMatch(message);
    expect(lines).toHaveLength(2); // what happened, what to do next
    expect(r.stderr).not.toMatch(/\bat .+\.js:\d+/); // no stack trace
    expect(r.stdout).toBe('');
  });

  it('reports the Matrix errcode under --json', async () => {
    const r = await mxs(['login', hs.url, '-u', 'alice', '--password-stdin', '--json'], { input: 'not-the-password' });
    expect(r.code).toBe(4);
    expect(r.json()).toEqual({ error: { code: 'M_FORBIDDEN', message: expect.stringMatching(/wrong user name or password/), exitCode: 4 } });
  });

  it.each([['--password', 'hunter2'], ['--password=hunter2'], ['-P', 'hunter2']])('refuses a password on a flag without echoing it (%s)', async (...flag) => {
    const r = await mxs(['login', hs.url, '-u', 'alice', ...flag]);
    expect(r.code).toBe(2);
    expect(r.stdout + r.stderr).not.toContain('hunter2');
    expect(hs.count('/login')).toBe(0);
  });

  it('refuses http:// to a non-loopback host (exit 2) without sending anything', async () => {
    const r = await mxs(['login', 'http://matrix.example.org', '-u', 'alice', '--password-stdin'], { input: PW });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/Refusing plain http:\/\//);
    expect(r.stderr).toMatch(/--insecure/);
  });

  it('says clearly when the server is not a Matrix homeserver', async () => {
    hs.inject('GET /_matrix/client/versions', { status: 200, body: '<html>hello</html>', contentType: 'text/html' });
    const r = await mxs(['login', hs.url, '-u', 'alice', '--password-stdin'], { input: PW });
    expect(r.code).toBe(3);
    expect(r.stderr.split('\n')[0]).toMatch(/does not look like a Matrix homeserver/);
  });

  it('falls back from an unusable keychain to the file store with --storage auto, and says so', async () => {
    const r = await login(['--storage', 'auto'], mxsProcess);
    expect(r.code).toBe(0);
    expect(r.json().storage).toBe('file');
    expect(r.stderr).toMatch(/keychain unavailable: .*Secrets are stored in .*0600.*--storage file or MXS_STORAGE=file/i);
  });

  it('fails with exit 6 under --storage keychain when the keychain is unusable, storing nothing', async () => {
    const r = await login(['--storage', 'keychain'], mxsProcess);
    expect(r.code).toBe(6);
    expect(r.json().error.code).toBe('storage');
    await expect(stat(sessionFile())).rejects.toThrow();
  });
});

describe('status', () => {
  it('shows the countdown from local state only: no socket, no keychain, no undici', async () => {
    await login();
    const probe = join(home.dir, 'probe.log');
    await writeFile(probe, '');
    const env = { NODE_OPTIONS: `--require ${join(REPO, 'test/support/no-network.cjs')}`, MXS_PROBE_FILE: probe };
    const text = await mxsProcess(['status'], { env });
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/Token: +expires in (59s|1m) \(\d\d:\d\d:\d\d UTC\)/);
    expect(text.stdout).toContain('@alice:localhost');
    const json = await mxsProcess(['status', '--json'], { env });
    expect(json.json()).toEqual({
      profile: 'default',
      loggedIn: true,
      homeserver: hs.url,
      userId: '@alice:localhost',
      method: 'password',
      issuer: null,
      scopes: null,
      deviceId: expect.any(String),
      issuedAt: expect.any(String),
      expiresAt: expect.any(String),
      expiresInMs: expect.any(Number),
      expired: false,
      refreshable: true,
      storage: 'file',
    });
    expect(await readFile(probe, 'utf8')).toBe('');
  });

  it('exits 5 when the token has expired but can be refreshed, and 4 when not logged in', async () => {
    await login();
    const record = await readJson(sessionFile());
    const secret = await readJson(secretFile());
    const past = new Date(Date.now() - 5000).toISOString();
    await writeFile(sessionFile(), JSON.stringify({ ...record, expiresAt: past }));
    await writeFile(secretFile(), JSON.stringify({ ...secret, expiresAt: past }), { mode: 0o600 });
    const r = await mxs(['status', '--json']);
    expect(r.code).toBe(5);
    expect(r.json()).toMatchObject({ expired: true, refreshable: true });
    expect(r.stderr).toMatch(/Run: mxs refresh/);
    const other = await mxs(['status', '--json', '--profile', 'nobody']);
    expect(other.code).toBe(4);
    expect(other.json()).toMatchObject({ profile: 'nobody', loggedIn: false });
  });

  it('lists every profile with --all', async () => {
    await login();
    await login(['--profile', 'work']);
    const r = await mxs(['status', '--all', '--json']);
    expect(r.code).toBe(0);
    expect(r.json().profiles.map((p: { profile: string }) => p.profile)).toEqual(['default', 'work']);
  });

  it('prints once with --watch when stdout is not a terminal', async () => {
    await login();
    const r = await mxs(['status', '--watch']);
    expect(r.code).toBe(0);
    expect(r.stdout.match(/Token:/g)).toHaveLength(1);
  });

  it('refuses a corrupt sessions file with exit 6 and leaves it as it is', async () => {
    await login();
    await writeFile(sessionFile(), '{"format":1, "homeserver": ');
    for (const cmd of [['status'], ['token'], ['whoami']]) {
      const r = await mxs(cmd);
      expect(r.code).toBe(6);
      expect(r.stderr.split('\n')[0]).toMatch(/corrupt/);
    }
    expect(await readFile(sessionFile(), 'utf8')).toBe('{"format":1, "homeserver": ');
  });
});

describe('token', () => {
  it('prints the access token alone, without refreshing a valid one', async () => {
    await login();
    const r = await mxs(['token']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${hs.sessions()[0]!.accessToken}\n`);
    expect(hs.count('/refresh')).toBe(0);
    const j = await mxs(['token', '--json']);
    expect(j.json()).toEqual({ accessToken: hs.sessions()[0]!.accessToken, expiresAt: expect.any(String), expiresInMs: expect.any(Number) });
  });

  it('refreshes first when less than --min-valid is left, and stores the new pair before printing', async () => {
    await login();
    const before = await readJson(secretFile());
    hs.expireAccessTokens();
    const record = await readJson(sessionFile());
    const past = new Date(Date.now() - 1000).toISOString();
    await writeFile(secretFile(), JSON.stringify({ ...before, expiresAt: past }), { mode: 0o600 });
    await writeFile(sessionFile(), JSON.stringify({ ...record, expiresAt: past }));
    const r = await mxs(['token', '--min-valid', '30s']);
    expect(r.code).toBe(0);
    expect(hs.count('/refresh')).toBe(1);
    const after = await readJson(secretFile());
    expect(r.stdout.trim()).toBe(after.accessToken);
    expect(after.accessToken).not.toBe(before.accessToken);
    expect(hs.accessTokenStatus(after.accessToken)).toBe('valid');
  });

  it('refreshes when inside --min-valid even if not expired yet', async () => {
    await login();
    const r = await mxs(['token', '--min-valid', '50m']);
    // Lifetime is 60s: the cap is half of it, and 60s > 30s left, so no refresh...
    expect(r.code).toBe(0);
    expect(hs.count('/refresh')).toBe(0);
    const secret = await readJson(secretFile());
    const soon = new Date(Date.now() + 20_000).toISOString();
    const issued = new Date(Date.now() - 40_000).toISOString();
    await writeFile(secretFile(), JSON.stringify({ ...secret, issuedAt: issued, expiresAt: soon }), { mode: 0o600 });
    // ...but with 20s of 60s left, it refreshes.
    const r2 = await mxs(['token', '--min-valid', '50m']);
    expect(r2.code).toBe(0);
    expect(hs.count('/refresh')).toBe(1);
  });

  it.each([['--min-valid', 'soon'], ['--timeout', '10 seconds'], ['--timeout', '0s']])('rejects a malformed duration %s %s with exit 2', async (flag, value) => {
    await login();
    const r = await mxs(['token', flag, value]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
  });

  it('exits 4 with a login hint for an unknown profile, and 2 for an invalid profile name', async () => {
    const r = await mxs(['token', '--profile', 'ghost']);
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/mxs login SERVER --profile ghost/);
    const bad = await mxs(['token', '--profile', '../etc']);
    expect(bad.code).toBe(2);
  });
});

describe('whoami', () => {
  it('asks the server whom the token belongs to', async () => {
    await login();
    const r = await mxs(['whoami', '--json']);
    expect(r.code).toBe(0);
    expect(r.json()).toEqual({ profile: 'default', homeserver: hs.url, userId: '@alice:localhost', deviceId: hs.sessions()[0]!.deviceId, isGuest: false, refreshed: false });
    const text = await mxs(['whoami']);
    expect(text.stdout).toMatch(/^@alice:localhost \(device \w+\) on http/);
  });

  it('refreshes once and retries once on 401 M_UNKNOWN_TOKEN (soft logout) when the token expired early', async () => {
    await login();
    hs.expireAccessTokens(); // the server says expired; the local clock still thinks it is valid
    const r = await mxs(['whoami', '--json']);
    expect(r.code).toBe(0);
    expect(r.json().refreshed).toBe(true);
    expect(hs.count('/refresh')).toBe(1);
    expect(hs.count('/account/whoami')).toBe(2);
  });

  it('ends with exit 4 and a login hint when the session is gone on the server', async () => {
    await login();
    hs.revokeAll();
    const before = await readFile(secretFile(), 'utf8');
    const r = await mxs(['whoami']);
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/Run: mxs login http:\/\/127\.0\.0\.1/);
    expect(await readFile(secretFile(), 'utf8')).toBe(before); // nothing deleted: the user decides
  });

  it('checks a token from stdin against SERVER and stores nothing', async () => {
    await login();
    const token = hs.sessions()[0]!.accessToken;
    const other = await makeHome('file');
    try {
      const r = await runMxs(['whoami', hs.url, '--token-stdin', '--json'], { input: token + '\n', env: other.env });
      expect(r.code).toBe(0);
      expect(r.json()).toMatchObject({ userId: '@alice:localhost', refreshed: false });
      expect(r.stdout).not.toContain(token);
      expect(await filesBelow(other.dir)).toEqual([]);
    } finally {
      await other.cleanup();
    }
  });
});

describe('refresh', () => {
  it('rotates the refresh token and never sends the old one again', async () => {
    await login();
    const first = (await readJson(secretFile())).refreshToken;
    const r = await mxs(['refresh', '--json']);
    expect(r.code).toBe(0);
    expect(r.json()).toEqual({ profile: 'default', expiresAt: expect.any(String), expiresInMs: expect.any(Number), refreshTokenRotated: true });
    const second = (await readJson(secretFile())).refreshToken;
    expect(second).not.toBe(first);
    expect((await mxs(['whoami'])).code).toBe(0);
    expect((await mxs(['refresh'])).code).toBe(0);
    expect(hs.usedRefreshTokens).toEqual([first, second]);
  });

  it('sends --lifetime as com.famedly.refresh_token_lifetime_ms', async () => {
    await login();
    const r = await mxs(['refresh', '--lifetime', '1h30m']);
    expect(r.code).toBe(0);
    const req = hs.requests.find((q) => q.path.endsWith('/refresh'))!;
    expect(req.body['com.famedly.refresh_token_lifetime_ms']).toBe(5_400_000);
  });

  it('treats a refused refresh token (403 M_FORBIDDEN) as "log in again" and keeps the stored session', async () => {
    await login();
    const secretBefore = await readFile(secretFile(), 'utf8');
    hs.inject('POST /_matrix/client/v3/refresh', { status: 403, json: { errcode: 'M_FORBIDDEN', error: "refresh token isn't valid anymore" } });
    const r = await mxs(['refresh', '--json']);
    expect(r.code).toBe(4);
    expect(r.json().error.code).toBe('M_FORBIDDEN');
    expect(r.stderr).toMatch(/has ended.*\n.*mxs login/);
    expect(await readFile(secretFile(), 'utf8')).toBe(secretBefore);
    // status now points at login, not at another refresh that would fail the same way
    const status = await mxs(['status', '--json']);
    expect(status.json()).toMatchObject({ loggedIn: true, refreshable: false });
  });

  it('counts expiry from when the request was sent, not when the answer arrived', async () => {
    await login();
    hs.inject('POST /_matrix/client/v3/refresh', { delayMs: 1500 });
    const r = await mxs(['refresh', '--json']);
    expect(r.code).toBe(0);
    const sent = hs.requests.find((q) => q.path.endsWith('/refresh'))!.at;
    const expiresAt = Date.parse(r.json().expiresAt);
    expect(Math.abs(expiresAt - (sent + 60_000))).toBeLessThan(500);
  });

  it('falls back to the MSC2918 unstable endpoint and remembers it', async () => {
    await hs.close();
    hs = await startHomeserverDouble({ refreshPaths: ['unstable'] });
    await login();
    expect((await mxs(['refresh'])).code).toBe(0);
    expect((await readJson(sessionFile())).auth).toEqual({ type: 'matrix', refreshPath: '/unstable/org.matrix.msc2918/refresh' });
    const firstRun = hs.requests.filter((q) => q.path.includes('refresh')).length;
    expect((await mxs(['refresh'])).code).toBe(0);
    expect(hs.requests.filter((q) => q.path.includes('refresh')).length - firstRun).toBe(1);
  });
});

describe('logout', () => {
  it('ends the session on the server and forgets it here', async () => {
    await login();
    const r = await mxs(['logout', '--json']);
    expect(r.code).toBe(0);
    expect(r.json()).toEqual({ profile: 'default', serverSide: true });
    expect(hs.sessions()).toHaveLength(0);
    await expect(stat(sessionFile())).rejects.toThrow();
    await expect(stat(secretFile())).rejects.toThrow();
  });

  it('logs out every device with --all', async () => {
    await login();
    await login(['--profile', 'second']);
    expect(hs.sessions()).toHaveLength(2);
    const r = await mxs(['logout', '--all', '--json']);
    expect(r.code).toBe(0);
    expect(hs.count('/logout/all')).toBe(1);
    expect(hs.sessions()).toHaveLength(0);
  });

  it('forgets only locally with --local', async () => {
    await login();
    const r = await mxs(['logout', '--local', '--json']);
    expect(r.json()).toEqual({ profile: 'default', serverSide: false });
    expect(hs.count('/logout')).toBe(0);
    expect(hs.sessions()).toHaveLength(1);
  });

  it('keeps everything when the server cannot be reached', async () => {
    await login();
    hs.inject('POST /_matrix/client/v3/logout', { status: 503, body: 'down' }, { status: 503, body: 'down' }, { status: 503, body: 'down' });
    const r = await mxs(['logout']);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/mxs logout --local/);
    expect((await mxs(['token'])).code).toBe(0);
  });

  it('works with an expired access token, as Synapse allows', async () => {
    await login();
    hs.expireAccessTokens();
    const r = await mxs(['logout', '--json']);
    expect(r.code).toBe(0);
    expect(r.json().serverSide).toBe(true);
    expect(hs.count('/refresh')).toBe(0);
  });
});

describe('global flags', () => {
  it('--verbose traces method, URL, status and time on stderr with no secret', async () => {
    const r = await login(['--verbose']);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/POST http:\/\/127\.0\.0\.1:\d+\/_matrix\/client\/v3\/login → 200 \(\d+ ms\)/);
    const s = hs.sessions()[0]!;
    expect(r.stderr).not.toContain(s.accessToken);
    expect(r.stderr).not.toContain(s.refreshToken!);
    expect(r.stderr).not.toContain(PW);
  });

  it('--timeout bounds an exchange (exit 3, code timeout)', async () => {
    await login();
    hs.inject('GET /_matrix/client/v3/account/whoami', { delayMs: 5000 });
    const r = await mxs(['whoami', '--timeout', '500ms', '--json']);
    expect(r.code).toBe(3);
    expect(r.json().error.code).toBe('timeout');
    expect(r.ms).toBeLessThan(4000);
  });

  it.each([[['frobnicate'], /Unknown command "frobnicate"/], [['status', 'extra'], /"status" takes no argument "extra"/], [['status', '--bogus'], /Unknown flag --bogus\./]])(
    'answers a usage mistake %j with exit 2, one line and a hint',
    async (args, message) => {
      const r = await mxsProcess(args);
      expect(r.code).toBe(2);
      const lines = r.stderr.trim().split('\n');
      expect(lines[0]).toMatch(message);
      expect(lines).toHaveLength(2);
      expect(r.stdout).toBe('');
    },
  );

  it('shows a stack trace only with --verbose', async () => {
    const plain = await mxsProcess(['token', '--profile', 'ghost']);
    expect(plain.stderr).not.toMatch(/\n\s+at /);
    const verbose = await mxsProcess(['token', '--profile', 'ghost', '--verbose']);
    expect(verbose.code).toBe(4);
    expect(verbose.stderr).toMatch(/\n\s+at .+\.js:\d+/);
  });

  it('keeps profiles apart (--profile and MXS_PROFILE)', async () => {
    await login(['--profile', 'work']);
    expect((await mxs(['status'])).code).toBe(4);
    expect((await mxs(['status'], { env: { MXS_PROFILE: 'work' } })).code).toBe(0);
  });

  it('--storage file keeps working when the secret file is tightened back', async () => {
    await login();
    await chmod(secretFile(), 0o644);
    const r = await mxs(['token']);
    expect(r.code).toBe(6);
    expect(r.stderr).toMatch(/chmod 600/);
    await chmod(secretFile(), 0o600);
    expect((await mxs(['token'])).code).toBe(0);
  });

  it('has no token in any file but the secret file', async () => {
    await login();
    await mxs(['refresh']);
    const s = hs.sessions()[0]!;
    const leaks = (await filesBelow(home.dir)).filter((f) => !f.path.endsWith(join('secrets', 'default.json')) && (f.content.includes(s.accessToken) || f.content.includes(s.refreshToken!)));
    expect(leaks).toEqual([]);
    await rm(secretFile());
  });
});
