// `mxs doctor`'s checks (src/services/doctor/), each alone, from injected facts: the unit world's
// real files in a temp dir, an in-memory keychain and undici's MockAgent. The failures staged for real
// (processes, Synapse, a frozen keychain, faketime) are in test/integration/doctor*.test.ts.
import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { chmod, mkdir, readdir, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname } from 'node:path';
import { checkConfig, checkLock, checkStorage } from '../../src/services/doctor/local.js';
import { checkAuth, checkClock, checkDiscovery, checkServer, serverName } from '../../src/services/doctor/server.js';
import { checkDevice, checkRefresh, checkToken } from '../../src/services/doctor/session.js';
import { doctorService, type DoctorDeps, type Finding } from '../../src/services/doctor/index.js';
import { me } from '../../src/store/lock-owner.js';
import { doctorLines, doctorSummary } from '../../src/ui/doctor.js';
import { NO_COLORS } from '../../src/ui/output.js';
import { HS, ISSUER, T0, hintText, makeDeps, replyJson, replyVersions, UnusableKeychain, type UnitWorld, OAUTH_METADATA } from '../support/unit-deps.js';

const WHOAMI = '/_matrix/client/v3/account/whoami';
const DEVICE = '/_matrix/client/v3/devices/DEVICE1';
const ME = { user_id: '@alice:example.org', device_id: 'DEVICE1' };
const MIN = 60_000;

let w: UnitWorld;
let deps: DoctorDeps;
async function world(opts: Parameters<typeof makeDeps>[0] = {}) {
  w = await makeDeps(opts);
  deps = { ...w.deps, paths: w.paths, root: w.dir };
}
beforeEach(() => world());
afterEach(async () => {
  await w.cleanup();
});

const fixText = (f: Finding) => hintText({ hint: f.fix ?? '' });
const seeded = async (opts: Parameters<UnitWorld['seed']>[0] = {}) => (await w.seed(opts)).record;

describe('config', () => {
  it('is ok when every directory is 0700 and every file 0600', async () => {
    await seeded({ storage: 'file' });
    await chmod(w.dir, 0o700);
    const { finding, record } = await checkConfig('default', deps);
    expect(finding).toMatchObject({ status: 'ok', fix: null });
    expect(finding.detail).toContain('the sessions file is in a format this mxs reads (1 to 3)');
    expect(record?.userId).toBe('@alice:example.org');
  });

  it.each([
    ['no session stored', async () => {}, 'auth', /No session is stored for profile "default"/, /^Run: mxs login SERVER$/],
    ['a corrupt sessions file', async () => writeFile(w.paths.session('default'), '{"format":2'), 'storage', /is corrupt \(not valid JSON\)/, /Inspect or delete it/],
    ['a sessions file written by a newer mxs', async () => writeFile(w.paths.session('default'), JSON.stringify({ format: 9 })), 'storage', /written by a newer mxs \(format 9/, /Use the newer mxs/],
  ])('fails on %s', async (_name, stage, kind, detail, fix) => {
    await mkdir(w.paths.sessionsDir, { recursive: true });
    await stage();
    const { finding, record } = await checkConfig('default', deps);
    expect(finding).toMatchObject({ status: 'failure', kind });
    expect(finding.detail).toMatch(detail);
    expect(fixText(finding)).toMatch(fix);
    expect(record).toBeNull();
  });

  it('fails (storage) on a secrets file others can read, naming the chmod', async () => {
    await seeded({ storage: 'file' });
    await chmod(w.paths.secret('default'), 0o644);
    const { finding } = await checkConfig('default', deps);
    expect(finding).toMatchObject({ status: 'failure', kind: 'storage' });
    expect(finding.detail).toMatch(/readable by others \(mode 0644\)/);
    expect(fixText(finding)).toBe(`Run: chmod 600 ${w.paths.secret('default')}  (and consider the tokens in it leaked: log in again)`);
  });

  it.each([
    ['the config dir', () => w.dir, 0o755, 'chmod 700'],
    ['the sessions dir', () => w.paths.sessionsDir, 0o750, 'chmod 700'],
    ['the sessions file', () => w.paths.session('default'), 0o644, 'chmod 600'],
  ])('warns when %s is open to others', async (_name, path, mode, fix) => {
    await seeded({ storage: 'file' });
    await chmod(w.dir, 0o700);
    await chmod(path(), mode);
    const { finding } = await checkConfig('default', deps);
    expect(finding.status).toBe('warning');
    expect(fixText(finding)).toBe(`Run: ${fix} ${path()}`);
  });
});

describe('storage', () => {
  it('says how long the keychain took when it holds the tokens', async () => {
    const record = await seeded();
    let t = 0;
    const { finding, secret } = await checkStorage(record, deps, () => (t += 40));
    expect(finding).toMatchObject({ status: 'ok', detail: 'The OS keychain answered in 40ms and holds the access and refresh tokens.' });
    expect(secret?.accessToken).toBe('syt_old_access');
    expect(w.remembered).toContain('syt_old_access');
  });

  it('fails (storage) when the keychain is unusable', async () => {
    await world({ keychain: new UnusableKeychain() });
    await w.deps.sessions.write({ ...(await makeRecord()), storage: 'keychain' });
    const { finding } = await checkStorage((await w.deps.sessions.read('default'))!, deps);
    expect(finding).toMatchObject({ status: 'failure', kind: 'storage' });
    expect(finding.detail).toMatch(/keychain is unusable: no Secret Service is running/);
  });

  it('fails (storage) when the keychain holds no item for the profile', async () => {
    const record = await seeded();
    await w.keychain.delete('default');
    const { finding } = await checkStorage(record, deps);
    expect(finding).toMatchObject({ status: 'failure', kind: 'storage' });
    expect(finding.detail).toMatch(/holds no tokens for profile "default": it is locked, or the item was deleted/);
  });

  it('fails (auth) when the secrets file is gone, and (storage) when others can read it', async () => {
    const record = await seeded({ storage: 'file' });
    await chmod(w.paths.secret('default'), 0o644);
    expect((await checkStorage(record, deps)).finding).toMatchObject({ status: 'failure', kind: 'storage' });
    await w.files.delete('default');
    const { finding } = await checkStorage(record, deps);
    expect(finding).toMatchObject({ status: 'failure', kind: 'auth' });
    expect(fixText(finding)).toBe(`Run: mxs login ${HS}`);
  });
});

async function makeRecord() {
  const other = await makeDeps();
  const { record } = await other.seed();
  await other.cleanup();
  return record;
}

describe('lock', () => {
  const lockPath = () => w.paths.lock('default');
  const writeOwner = async (owner: object) => {
    await mkdir(dirname(lockPath()), { recursive: true });
    await writeFile(lockPath(), JSON.stringify({ v: 1, nonce: 'n', ...owner }));
  };
  const facts = { now: T0, waitMs: 105_000 };

  it('is ok when free, and reads without creating anything', async () => {
    expect(await checkLock(lockPath(), facts)).toMatchObject({ status: 'ok', detail: 'Free.' });
    expect(await readdir(w.dir)).toEqual([]);
  });

  it('warns about a lock held by a live process (this one), naming its PID and for how long', async () => {
    await writeOwner({ ...me(), since: new Date(T0 - 12_000).toISOString() });
    const f = await checkLock(lockPath(), facts);
    expect(f.status).toBe('warning');
    expect(f.detail).toBe(`Held by PID ${process.pid}, still running, for 12s (a refresh in progress?).`);
    expect(fixText(f)).toMatch(new RegExp(`kill ${process.pid}`));
  });

  it('fails (storage) when a live process has held it longer than any command waits', async () => {
    await writeOwner({ ...me(), since: new Date(T0 - 10 * MIN).toISOString() });
    expect(await checkLock(lockPath(), facts)).toMatchObject({ status: 'failure', kind: 'storage', detail: expect.stringMatching(/for 10m: longer than any mxs command waits/) });
  });

  it('warns that a lock left by a dead process is stale', async () => {
    const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
    await writeOwner({ ...me(), pid: dead, since: new Date(T0 - 5000).toISOString() });
    const f = await checkLock(lockPath(), facts);
    expect(f.status).toBe('warning');
    expect(f.detail).toBe(`Stale: left by PID ${dead}, which is no longer running (taken 5s ago).`);
    expect(fixText(f)).toMatch(/the next mxs command takes it over/);
  });

  it.each([
    ['held on another host', async () => writeOwner({ ...me(), host: `${hostname()}-other`, since: new Date(T0).toISOString() }), /cannot be told from here/],
    ['unreadable', async () => writeOwner({ garbage: true }), /unreadable/],
    ['a directory from mxs 0.1', async () => mkdir(lockPath(), { recursive: true }), /is a directory/],
  ])('warns about a lock %s', async (_name, stage, detail) => {
    await stage();
    const f = await checkLock(lockPath(), facts);
    expect(f.status).toBe('warning');
    expect(f.detail).toMatch(detail);
  });
});

describe('server', () => {
  it('is ok when /versions answers with Matrix versions', async () => {
    replyVersions(w.agent, HS);
    const { finding, reachable } = await checkServer(await seeded(), deps);
    expect(reachable).toBe(true);
    expect(finding.detail).toMatch(/^https:\/\/matrix\.example\.org answered \/versions in \S+ over TLS \(Matrix up to v1\.12\)\.$/);
  });

  it.each([
    ['a 502', 502, 'Bad gateway', /HTTP 502/],
    ['an answer without versions', 200, { hello: 1 }, /not a Matrix homeserver/],
  ])('fails (network) on %s', async (_name, status, body, detail) => {
    replyJson(w.agent, HS, 'GET', '/_matrix/client/versions', status, body);
    const { finding, reachable } = await checkServer(await seeded(), deps);
    expect(reachable).toBe(false);
    expect(finding).toMatchObject({ status: 'failure', kind: 'network' });
    expect(finding.detail).toMatch(detail);
    expect(finding.fix).not.toBeNull();
  });
});

describe('discovery', () => {
  const WK = 'https://example.org';
  const wellKnown = (status: number, body: unknown) => replyJson(w.agent, WK, 'GET', '/.well-known/matrix/client', status, body);

  it('takes the server name from the user ID', () => {
    expect(serverName('@alice:example.org:8448')).toBe('example.org:8448');
    expect(serverName('@alice')).toBeNull();
  });

  it.each<[string, () => void, boolean, string, RegExp]>([
    ['points at the stored homeserver', () => wellKnown(200, { 'm.homeserver': { base_url: `${HS}/` } }), true, 'ok', /^example\.org points at https:\/\/matrix\.example\.org\.$/],
    ['serves no .well-known (404)', () => wellKnown(404, { errcode: 'M_NOT_FOUND' }), true, 'ok', /serves no \.well-known; the stored homeserver .* is used as given/],
    ['cannot be reached', () => {}, true, 'ok', /^example\.org has no \.well-known within reach; the stored homeserver/],
    ['has a .well-known without base_url', () => wellKnown(200, { 'm.homeserver': {} }), true, 'warning', /no valid "m\.homeserver\.base_url"/],
    ['points elsewhere while the stored one answers', () => wellKnown(200, { 'm.homeserver': { base_url: 'https://new.example.org' } }), true, 'warning', /now points at https:\/\/new\.example\.org, not at the stored .* \(which still answers\)/],
    ['points elsewhere and the stored one is gone', () => wellKnown(200, { 'm.homeserver': { base_url: 'https://new.example.org' } }), false, 'failure', /the server moved/],
  ])('when the server name %s', async (_name, stage, answers, status, detail) => {
    stage();
    const f = await checkDiscovery(await seeded(), answers, deps);
    expect(f.status).toBe(status);
    expect(f.detail).toMatch(detail);
    if (status !== 'ok') expect(f.fix).not.toBeNull();
    if (status === 'failure') expect(f.kind).toBe('network');
    if (/elsewhere/.test(_name)) expect(fixText(f)).toBe('Log in again to use it: mxs login example.org');
  });
});

describe('auth', () => {
  const metadata = (issuer: string) => ({ ...OAUTH_METADATA, issuer });

  it('is skipped, as not applicable, for a password session', async () => {
    expect(await checkAuth(await seeded(), deps)).toMatchObject({ status: 'skipped', detail: 'Not applicable: a password session has no OAuth issuer.' });
    expect(w.requests()).toEqual([]);
  });

  it('is ok when the homeserver and the issuer both name the stored issuer', async () => {
    replyJson(w.agent, HS, 'GET', '/_matrix/client/v1/auth_metadata', 200, metadata(`${ISSUER}/`));
    replyJson(w.agent, ISSUER, 'GET', '/.well-known/openid-configuration', 200, { issuer: `${ISSUER}/` });
    expect(await checkAuth(await seeded({ oauth: true }), deps)).toMatchObject({ status: 'ok' });
  });

  it.each([
    ['names another issuer', () => replyJson(w.agent, HS, 'GET', '/_matrix/client/v1/auth_metadata', 200, metadata('https://other.example.org/')), /now names https:\/\/other\.example\.org\/ as its OAuth issuer/],
    [
      'no longer publishes OAuth metadata',
      () => {
        replyJson(w.agent, HS, 'GET', '/_matrix/client/v1/auth_metadata', 404, { errcode: 'M_UNRECOGNIZED' });
        replyJson(w.agent, HS, 'GET', '/_matrix/client/unstable/org.matrix.msc2965/auth_metadata', 404, { errcode: 'M_UNRECOGNIZED' });
      },
      /no longer publishes OAuth metadata/,
    ],
  ])('fails (auth) when the homeserver %s', async (_name, stage, detail) => {
    stage();
    const f = await checkAuth(await seeded({ oauth: true }), deps);
    expect(f).toMatchObject({ status: 'failure', kind: 'auth' });
    expect(f.detail).toMatch(detail);
    expect(fixText(f)).toBe(`Log in again: mxs login ${HS}`);
  });
});

describe('clock', () => {
  it.each<[number | null, string, RegExp]>([
    [null, 'skipped', /No server answer carried a Date header/],
    [400, 'ok', /^Within 1s of the server's\.$/],
    [29_000, 'ok', /^Within 29s/],
    [31_000, 'warning', /31s behind the server's/],
    [-4 * MIN, 'warning', /4m ahead of the server's/],
    [-10 * MIN, 'failure', /10m ahead of the server's: tokens and their expiry cannot be judged/],
    [6 * MIN, 'failure', /6m behind/],
  ])('skew %p ms: %s', (skew, status, detail) => {
    const f = checkClock(skew);
    expect(f.status).toBe(status);
    expect(f.detail).toMatch(detail);
    if (status === 'failure') expect(f.kind).toBe('auth');
    if (status === 'warning' || status === 'failure') expect(fixText(f)).toMatch(/timedatectl set-ntp true/);
  });
});

describe('token', () => {
  it('is ok when whoami names the stored user and device, with the time left', async () => {
    const { record, secret } = await w.seed({ lifetimeMs: 5 * MIN });
    replyJson(w.agent, HS, 'GET', WHOAMI, 200, ME);
    expect(await checkToken(record, secret, deps)).toMatchObject({ status: 'ok', detail: 'Accepted for @alice:example.org on device DEVICE1; 5m left.' });
  });

  it.each<[string, number, unknown, number, string, RegExp]>([
    ['a revoked token', 401, { errcode: 'M_UNKNOWN_TOKEN', error: 'Invalid access token passed.' }, 0, 'failure', /refused the access token \(M_UNKNOWN_TOKEN: Invalid access token passed\.\): the session was logged out, or its device deleted/],
    ['an expired token the refresh token can renew', 401, { errcode: 'M_UNKNOWN_TOKEN', error: 'expired', soft_logout: true }, 6 * MIN, 'warning', /^Expired \(expired 1m ago\); the refresh token can renew it\.$/],
    ['a token of another user', 200, { user_id: '@mallory:example.org', device_id: 'DEVICE1' }, 0, 'failure', /belongs to @mallory:example\.org, not to the stored @alice:example\.org/],
    ['a token of another device', 200, { user_id: '@alice:example.org', device_id: 'OTHER' }, 0, 'failure', /for device OTHER, not the stored DEVICE1/],
  ])('judges %s', async (_name, status, body, later, want, detail) => {
    const { record, secret } = await w.seed({ lifetimeMs: 5 * MIN });
    w.clock.advance(later);
    replyJson(w.agent, HS, 'GET', WHOAMI, status, body);
    const f = await checkToken(record, secret, deps);
    expect(f.status).toBe(want);
    expect(f.detail).toMatch(detail);
    expect(fixText(f)).toBe(want === 'warning' ? 'Run: mxs refresh' : `Run: mxs login ${HS}`);
    if (want === 'failure') expect(f.kind).toBe('auth');
    // Read-only: whoami alone, no refresh, no replay.
    expect(w.requests().map((r) => r.path)).toEqual([WHOAMI]);
  });
});

describe('refresh', () => {
  it.each<[string, object, boolean, string, RegExp]>([
    ['stored', {}, true, 'ok', /^Stored\.$/],
    ['stored for OAuth', { oauth: true }, true, 'ok', /OAuth client client-1; its registration is not checkable without side effects/],
    ['none, and none needed', { refreshToken: null, lifetimeMs: null }, true, 'ok', /none needed/],
    ['none, with an expiring token', { refreshToken: null }, true, 'warning', /No refresh token: the session ends when the access token does \(5m left\)/],
    ['refused by the server before', {}, false, 'failure', /refused it earlier/],
  ])('%s', async (_name, seed, refreshable, status, detail) => {
    const { record, secret } = await w.seed(seed);
    const f = checkRefresh({ ...record, refreshable }, secret, w.clock.now());
    expect(f.status).toBe(status);
    expect(f.detail).toMatch(detail);
  });
});

describe('device', () => {
  it('is ok when the device exists, and fails (auth) when it was deleted', async () => {
    const { record, secret } = await w.seed();
    replyJson(w.agent, HS, 'GET', DEVICE, 200, { device_id: 'DEVICE1' });
    expect(await checkDevice(record, secret, deps)).toMatchObject({ status: 'ok', detail: 'Device DEVICE1 exists.' });
    replyJson(w.agent, HS, 'GET', DEVICE, 404, { errcode: 'M_NOT_FOUND', error: 'Not found' });
    const f = await checkDevice(record, secret, deps);
    expect(f).toMatchObject({ status: 'failure', kind: 'auth', detail: 'Device DEVICE1 no longer exists on the server (deleted from another session).' });
  });
});

describe('doctorService', () => {
  const ids = (r: { findings: Finding[] }) => r.findings.map((f) => `${f.id}:${f.status}`);

  it('runs every check in order on a healthy session, changes nothing, and exits 0', async () => {
    await w.seed({ storage: 'file' });
    const before = await w.stored();
    replyVersions(w.agent, HS);
    replyJson(w.agent, HS, 'GET', WHOAMI, 200, ME, { date: new Date(T0).toUTCString() });
    replyJson(w.agent, HS, 'GET', DEVICE, 200, { device_id: 'DEVICE1' });
    const r = await doctorService('default', deps, { timeoutMs: 5000 });
    expect(ids(r)).toEqual(['config:ok', 'storage:ok', 'lock:ok', 'server:ok', 'discovery:ok', 'auth:skipped', 'clock:ok', 'token:ok', 'refresh:ok', 'device:ok']);
    expect(r).toMatchObject({ ok: true, exitCode: 0 });
    expect(w.requests().every((q) => q.method === 'GET')).toBe(true);
    expect(await w.stored()).toEqual(before);
    expect(await readdir(w.dir)).toEqual(['secrets', 'sessions']);
  });

  it('skips what needs the server when it is down, and exits 3 (the first failure)', async () => {
    await w.seed();
    replyJson(w.agent, HS, 'GET', '/_matrix/client/versions', 503, {}).times(3);
    const r = await doctorService('default', deps, { timeoutMs: 5000 });
    expect(ids(r)).toEqual(['config:ok', 'storage:ok', 'lock:ok', 'server:failure', 'discovery:ok', 'auth:skipped', 'clock:skipped', 'token:skipped', 'refresh:ok', 'device:skipped']);
    expect(r.findings.find((f) => f.id === 'token')!.detail).toBe('The server did not answer (see server).');
    expect(r).toMatchObject({ ok: false, exitCode: 3 });
  });

  it('an OAuth session with the server down: auth is skipped, not a second failure', async () => {
    await w.seed({ oauth: true });
    replyJson(w.agent, HS, 'GET', '/_matrix/client/versions', 503, {}).times(3);
    replyJson(w.agent, HS, 'GET', '/_matrix/client/v1/auth_metadata', 503, {}).times(3);
    const r = await doctorService('default', deps, { timeoutMs: 5000 });
    expect(r.findings.filter((f) => f.status === 'failure').map((f) => f.id)).toEqual(['server']);
    expect(r.findings[5]).toMatchObject({ id: 'auth', status: 'skipped', detail: 'The server did not answer (see server).' });
  });

  it('a secrets file others can read: config fails (6), the file is not read, what needs the tokens is skipped', async () => {
    await w.seed({ storage: 'file' });
    await chmod(w.paths.secret('default'), 0o644);
    replyVersions(w.agent, HS);
    const r = await doctorService('default', deps, { timeoutMs: 5000 });
    expect(ids(r).slice(0, 2)).toEqual(['config:failure', 'storage:skipped']);
    expect(r.findings[1]!.detail).toBe('Not read: the secrets file is not private (see config).');
    expect(ids(r).slice(7)).toEqual(['token:skipped', 'refresh:skipped', 'device:skipped']);
    expect(r.exitCode).toBe(6);
  });

  it('with no session: config fails (4), the lock is still checked, the rest skipped', async () => {
    const r = await doctorService('default', deps, { timeoutMs: 5000 });
    expect(ids(r)).toEqual(['config:failure', 'storage:skipped', 'lock:ok', ...['server', 'discovery', 'auth', 'clock', 'token', 'refresh', 'device'].map((i) => `${i}:skipped`)]);
    expect(r.exitCode).toBe(4);
    expect(w.requests()).toEqual([]);
  });

  it('bounds a check that does not finish by the timeout', async () => {
    const hang = { kind: 'keychain' as const, describe: () => 'the OS keychain', get: () => new Promise<never>(() => {}), set: async () => {}, delete: async () => {} };
    await world({ keychain: hang });
    const record = await makeRecord();
    await w.deps.sessions.write(record);
    replyVersions(w.agent, HS);
    const r = await doctorService('default', deps, { timeoutMs: 200 });
    expect(r.findings[1]).toMatchObject({ id: 'storage', status: 'failure', kind: 'storage', detail: 'Did not finish within 200ms.' });
    expect(r.exitCode).toBe(6);
  });
});

describe('rendering', () => {
  it('shows one line per check and the fix under each warning and failure', () => {
    const view = {
      profile: 'default',
      ok: false,
      checks: [
        { id: 'config', status: 'ok' as const, detail: 'fine', fix: null },
        { id: 'token', status: 'failure' as const, detail: 'refused', fix: 'Run: mxs login SERVER' },
        { id: 'device', status: 'skipped' as const, detail: 'no token', fix: null },
      ],
    };
    expect(doctorLines(view, NO_COLORS, 'Profile default')).toEqual([
      'Profile default',
      '✓ config    fine',
      '✗ token     refused',
      '            Run: mxs login SERVER',
      '- device    skipped: no token',
    ]);
    expect(doctorSummary([view])).toBe('1 failure.');
  });
});
