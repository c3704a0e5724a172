// `mxs doctor` against the homeserver double, with each failure staged for real: a lock held by a
// live process and one left by a SIGKILLed process, a secrets file made 0644, a server that is down,
// a server name whose .well-known now points elsewhere (real TLS), a revoked token, a keychain that
// hangs (gnome-keyring SIGSTOPped), an OAuth issuer that changed or stopped answering, a refresh
// token the server refused, a device gone while its token still works. Real Synapse: test/integration/doctor-synapse.test.ts.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, readFile, stat, writeFile } from 'node:fs/promises';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { doctorCommand } from '../../src/cli/commands/doctor.js';
import { startHomeserverDouble, type Answer, type DoubleOptions, type HomeserverDouble, type RequestContext } from '../support/homeserver-double.js';
import { makeHome, runMxs, startMxs, type RunResult } from '../support/cli.js';
import { watchStderr } from '../support/fault-kit.js';
import { holdLock, schemaErrors } from '../support/doctor-kit.js';
import { haveFaketime, runFaketime } from '../support/cli.js';
import { deviceCodeLogin, mxsInProcess, runCommand } from '../support/run-command.js';
import { describeWithSecretService } from '../support/secret-service.js';

type Home = Awaited<ReturnType<typeof makeHome>>;
let hs: HomeserverDouble;
let home: Home;
beforeEach(async () => {
  hs = await startHomeserverDouble({ accessTokenLifetimeMs: 600_000 });
  home = await makeHome('file');
});
afterEach(async () => {
  await hs.close();
  await home.cleanup();
});

const config = () => home.env.MXS_CONFIG_DIR!;
const secretFile = () => join(config(), 'secrets', 'default.json');
const lockFile = () => join(config(), 'locks', 'default.lock');
async function login(profile = 'default'): Promise<void> {
  const r = await mxsInProcess(['login', hs.url, '-u', 'alice', '--password-stdin', '--json', '-p', profile], { env: home.env, stdin: 'alice-pw\n' });
  expect(r.code).toBe(0);
}
const doctor = (args: string[] = [], env: Record<string, string> = {}) => runCommand(doctorCommand, ['--timeout', '5s', ...args], { env: { ...home.env, NO_COLOR: '1', ...env } });
/** "id:status" of each check, in order. */
const statuses = (doc: { checks: { id: string; status: string }[] }) => doc.checks.map((c) => `${c.id}:${c.status}`);
const check = (doc: { checks: { id: string }[] }, id: string) => doc.checks.find((c) => c.id === id) as { id: string; status: string; detail: string; fix: string | null };
/** The state files, byte for byte, with their modes: doctor must leave them as they were. */
async function snapshot(): Promise<string[]> {
  const files = [join(config(), 'sessions', 'default.json'), secretFile()];
  return Promise.all(files.map(async (f) => `${f} ${((await stat(f)).mode & 0o777).toString(8)} ${await readFile(f, 'utf8')}`));
}

describe('mxs doctor against the homeserver double', () => {
  it('a healthy session: every check passes or does not apply, exit 0, the --json shape validates, nothing changes', async () => {
    await login();
    const before = await snapshot();
    const sent = hs.requests.length;
    const r = await doctor(['--json']);
    expect(r.exitCode).toBe(0);
    const doc = r.json();
    expect(await schemaErrors('doctor.schema.json', doc)).toEqual([]);
    expect(statuses(doc)).toEqual(['config:ok', 'storage:ok', 'lock:ok', 'server:ok', 'discovery:ok', 'auth:skipped', 'clock:ok', 'token:ok', 'refresh:ok', 'device:ok']);
    expect(doc).toMatchObject({ profile: 'default', ok: true });
    const { accessToken, refreshToken } = JSON.parse(await readFile(secretFile(), 'utf8'));
    expect([r.stdout.includes(accessToken), r.stdout.includes(refreshToken), r.stderr]).toEqual([false, false, '']);
    expect(await snapshot()).toEqual(before);
    // Read-only: GETs alone, no refresh, no lock.
    expect(hs.requests.slice(sent).map((q) => `${q.method} ${q.path.split('?')[0]}`).sort()).toEqual(['GET /_matrix/client/v3/account/whoami', `GET /_matrix/client/v3/devices/${check(doc, 'device').detail.split(' ')[1]}`, 'GET /_matrix/client/versions']);
    expect(existsSync(lockFile())).toBe(false);
    const text = await doctor();
    expect(text.stdout).toMatch(/^Profile default\n✓ config {4}/);
    expect(text.stdout).toMatch(/\n- auth {6}skipped: Not applicable: a password session has no OAuth issuer\.\n/);
    expect(text.stdout.trimEnd().split('\n').at(-1)).toBe('No problems found.');
  });

  it('--all: every profile, in the doctor-all shape; the exit code is the first profile’s first failure', async () => {
    await login('bot');
    await login('default');
    await chmod(join(config(), 'secrets', 'bot.json'), 0o644);
    const r = await doctor(['--all', '--json']);
    const doc = r.json();
    expect(await schemaErrors('doctor-all.schema.json', doc)).toEqual([]);
    expect(doc.profiles.map((p: { profile: string; ok: boolean }) => [p.profile, p.ok])).toEqual([['bot', false], ['default', true]]);
    expect(check(doc.profiles[0], 'config').fix).toBe(`Run: chmod 600 ${join(config(), 'secrets', 'bot.json')}  (and consider the tokens in it leaked: log in again)`);
    expect(r.exitCode).toBe(6);
  });

  it('a secrets file made 0644 and a revoked token: config fails, exit 6, the file is not read, what needs the token is skipped', async () => {
    await login();
    hs.revokeAll();
    await chmod(secretFile(), 0o644);
    const r = await doctor();
    expect(r.exitCode).toBe(6);
    expect(r.stdout).toContain(`✗ config    The secrets file ${secretFile()} is readable by others (mode 0644).\n            Run: chmod 600 ${secretFile()}  (and consider the tokens in it leaked: log in again)\n`);
    expect(r.stdout).toContain('\n- storage   skipped: Not read: the secrets file is not private (see config).\n');
    expect(r.stdout).toContain('- token     skipped: No access token to check (see storage).');
    // Doctor never repairs: the mode stays as it was.
    expect((await stat(secretFile())).mode & 0o777).toBe(0o644);
  });

  it('a revoked token: the token check fails with the login hint, the device check is skipped, exit 4', async () => {
    await login();
    hs.revokeAll();
    const r = await doctor(['--json']);
    expect(r.exitCode).toBe(4);
    const doc = r.json();
    expect(await schemaErrors('doctor.schema.json', doc)).toEqual([]);
    expect(check(doc, 'token')).toMatchObject({ status: 'failure', detail: expect.stringMatching(/^The server refused the access token \(M_UNKNOWN_TOKEN/), fix: `Run: mxs login ${hs.url}` });
    expect(check(doc, 'device')).toMatchObject({ status: 'skipped', detail: 'The server does not accept the access token (see token).' });
  });

  it('a server that is down (a closed port): server fails, exit 3, the checks that need it are skipped', async () => {
    await login();
    await hs.close();
    const started = Date.now();
    const r = await doctor(['--json']);
    expect(r.exitCode).toBe(3);
    const doc = r.json();
    expect(check(doc, 'server')).toMatchObject({ status: 'failure', detail: expect.stringMatching(/127\.0\.0\.1/) });
    expect(statuses(doc).slice(6)).toEqual(['clock:skipped', 'token:skipped', 'refresh:ok', 'device:skipped']);
    expect(Date.now() - started).toBeLessThan(15_000);
  });

  it('a lock held by a live process: a warning naming its PID; held past any wait (faketime +1h): a failure, exit 6', async () => {
    await login();
    const holder = await holdLock(lockFile());
    try {
      const r = await doctor(['--json']);
      expect(r.exitCode).toBe(0);
      expect(check(r.json(), 'lock')).toMatchObject({ status: 'warning', detail: expect.stringMatching(new RegExp(`^Held by PID ${holder.pid}, still running, for \\d+(ms|s)`)), fix: expect.stringContaining(`kill ${holder.pid}`) });
      if (!haveFaketime()) return void process.stderr.write('skipped: faketime is not installed\n');
      const late = await runFaketime('+1h', ['doctor', '--json', '--timeout', '5s'], home.env);
      expect(check(late.json(), 'lock')).toMatchObject({ status: 'failure', detail: expect.stringMatching(new RegExp(`^Held by PID ${holder.pid}, still running, for (59m|1h)`)) });
      expect(late.code).toBe(6);
    } finally {
      holder.kill('SIGKILL');
    }
  }, 30_000);

  it('a lock left by a SIGKILLed process: stale, a warning, exit 0, and doctor leaves it in place', async () => {
    await login();
    const holder = await holdLock(lockFile());
    holder.kill('SIGKILL');
    await new Promise((r) => holder.once('exit', r));
    const r = await doctor(['--json']);
    expect(r.exitCode).toBe(0);
    expect(check(r.json(), 'lock')).toMatchObject({ status: 'warning', detail: expect.stringMatching(new RegExp(`^Stale: left by PID ${holder.pid}, which is no longer running`)) });
    expect((await stat(lockFile())).isFile()).toBe(true);
  });

  it('--refresh: one real refresh through the session core, reported as the refresh check; without it nothing is refreshed', async () => {
    await login();
    const before = await snapshot();
    await doctor();
    expect(hs.count('/refresh')).toBe(0);
    expect(await snapshot()).toEqual(before);
    const r = await doctor(['--refresh', '--json']);
    expect(r.exitCode).toBe(0);
    expect(check(r.json(), 'refresh')).toMatchObject({ status: 'ok', detail: expect.stringMatching(/^Tried with --refresh: refreshed, refresh token rotated; the new access token: (9m 5\ds|10m) left\.$/) });
    expect(hs.count('/refresh')).toBe(1);
    expect(await snapshot()).not.toEqual(before);
    // The token and device checks used the old token before the refresh replaced it.
    expect(check(r.json(), 'token').status).toBe('ok');
  });

  it('an OAuth session: the auth check confirms the stored issuer, refresh names the client', async () => {
    const oauth = await startHomeserverDouble({ oauth: { deviceIntervalSec: 1 } });
    try {
      const run = startMxs(['login', oauth.url, '--json'], { env: home.env });
      const [, code] = await watchStderr(run).match(/enter the code: ([A-Z0-9-]+)/);
      oauth.approveDevice(code!, 'alice');
      expect((await run.done).code).toBe(0);
      const r = await doctor(['--json']);
      const doc = r.json();
      expect(await schemaErrors('doctor.schema.json', doc)).toEqual([]);
      expect(check(doc, 'auth')).toMatchObject({ status: 'ok', detail: `${oauth.issuer} is still the issuer, and its metadata answers.` });
      expect(check(doc, 'refresh')).toMatchObject({ status: 'ok', detail: expect.stringMatching(/^Stored \(OAuth client \S+; its registration is not checkable without side effects\)\.$/) });
      expect(check(doc, 'token').status).toBe('ok');
      expect(r.exitCode).toBe(0);
    } finally {
      await oauth.close();
    }
  }, 30_000);

  /** What a staged double answers instead of its own answer (null: its own), changeable at any point of a test. */
  type Stage = { answer: ((req: RequestContext, own: () => Answer) => Answer | null) | null };
  async function stagedDouble(opts: DoubleOptions, stage: Stage): Promise<HomeserverDouble> {
    return startHomeserverDouble({ ...opts, intercept: (req, next) => stage.answer?.(req, next) ?? next() });
  }
  const isDeviceGet = (req: RequestContext, deviceId: string) => req.method === 'GET' && req.pathname.endsWith(`/devices/${encodeURIComponent(deviceId)}`);
  /** The device-code login to an OAuth double, approved as alice as soon as the code is issued. */
  async function loginOAuth(oauth: HomeserverDouble): Promise<void> {
    expect((await deviceCodeLogin(oauth, [oauth.url, '--json'], { env: home.env })).code).toBe(0);
  }

  it('an OAuth issuer that changed after login: auth fails (exit 4) with the login hint; one whose metadata stops answering: auth fails (exit 3)', async () => {
    const stage: Stage = { answer: null };
    const oauth = await stagedDouble({ oauth: { deviceIntervalSec: 1 } }, stage);
    try {
      await loginOAuth(oauth);
      // The homeserver now delegates to another issuer (its auth_metadata says so).
      stage.answer = (req, own) => (req.pathname.endsWith('/auth_metadata') ? { status: 200, json: { ...(own().json as object), issuer: 'https://auth.elsewhere.example/' } } : null);
      const moved = await doctor(['--json']);
      expect(check(moved.json(), 'auth')).toMatchObject({
        status: 'failure',
        detail: `${oauth.url} now names https://auth.elsewhere.example/ as its OAuth issuer, not the stored ${oauth.issuer}.`,
        fix: `Log in again: mxs login ${oauth.url}`,
      });
      expect(check(moved.json(), 'token').status).toBe('ok');
      expect(moved.exitCode).toBe(4);
      // The stored issuer is still named, but its own metadata does not answer (a proxy in front of a stopped MAS).
      stage.answer = (req) => (req.pathname === '/.well-known/openid-configuration' ? { status: 502, json: { error: 'bad gateway' } } : null);
      const down = await doctor(['--json']);
      expect(await schemaErrors('doctor.schema.json', down.json())).toEqual([]);
      expect(check(down.json(), 'auth')).toMatchObject({ status: 'failure', detail: `${new URL(oauth.url).host}: bad gateway (HTTP 502).`, fix: 'Retry later; --verbose shows the exchange.' });
      expect(oauth.count('/.well-known/openid-configuration')).toBeGreaterThan(0);
      expect(down.exitCode).toBe(3);
    } finally {
      await oauth.close();
    }
  }, 30_000);

  it('a session logged in with --no-refresh: refresh is ok while the token never expires; a warning with the login hint (exit 0) once the server gives it a lifetime', async () => {
    expect((await mxsInProcess(['login', hs.url, '-u', 'alice', '--password-stdin', '--no-refresh', '-p', 'forever'], { env: home.env, stdin: 'alice-pw\n' })).code).toBe(0);
    expect(check((await doctor(['--json', '-p', 'forever'])).json(), 'refresh')).toMatchObject({ status: 'ok', detail: 'None stored, none needed: the access token does not expire.' });
    // Synapse's nonrefreshable_access_token_lifetime: a login without a refresh token still gets an expiring access token.
    const stage: Stage = { answer: (req, own) => (req.method === 'POST' && req.pathname.endsWith('/login') ? { status: 200, json: { ...(own().json as object), expires_in_ms: 300_000 } } : null) };
    const lifetime = await stagedDouble({ accessTokenLifetimeMs: 600_000 }, stage);
    try {
      const logged = await mxsInProcess(['login', lifetime.url, '-u', 'alice', '--password-stdin', '--no-refresh'], { env: home.env, stdin: 'alice-pw\n' });
      expect(logged.code).toBe(0);
      const r = await doctor(['--json']);
      expect(check(r.json(), 'refresh')).toMatchObject({
        status: 'warning',
        detail: expect.stringMatching(/^No refresh token: the session ends when the access token does \((4m 5\ds|5m) left\)\.$/),
        fix: `Log in again for a refreshable session: mxs login ${lifetime.url}`,
      });
      expect(r.exitCode).toBe(0);
    } finally {
      await lifetime.close();
    }
  });

  it('a refresh token the server refused (mxs refresh, exit 4): refresh fails with the login hint, exit 4, while the access token still works', async () => {
    await login();
    hs.expireRefreshTokens();
    const refused = await mxsInProcess(['refresh'], { env: home.env });
    expect(refused.code).toBe(4);
    const r = await doctor(['--json']);
    expect(check(r.json(), 'token').status).toBe('ok');
    expect(check(r.json(), 'refresh')).toMatchObject({ status: 'failure', detail: 'Stored, but the server refused it earlier: the session has ended.', fix: `Run: mxs login ${hs.url}` });
    expect(r.exitCode).toBe(4);
  });

  it('a device deleted while its access token is still accepted: device fails with the login hint, exit 4', async () => {
    const stage: Stage = { answer: null };
    const gone = await stagedDouble({ accessTokenLifetimeMs: 600_000 }, stage);
    try {
      const logged = await mxsInProcess(['login', gone.url, '-u', 'alice', '--password-stdin', '--json'], { env: home.env, stdin: 'alice-pw\n' });
      const deviceId: string = logged.json().deviceId;
      // The double keeps a device while it has a token; a server whose device row went first answers as Synapse does for an unknown device.
      stage.answer = (req) => (isDeviceGet(req, deviceId) ? { status: 404, json: { errcode: 'M_NOT_FOUND', error: 'No device found' } } : null);
      const r = await doctor(['--json']);
      expect(check(r.json(), 'token').status).toBe('ok');
      expect(check(r.json(), 'device')).toMatchObject({ status: 'failure', detail: `Device ${deviceId} no longer exists on the server (deleted from another session).`, fix: `Run: mxs login ${gone.url}` });
      expect(r.exitCode).toBe(4);
    } finally {
      await gone.close();
    }
  });

  describe('a server name whose .well-known now points elsewhere (real TLS)', () => {
    let tls: https.Server;
    let name: string;
    let cert: string;
    let certHome: Home;
    beforeAll(async () => {
      certHome = await makeHome();
      cert = join(certHome.dir, 'cert.pem');
      await promisify(execFile)('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-keyout', join(certHome.dir, 'key.pem'), '-out', cert]);
      tls = https.createServer({ key: await readFile(join(certHome.dir, 'key.pem')), cert: await readFile(cert) }, (req, res) => {
        res.writeHead(req.url === '/.well-known/matrix/client' ? 200 : 404, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ 'm.homeserver': { base_url: 'https://matrix.moved.example' } }));
      });
      await new Promise<void>((r) => tls.listen(0, '127.0.0.1', r));
      name = `localhost:${(tls.address() as AddressInfo).port}`;
    });
    afterAll(async () => {
      await new Promise((r) => tls.close(r));
      await certHome.cleanup();
    });

    /** The session as a login to NAME would have stored it: its user ID names the server NAME. */
    async function loginAs(): Promise<void> {
      await login();
      const file = join(config(), 'sessions', 'default.json');
      const record = JSON.parse(await readFile(file, 'utf8'));
      await writeFile(file, JSON.stringify({ ...record, userId: `@alice:${name}` }), { mode: 0o600 });
    }

    it('a warning while the stored homeserver still answers; a failure (exit 3) once it does not', async () => {
      await loginAs();
      const r = await runMxs(['doctor', '--json', '--timeout', '5s'], { env: { ...home.env, NODE_EXTRA_CA_CERTS: cert } });
      expect(check(r.json(), 'discovery')).toMatchObject({
        status: 'warning',
        detail: `${name} now points at https://matrix.moved.example, not at the stored ${hs.url} (which still answers).`,
        fix: `Log in again to use it: mxs login ${name}`,
      });
      await hs.close();
      const gone = await runMxs(['doctor', '--json', '--timeout', '5s'], { env: { ...home.env, NODE_EXTRA_CA_CERTS: cert } });
      expect(check(gone.json(), 'discovery')).toMatchObject({ status: 'failure', detail: expect.stringMatching(/the server moved\.$/) });
      expect(gone.code).toBe(3);
    }, 30_000);
  });
});

describeWithSecretService('mxs doctor: a keychain that hangs (gnome-keyring SIGSTOPped)', (ss) => {
  it('storage fails within MXS_KEYCHAIN_TIMEOUT_MS (exit 6); the checks that need the tokens are skipped', async () => {
    const keyHome = await makeHome('keychain');
    const env = { ...keyHome.env, ...ss().env, MXS_KEYCHAIN_TIMEOUT_MS: '1000' };
    try {
      const logged = await runMxs(['login', hs.url, '-u', 'alice', '--password-stdin', '--json', '--storage', 'keychain'], { input: 'alice-pw\n', env });
      expect(logged.code).toBe(0);
      const healthy = await runMxs(['doctor', '--json'], { env });
      expect(check(healthy.json(), 'storage')).toMatchObject({ status: 'ok', detail: expect.stringMatching(/^The OS keychain answered in \d+ms and holds the access and refresh tokens\.$/) });
      process.kill(ss().pids.keyring!, 'SIGSTOP');
      let r: RunResult;
      try {
        r = await runMxs(['doctor', '--json', '--timeout', '5s'], { env, timeoutMs: 15_000 });
      } finally {
        process.kill(ss().pids.keyring!, 'SIGCONT');
      }
      expect(check(r.json(), 'storage')).toMatchObject({ status: 'failure', detail: expect.stringMatching(/keychain read did not answer within 1000 ms/) });
      expect(check(r.json(), 'token').status).toBe('skipped');
      expect({ code: r.code, signal: r.signal, within: r.ms < 6000 }).toEqual({ code: 6, signal: null, within: true });
    } finally {
      await keyHome.cleanup();
    }
  }, 60_000);
});
