// Sessions files written by earlier releases keep working (contract: "a newer mxs reads every
// sessions-file format an older one wrote"). The fixtures in test/fixtures/format1 were written by
// mxs 0.1's own SessionStore and FileSecretStore (commit 59e7e5a), not by hand.
import { copyFile, mkdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { FORMAT } from '../../src/store/sessions.js';
import { makeDeps, type UnitWorld } from '../support/unit-deps.js';

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
    expect(raw.format).toBe(FORMAT);
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
    ['a future format', { format: 99 }, 'unknown format 99'],
  ])('a record with %s is reported corrupt (exit 6), not guessed at', async (_case, change, why) => {
    const record = (await w.deps.sessions.read('default'))!;
    await w.deps.sessions.write(record);
    const raw = JSON.parse(await readFile(w.paths.session('default'), 'utf8'));
    const { writeFile } = await import('node:fs/promises');
    await writeFile(w.paths.session('default'), JSON.stringify({ ...raw, ...change }));
    await expect(w.deps.sessions.read('default')).rejects.toMatchObject({ exitCode: 6, message: expect.stringContaining(why) });
  });
});
