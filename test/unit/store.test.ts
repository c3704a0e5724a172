// Local state: the sessions file, the 0600 file secret store, atomic writes and the bounded keychain.
import { chmod, mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { afterEach, describe, expect, it } from '@jest/globals';
import type { SessionRecord, SessionSecret } from '../../src/model.js';
import { statusService } from '../../src/services/status.js';
import { tokenService } from '../../src/services/tokens.js';
import { writeFileAtomic } from '../../src/store/atomic.js';
import { KEYCHAIN_SERVICE, KeychainSecretStore, keychainUnavailable, type KeychainBackend } from '../../src/store/keychain.js';
import { publishPrefetch, takePrefetch } from '../../src/store/keychain-prefetch.js';
import { helperEnv } from '../../src/store/keytar-child.js';
import { T0, hintText, rejectionOf, type UnitWorld, worldPerTest } from '../support/unit-deps.js';

let w: UnitWorld;
worldPerTest((made) => (w = made));

const SECRET: SessionSecret = { accessToken: 'syt_a', refreshToken: 'syr_r', issuedAt: new Date(T0).toISOString(), expiresAt: null };
const RECORD: SessionRecord = {
  profile: 'default',
  homeserver: 'https://matrix.example.org',
  userId: '@alice:example.org',
  deviceId: 'DEVICE1',
  issuedAt: new Date(T0).toISOString(),
  expiresAt: null,
  refreshable: true,
  storage: 'file',
  method: 'password',
  auth: { type: 'matrix' },
};
const mode = async (p: string) => (await stat(p)).mode & 0o777;

describe('SessionStore', () => {
  it('round-trips a record and lists profiles, sorted', async () => {
    await w.deps.sessions.write({ ...RECORD, profile: 'work', auth: { type: 'matrix', refreshPath: '/v1/refresh' } });
    await w.deps.sessions.write(RECORD);
    expect(await w.deps.sessions.read('work')).toEqual({ ...RECORD, profile: 'work', auth: { type: 'matrix', refreshPath: '/v1/refresh' } });
    expect(await w.deps.sessions.profiles()).toEqual(['default', 'work']);
    await w.deps.sessions.remove('work');
    expect(await w.deps.sessions.read('work')).toBeNull();
    expect(await w.deps.sessions.profiles()).toEqual(['default']);
  });

  it('reads a missing profile as null and an absent directory as no profiles', async () => {
    expect(await w.deps.sessions.read('default')).toBeNull();
    expect(await w.deps.sessions.profiles()).toEqual([]);
  });

  it.each([
    ['not JSON', 'this is not json'],
    ['truncated JSON', '{"format":1,"profile":"def'],
    ['JSON null', 'null'],
    ['an unknown format', JSON.stringify({ ...RECORD, format: 99 })],
    ['no format', JSON.stringify(RECORD)],
    ['a missing userId', JSON.stringify({ format: 1, ...RECORD, userId: undefined })],
    ['a bad issuedAt', JSON.stringify({ format: 1, ...RECORD, issuedAt: 'yesterday' })],
    ['a bad expiresAt', JSON.stringify({ format: 1, ...RECORD, expiresAt: 42 })],
    ['a bad storage kind', JSON.stringify({ format: 1, ...RECORD, storage: 'cloud' })],
    ['a non-boolean refreshable', JSON.stringify({ format: 1, ...RECORD, refreshable: 'yes' })],
    ['another profile’s record', JSON.stringify({ format: 1, ...RECORD, profile: 'work' })],
  ])('a sessions file with %s: exit 6, and the file is left byte-identical', async (_case, content) => {
    const file = w.paths.session('default');
    await mkdir(dirname(file), { recursive: true, mode: 0o700 });
    await writeFile(file, content);
    const err = await rejectionOf(() => w.deps.sessions.read('default'));
    expect(err).toMatchObject({ code: 'storage', exitCode: 6 });
    expect(err.message).toContain(file);
    expect(await readFile(file, 'utf8')).toBe(content);
  });

  it('a corrupt sessions file makes status and token fail with exit 6, still untouched', async () => {
    const file = w.paths.session('default');
    await mkdir(dirname(file), { recursive: true });
    await writeFile(file, '{"format":1,');
    await expect(statusService('default', w.deps)).rejects.toMatchObject({ exitCode: 6 });
    await expect(tokenService('default', 60_000, w.deps)).rejects.toMatchObject({ exitCode: 6 });
    expect(await readFile(file, 'utf8')).toBe('{"format":1,');
    expect(w.requests()).toEqual([]);
  });
});

describe('FileSecretStore', () => {
  it('writes a 0600 file in a 0700 directory and reads it back', async () => {
    await w.files.set('default', SECRET);
    const file = w.paths.secret('default');
    expect(await mode(file)).toBe(0o600);
    expect(await mode(dirname(file))).toBe(0o700);
    expect(await w.files.get('default')).toEqual(SECRET);
  });

  it('tightens an existing secrets directory that others could enter', async () => {
    const dir = dirname(w.paths.secret('default'));
    await mkdir(dir, { recursive: true });
    await chmod(dir, 0o755);
    await w.files.set('default', SECRET);
    expect(await mode(dir)).toBe(0o700);
  });

  it.each([0o644, 0o640, 0o604, 0o660])('refuses a secret file with mode %o (exit 6), naming chmod 600', async (m) => {
    await w.files.set('default', SECRET);
    const file = w.paths.secret('default');
    await chmod(file, m);
    const err = await rejectionOf(() => w.files.get('default'));
    expect(err).toMatchObject({ code: 'storage', exitCode: 6 });
    expect(hintText(err)).toContain(`chmod 600 ${file}`);
  });

  it.each([
    ['not JSON', 'garbage'],
    ['no access token', JSON.stringify({ ...SECRET, accessToken: '' })],
    ['a bad refresh token', JSON.stringify({ ...SECRET, refreshToken: 5 })],
    ['a bad issuedAt', JSON.stringify({ ...SECRET, issuedAt: 'never' })],
  ])('an unreadable secret file (%s) is exit 6', async (_case, content) => {
    const file = w.paths.secret('default');
    await mkdir(dirname(file), { recursive: true, mode: 0o700 });
    await writeFile(file, content, { mode: 0o600 });
    await expect(w.files.get('default')).rejects.toMatchObject({ code: 'storage', exitCode: 6 });
  });

  it('reads a missing secret as null, and deleting one that is missing is fine', async () => {
    expect(await w.files.get('default')).toBeNull();
    await expect(w.files.delete('default')).resolves.toBeUndefined();
  });

  it('keeps profiles apart, one file each', async () => {
    await w.files.set('default', SECRET);
    await w.files.set('work', { ...SECRET, accessToken: 'syt_work' });
    expect((await w.files.get('work'))!.accessToken).toBe('syt_work');
    expect((await w.files.get('default'))!.accessToken).toBe('syt_a');
    expect((await readdir(dirname(w.paths.secret('default')))).sort()).toEqual(['default.json', 'work.json']);
  });
});

describe('hints for a corrupt store name the profile (issue 10 item 20)', () => {
  it.each([
    ['default', ''],
    ['work', ' --profile work'],
  ])('unreadable secrets of profile %s: the login hint can be run as it stands', async (profile, flag) => {
    await w.files.set(profile, SECRET);
    await writeFile(w.paths.secret(profile), '{"accessToken": ', { mode: 0o600 });
    const err = await rejectionOf(() => w.files.get(profile));
    expect(err).toMatchObject({ exitCode: 6 });
    expect(hintText(err)).toBe(`Log in again to replace them: mxs login SERVER${flag}`);
  });
});

describe('writeFileAtomic', () => {
  it('replaces the file and leaves no temp files behind', async () => {
    const file = join(w.dir, 'state', 'x.json');
    for (let i = 0; i < 5; i++) await writeFileAtomic(file, `{"n":${i}}`);
    expect(await readFile(file, 'utf8')).toBe('{"n":4}');
    expect(await readdir(dirname(file))).toEqual(['x.json']);
  });

  it('gives a replaced file mode 0600 even if the old one was wider', async () => {
    const file = join(w.dir, 'state', 'x.json');
    await mkdir(dirname(file), { recursive: true });
    await writeFile(file, 'old', { mode: 0o644 });
    await writeFileAtomic(file, 'new');
    expect(await mode(file)).toBe(0o600);
  });

  it('writes a secret file 0600 into a directory it leaves as it found it (a token file beside the user\'s own files)', async () => {
    const dir = join(w.dir, 'shared');
    await mkdir(dir, { mode: 0o755 });
    await chmod(dir, 0o755);
    await writeFileAtomic(join(dir, 'token'), 'syt_secret');
    expect(await mode(dir)).toBe(0o755);
    expect(await mode(join(dir, 'token'))).toBe(0o600);
    expect(await readFile(join(dir, 'token'), 'utf8')).toBe('syt_secret');
  });

  it('the state stores keep their own directories private: a widened secrets directory is tightened on the next write', async () => {
    await w.files.set('default', SECRET);
    const dir = dirname(w.paths.secret('default'));
    await chmod(dir, 0o755);
    await w.files.set('default', SECRET);
    expect(await mode(dir)).toBe(0o700);
  });

  it('leaves neither the old content damaged nor a temp file when the rename fails', async () => {
    const target = join(w.dir, 'state', 'occupied');
    await mkdir(join(target, 'child'), { recursive: true }); // a non-empty directory cannot be renamed over
    await expect(writeFileAtomic(target, 'data')).rejects.toThrow();
    expect(await readdir(dirname(target))).toEqual(['occupied']);
  });

  it('stores secrets and records from several concurrent writers without temp leftovers', async () => {
    await Promise.all(Array.from({ length: 10 }, (_, i) => w.files.set('default', { ...SECRET, accessToken: `syt_${i}` })));
    expect(await readdir(dirname(w.paths.secret('default')))).toEqual(['default.json']);
    expect((await w.files.get('default'))!.accessToken).toMatch(/^syt_\d$/);
  });
});

describe('KeychainSecretStore', () => {
  const memoryBackend = () => {
    const items = new Map<string, string>();
    const backend: KeychainBackend = {
      get: async (s, a) => items.get(`${s}/${a}`) ?? null,
      set: async (s, a, v) => {
        items.set(`${s}/${a}`, v);
      },
      delete: async (s, a) => items.delete(`${s}/${a}`),
    };
    return { items, backend };
  };

  it('stores one item per profile under the mxs service and the account it is given', async () => {
    const { items, backend } = memoryBackend();
    const store = new KeychainSecretStore(() => backend, 1000, (p) => `${p}@/cfg`);
    await store.set('default', SECRET);
    expect([...items.keys()]).toEqual([`${KEYCHAIN_SERVICE}/default@/cfg`]);
    expect(await store.get('default')).toEqual(SECRET);
    await store.delete('default');
    expect(await store.get('default')).toBeNull();
  });

  describe('a read started early (src/cli/early.ts)', () => {
    const SLOT = Symbol.for('mxs.keychain.prefetch');
    afterEach(() => {
      delete (globalThis as Record<symbol, unknown>)[SLOT];
    });

    it('is taken once, for its own item only; later reads ask the keychain', async () => {
      const { items, backend } = memoryBackend();
      items.set(`${KEYCHAIN_SERVICE}/default`, JSON.stringify({ ...SECRET, accessToken: 'fresh-from-keychain' }));
      const asked: string[] = [];
      const counting: KeychainBackend = { ...backend, get: (s, a) => (asked.push(a), backend.get(s, a)) };
      const early = JSON.stringify({ ...SECRET, accessToken: 'read-early' });
      publishPrefetch({ service: KEYCHAIN_SERVICE, account: 'default', backend: counting, read: Promise.resolve(early) });
      const store = new KeychainSecretStore(() => counting, 1000);
      expect(await store.get('other')).toBeNull(); // not its item: asks the keychain
      expect((await store.get('default'))?.accessToken).toBe('read-early');
      expect((await store.get('default'))?.accessToken).toBe('fresh-from-keychain'); // once only
      expect(asked).toEqual(['other', 'default']);
      expect(takePrefetch(KEYCHAIN_SERVICE, 'default')).toBeUndefined();
    });

    it('fails as a read would: exit 6 with its reason, and within the timeout when it never answers', async () => {
      const { backend } = memoryBackend();
      publishPrefetch({ service: KEYCHAIN_SERVICE, account: 'default', backend, read: Promise.reject(new Error('The name is not activatable')) });
      await expect(new KeychainSecretStore(() => backend, 1000).get('default')).rejects.toMatchObject({ code: 'storage', exitCode: 6, message: expect.stringContaining('not activatable') });
      publishPrefetch({ service: KEYCHAIN_SERVICE, account: 'default', backend, read: new Promise<never>(() => {}) });
      await expect(new KeychainSecretStore(() => backend, 50).get('default')).rejects.toMatchObject({ code: 'storage', message: expect.stringContaining('50 ms') });
    });
  });

  it.each(['get', 'set', 'delete'] as const)('a backend that never answers %s fails within the timeout with exit 6', async (op) => {
    const never = () => new Promise<never>(() => {});
    const store = new KeychainSecretStore(() => ({ get: never, set: never, delete: never }), 50);
    const started = Date.now();
    const err = await rejectionOf(() => (op === 'set' ? store.set('default', SECRET) : store[op]('default')));
    const elapsed = Date.now() - started;
    expect(err).toMatchObject({ code: 'storage', exitCode: 6 });
    expect(err.message).toContain('50 ms');
    expect(elapsed).toBeGreaterThanOrEqual(40);
    expect(elapsed).toBeLessThan(1000);
  });

  it('a backend that throws is exit 6, keeping the first line of its reason', async () => {
    const fail = async () => {
      throw new Error('Cannot autolaunch D-Bus without X11 $DISPLAY\nstack...');
    };
    const store = new KeychainSecretStore(() => ({ get: fail, set: fail, delete: fail }), 1000);
    const err = await rejectionOf(() => store.get('default'));
    expect(err).toMatchObject({ code: 'storage', exitCode: 6 });
    expect(err.message).toContain('Cannot autolaunch D-Bus');
    expect(err.message).not.toContain('stack...');
  });

  it('a keychain module that cannot be loaded is exit 6', async () => {
    const store = new KeychainSecretStore(() => {
      throw keychainUnavailable('the keytar native module could not be loaded (nope)');
    }, 1000);
    await expect(store.get('default')).rejects.toMatchObject({ code: 'storage', exitCode: 6 });
  });

  it('a corrupt keychain item is exit 6', async () => {
    const { items, backend } = memoryBackend();
    items.set(`${KEYCHAIN_SERVICE}/default`, '{not json');
    const store = new KeychainSecretStore(() => backend, 1000);
    await expect(store.get('default')).rejects.toMatchObject({ code: 'storage', exitCode: 6 });
  });
});

describe('the keychain helper process gets only what the keychain needs from the environment', () => {
  it('the D-Bus session, home, locale and what Node needs on Linux, macOS and Windows pass; MXS_PROXY_TOKEN and everything else do not', () => {
    const env = {
      PATH: '/usr/bin', HOME: '/home/a', LANG: 'de_DE.UTF-8', LC_ALL: 'C', DBUS_SESSION_BUS_ADDRESS: 'unix:path=/run/user/1000/bus', XDG_RUNTIME_DIR: '/run/user/1000', DISPLAY: ':0', XAUTHORITY: '/home/a/.Xauthority',
      SystemRoot: 'C:\\Windows', APPDATA: 'C:\\Users\\a\\AppData\\Roaming', __CF_USER_TEXT_ENCODING: '0x1F5:0x0:0x0',
      MXS_PROXY_TOKEN: 'proxy-secret', MXS_CONFIG_DIR: '/x', MXS_PROFILE: 'bot', BOT_DB_PASSWORD: 'pw', AWS_SECRET_ACCESS_KEY: 'k', NODE_OPTIONS: '--require /tmp/x.js', SSH_AUTH_SOCK: '/tmp/ssh', UNSET: undefined,
    };
    expect(Object.keys(helperEnv(env)).sort()).toEqual(['APPDATA', 'DBUS_SESSION_BUS_ADDRESS', 'DISPLAY', 'HOME', 'LANG', 'LC_ALL', 'PATH', 'SystemRoot', 'XAUTHORITY', 'XDG_RUNTIME_DIR', '__CF_USER_TEXT_ENCODING']);
  });
});
