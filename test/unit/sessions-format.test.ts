// Sessions files written by earlier releases keep working (contract: "a newer mxs reads every
// sessions-file format an older one wrote"). The fixtures in test/fixtures/format1 were written by
// mxs 0.1's own SessionStore and FileSecretStore (commit 59e7e5a), not by hand.
import { copyFile, mkdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { loginService } from '../../src/services/login.js';
import { statusAllService } from '../../src/services/status.js';
import { tokenService } from '../../src/services/tokens.js';
import { FORMAT } from '../../src/store/sessions.js';
import { HS, makeDeps, rejectionOf, replyJson, replyVersions, type UnitWorld } from '../support/unit-deps.js';

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'format1');

let w: UnitWorld;
beforeEach(async () => {
  w = await makeDeps();
  await mkdir(w.paths.sessionsDir, { recursive: true, mode: 0o700 });
  for (const p of ['default', 'legacy-v1']) await copyFile(join(FIXTURES, `${p}.json`), w.paths.session(p));
});
afterEach(async () => {
  await w.cleanup();
});

describe('format 1 (mxs 0.1)', () => {
  it('reads every field of a password session, as a Matrix session', async () => {
    expect(await w.deps.sessions.read('default')).toEqual({
      profile: 'default',
      homeserver: 'http://127.0.0.1:8008',
      userId: '@alice:localhost',
      deviceId: 'OLDDEVICE1',
      issuedAt: '2026-11-30T10:00:00.000Z',
      expiresAt: '2026-11-30T10:01:00.000Z',
      refreshable: true,
      storage: 'file',
      method: 'password',
      auth: { type: 'matrix' },
      clockSkewMs: null,
    });
  });

  it('keeps the remembered refresh path, the --insecure choice and the clock skew', async () => {
    expect(await w.deps.sessions.read('legacy-v1')).toMatchObject({
      storage: 'keychain',
      expiresAt: null,
      refreshable: false,
      insecure: true,
      clockSkewMs: 120000,
      auth: { type: 'matrix', refreshPath: '/v1/refresh' },
    });
  });

  it('is upgraded to the current format, losing nothing, when the record is next written', async () => {
    const old = (await w.deps.sessions.read('legacy-v1'))!;
    await w.deps.sessions.write(old);
    const raw = JSON.parse(await readFile(w.paths.session('legacy-v1'), 'utf8'));
    // 2: format 3 is written only for client-credentials sessions (test/unit/client-credentials.test.ts).
    expect(raw.format).toBe(2);
    expect(FORMAT).toBe(3);
    expect(raw).not.toHaveProperty('refreshPath');
    expect(await w.deps.sessions.read('legacy-v1')).toEqual(old);
  });

  it('its secrets file (unchanged format) is read by today\'s file store', async () => {
    await mkdir(dirname(w.paths.secret('default')), { recursive: true, mode: 0o700 });
    await copyFile(join(FIXTURES, 'secrets', 'default.json'), w.paths.secret('default'));
    const { chmod } = await import('node:fs/promises');
    await chmod(w.paths.secret('default'), 0o600);
    expect(await w.files.get('default')).toEqual({
      accessToken: 'syt_YWxpY2U_fixtureAccessToken_0001',
      refreshToken: 'syr_YWxpY2U_fixtureRefreshToken_0001',
      issuedAt: '2026-11-30T10:00:00.000Z',
      expiresAt: '2026-11-30T10:01:00.000Z',
    });
  });
});

describe('format 2', () => {
  it.each([
    ['an unknown method', { method: 'magic' }, 'bad method'],
    ['no auth', { auth: null }, 'missing auth'],
    ['an OAuth auth without its client', { method: 'oauth', auth: { type: 'oauth', issuer: 'https://a/', tokenEndpoint: 'https://a/t', revocationEndpoint: 'https://a/r' } }, 'missing auth.clientId'],
    ['an unknown auth type', { auth: { type: 'kerberos' } }, 'bad auth.type'],
    ['a format that is not a number', { format: 'two' }, 'unknown format "two"'],
  ])('a record with %s is reported corrupt (exit 6), not guessed at', async (_case, change, why) => {
    const record = (await w.deps.sessions.read('default'))!;
    await w.deps.sessions.write(record);
    const raw = JSON.parse(await readFile(w.paths.session('default'), 'utf8'));
    const { writeFile } = await import('node:fs/promises');
    await writeFile(w.paths.session('default'), JSON.stringify({ ...raw, ...change }));
    await expect(w.deps.sessions.read('default')).rejects.toMatchObject({ exitCode: 6, message: expect.stringContaining(why) });
  });
});

describe('a sessions file written by a newer mxs (a format this one does not know)', () => {
  let newer: string;
  beforeEach(async () => {
    const raw = JSON.parse(await readFile(w.paths.session('default'), 'utf8'));
    newer = JSON.stringify({ ...raw, format: FORMAT + 1, somethingNew: { x: 1 } }, null, 2) + '\n';
    const { writeFile } = await import('node:fs/promises');
    await writeFile(w.paths.session('default'), newer);
  });

  it('is reported as written by a newer mxs (exit 6), not as corrupt, with what to do', async () => {
    const err = await rejectionOf(() => tokenService('default', 60_000, w.deps));
    expect(err).toMatchObject({ exitCode: 6, code: 'storage' });
    expect(err.message).toContain('newer mxs');
    expect(err.message).toContain(w.paths.session('default'));
    expect(err.message).not.toMatch(/corrupt/);
    expect(err.hint).toMatch(/newer mxs/);
    expect(err.hint).toContain('--profile');
    expect(await readFile(w.paths.session('default'), 'utf8')).toBe(newer);
  });

  it('login on that profile refuses (exit 6) before any credential is sent, and the file is left as it is', async () => {
    replyVersions(w.agent, HS);
    replyJson(w.agent, HS, 'GET', '/_matrix/client/v3/login', 200, { flows: [{ type: 'm.login.password' }] });
    const input = { profile: 'default', server: HS, credentials: { type: 'm.login.password' as const, user: 'alice', password: 'pw' }, refresh: true, insecure: false, storage: 'file' as const };
    const err = await rejectionOf(() => loginService(input, w.deps));
    expect(err).toMatchObject({ exitCode: 6 });
    expect(err.message).toContain('newer mxs');
    expect(w.requests().filter((r) => r.method === 'POST')).toEqual([]);
    expect(await readFile(w.paths.session('default'), 'utf8')).toBe(newer);
  });

  it('status --all still shows the other profiles and names the one it could not read', async () => {
    const { reports, unreadable } = await statusAllService(w.deps);
    expect(reports.map((r) => r.status.profile)).toEqual(['legacy-v1']);
    expect(unreadable).toEqual([{ profile: 'default', error: expect.objectContaining({ exitCode: 6, message: expect.stringContaining('newer mxs') }) }]);
  });
});
