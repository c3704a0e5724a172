// Issue 10, local state: profile names in messages (item 15), non-regular files planted as the
// sessions or secrets file (item 13), and file-system failures while creating or writing state
// (item 12). Every failure is an MxsError with the contract's exit code, never a raw errno (exit 1).
import { execFileSync } from 'node:child_process';
import { closeSync, constants, openSync } from 'node:fs';
import { mkdir, readdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { dirname, join } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { MxsError } from '../../src/errors.js';
import type { SessionRecord, SessionSecret } from '../../src/model.js';
import { statusService } from '../../src/services/status.js';
import { tokenService } from '../../src/services/tokens.js';
import { withLock } from '../../src/store/lock.js';
import { printable } from '../../src/printable.js';
import { statePaths, validateProfile, type StatePaths } from '../../src/store/paths.js';
import { FileSecretStore } from '../../src/store/secrets.js';
import { SessionStore } from '../../src/store/sessions.js';
import { T0, makeDeps, rejectionOf, type UnitWorld } from '../support/unit-deps.js';

function thrownBy(fn: () => unknown): MxsError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(MxsError);
    return err as MxsError;
  }
  throw new Error('expected an error');
}

describe('profile names (item 15)', () => {
  it.each(['default', 'work', 'a', '0', 'Work.2_x-y', 'a'.repeat(64)])('accepts %j', (name) => {
    expect(validateProfile(name)).toBe(name);
  });

  it.each([
    ['a newline', 'a\nb'],
    ['a carriage return', 'a\rb'],
    ['an escape sequence that clears the screen', 'x\u001b[2J\u001b[H'],
    ['a terminal title sequence', '\u001b]0;pwned\u0007'],
    ['a C1 CSI', 'a\u009b31mb'],
    ['a bidi override', 'abc\u202egpj.exe'],
    ['a NUL', 'a\u0000b'],
    ['a DEL', 'a\u007fb'],
    ['a line separator', 'a\u2028b'],
  ])('refuses a name with %s: a one-line usage error (exit 2) that echoes no control character', (_case, name) => {
    const err = thrownBy(() => validateProfile(name));
    expect(err).toMatchObject({ code: 'usage', exitCode: 2 });
    for (const text of [err.message, err.hint ?? '']) {
      expect(text).not.toMatch(/[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e]/);
    }
    expect(err.message).toMatch(/^Invalid profile name "/);
  });

  it('shows control characters JSON-style, so the user sees what was typed', () => {
    expect(thrownBy(() => validateProfile('a\nb')).message).toBe('Invalid profile name "a\\nb".');
    expect(thrownBy(() => validateProfile('x\u001b[2J')).message).toBe('Invalid profile name "x\\x1b[2J".');
  });

  it.each([
    ['empty', ''],
    ['a leading dot', '.hidden'],
    ['a leading dash', '-p'],
    ['a slash (path traversal)', '../../etc/passwd'],
    ['a space', 'my work'],
    ['65 characters', 'a'.repeat(65)],
    ['non-ASCII letters', 'café'],
  ])('refuses a name with %s (exit 2)', (_case, name) => {
    expect(thrownBy(() => validateProfile(name))).toMatchObject({ code: 'usage', exitCode: 2 });
  });

  it('cuts a very long name short in the message', () => {
    const err = thrownBy(() => validateProfile('x'.repeat(10_000)));
    expect(err.message.length).toBeLessThan(200);
    expect(err.message).toContain('…');
  });
});

describe('printable', () => {
  it.each([
    ['plain text', 'plain', 'plain'],
    ['a newline', 'a\nb', 'a\\nb'],
    ['a tab', 'tab\there', 'tab\\there'],
    ['an escape sequence', '\u001b[31mred', '\\x1b[31mred'],
    ['quotes and backslashes', 'q"uote\\', 'q\\"uote\\\\'],
    ['a C1 control', '\u009b', '\\x9b'],
    ['a bidi override', '\u202e', '\\u202e'],
    ['non-ASCII letters and emoji (kept)', 'émoji 🎉 ok', 'émoji 🎉 ok'],
    ['a lone surrogate', 'lone \ud800 surrogate', 'lone \\ud800 surrogate'],
    ['a zero-width space', 'a\u200bb', 'a\\u200bb'],
    ['a line separator', 'a\u2028b', 'a\\u2028b'],
  ])('escapes %s (inside quotes)', (_case, text, shown) => {
    expect(printable(text, { quoted: true })).toBe(shown);
  });

  it('shown bare (the default, as the ui shows messages), quotes and backslashes stay; control characters do not', () => {
    expect(printable('say "hi" \\o/\u001b]0;x\u0007\u202e')).toBe('say "hi" \\o/\\x1b]0;x\\x07\\u202e');
  });

  it.each([
    ['short text, kept whole', 'abc', 3, 'abc'],
    ['longer text, cut with …', 'abcd', 3, 'abc…'],
    ['emoji count as one character each', '🎉🎉🎉🎉', 2, '🎉🎉…'],
    ['the cut happens before escaping', '\n\n\n', 2, '\\n\\n…'],
  ])('bounds the length: %s', (_case, text, maxChars, shown) => {
    expect(printable(text, { maxChars })).toBe(shown);
  });
});

// ---------------------------------------------------------------------------------------------

let w: UnitWorld;
const unblock: string[] = [];
beforeEach(async () => {
  w = await makeDeps();
});
afterEach(async () => {
  // A reader stuck in a blocking open() of a FIFO holds a libuv thread: open the other end to let it go.
  for (const fifo of unblock.splice(0)) {
    try {
      closeSync(openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK));
    } catch {
      // nobody was waiting on it
    }
  }
  await w.cleanup();
});

/** Settles with the call's outcome, or with 'hung' when it has not settled within `ms`. */
async function within(ms: number, fn: () => Promise<unknown>): Promise<{ value?: unknown; error?: any; hung?: true }> {
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<{ hung: true }>((r) => (timer = setTimeout(() => r({ hung: true }), ms)));
  try {
    return await Promise.race([fn().then((value) => ({ value }), (error) => ({ error })), hung]);
  } finally {
    clearTimeout(timer);
  }
}

async function plantFifo(path: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  execFileSync('mkfifo', ['-m', '600', path]);
  unblock.push(path);
}

const RECORD_JSON = (profile = 'default') =>
  JSON.stringify({
    format: 1,
    profile,
    homeserver: 'https://matrix.example.org',
    userId: '@alice:example.org',
    deviceId: 'DEVICE1',
    issuedAt: new Date(T0).toISOString(),
    expiresAt: null,
    refreshable: true,
    storage: 'file',
  });

describe('non-regular files planted as state (item 13)', () => {
  it('a FIFO as the sessions file: status and token refuse it at once with exit 6, naming the file', async () => {
    const file = w.paths.session('default');
    await plantFifo(file);
    for (const run of [() => w.deps.sessions.read('default'), () => statusService('default', w.deps), () => tokenService('default', 60_000, w.deps)]) {
      const r = await within(2000, run);
      expect(r.hung).toBeUndefined();
      expect(r.error).toMatchObject({ code: 'storage', exitCode: 6 });
      expect(r.error.message).toContain(file);
      expect(r.error.message).toMatch(/FIFO|named pipe/i);
    }
    expect(w.requests()).toEqual([]);
  });

  it('a FIFO as the secrets file: the file store refuses it at once with exit 6, naming the file', async () => {
    await mkdir(dirname(w.paths.session('default')), { recursive: true });
    await writeFile(w.paths.session('default'), RECORD_JSON());
    const file = w.paths.secret('default');
    await plantFifo(file);
    for (const run of [() => w.files.get('default'), () => tokenService('default', 60_000, w.deps)]) {
      const r = await within(2000, run);
      expect(r.hung).toBeUndefined();
      expect(r.error).toMatchObject({ code: 'storage', exitCode: 6 });
      expect(r.error.message).toContain(file);
    }
  });

  it.each([
    ['a symlink to /dev/zero (endless)', async (p: string) => symlink('/dev/zero', p), /not a regular file/],
    ['a symlink to a character device', async (p: string) => symlink('/dev/null', p), /not a regular file/],
    ['a directory', async (p: string) => mkdir(p), /not a regular file/],
    ['a Unix socket', async (p: string) => listenOn(p), /not a regular file/],
    ['a 2 MiB file', async (p: string) => writeFile(p, ' '.repeat(2 << 20), { mode: 0o600 }), /too large/],
  ])('%s as the sessions or secrets file: exit 6 at once, naming the file and what it is', async (_case, plant, why) => {
    for (const [file, read] of [
      [w.paths.session('default'), () => w.deps.sessions.read('default')],
      [w.paths.secret('default'), () => w.files.get('default')],
    ] as const) {
      await mkdir(dirname(file), { recursive: true, mode: 0o700 });
      await plant(file);
      const r = await within(500, read);
      expect(r.hung).toBeUndefined();
      expect(r.error).toMatchObject({ code: 'storage', exitCode: 6 });
      expect(r.error.message).toContain(file);
      expect(r.error.message).toMatch(why);
    }
  });

  it('a symlink to a regular file still reads (dotfile managers link their files)', async () => {
    const real = join(w.dir, 'elsewhere.json');
    await writeFile(real, RECORD_JSON());
    await mkdir(w.paths.sessionsDir, { recursive: true });
    await symlink(real, w.paths.session('default'));
    expect(await w.deps.sessions.read('default')).toMatchObject({ userId: '@alice:example.org' });
  });

  it('a record naming another profile with control characters is reported escaped', async () => {
    await mkdir(w.paths.sessionsDir, { recursive: true });
    await writeFile(w.paths.session('default'), RECORD_JSON('x\u001b]0;pwned\u0007\u009b2J'));
    const err = await rejectionOf(() => w.deps.sessions.read('default'));
    expect(err).toMatchObject({ code: 'storage', exitCode: 6 });
    expect(err.message).not.toMatch(/[\u0000-\u001f\u007f-\u009f]/);
  });
});

const servers: Server[] = [];
afterAll(() => {
  for (const s of servers) s.close();
});
function listenOn(path: string): Promise<void> {
  const server = createServer();
  servers.push(server);
  return new Promise((resolve) => server.listen(path, () => resolve()));
}

// ---------------------------------------------------------------------------------------------

describe('file-system failures while creating or writing state (item 12)', () => {
  const SECRET: SessionSecret = { accessToken: 'syt_a', refreshToken: 'syr_r', issuedAt: new Date(T0).toISOString(), expiresAt: null };
  const RECORD: SessionRecord = JSON.parse(RECORD_JSON());
  delete (RECORD as { format?: number }).format;

  /** A config dir broken in one way; `culprit` is the path at fault, which messages must name. */
  const cases: [string, (dir: string) => Promise<{ root: string; culprit: string }>][] = [
    [
      'the config dir’s parent is a regular file (ENOTDIR)',
      async (dir) => {
        await writeFile(join(dir, 'file'), 'x');
        return { root: join(dir, 'file', 'config'), culprit: join(dir, 'file') };
      },
    ],
    [
      'the config dir is a regular file',
      async (dir) => {
        await writeFile(join(dir, 'config'), 'x');
        return { root: join(dir, 'config'), culprit: join(dir, 'config') };
      },
    ],
    [
      'the config dir is a dangling symlink',
      async (dir) => {
        await symlink(join(dir, 'gone'), join(dir, 'config'));
        return { root: join(dir, 'config'), culprit: join(dir, 'config') };
      },
    ],
    [
      'the config dir is a symlink loop',
      async (dir) => {
        await symlink(join(dir, 'config'), join(dir, 'config'));
        return { root: join(dir, 'config'), culprit: join(dir, 'config') };
      },
    ],
  ];

  const setUp = async (make: (dir: string) => Promise<{ root: string; culprit: string }>) => {
    const { root, culprit } = await make(w.dir);
    const paths = statePaths(root);
    return { root, culprit, paths, sessions: new SessionStore(paths), files: new FileSecretStore(paths) };
  };

  const expectStorage = (err: any, culprit: string) => {
    expect(err).toBeInstanceOf(MxsError);
    expect(err).toMatchObject({ code: 'storage', exitCode: 6 });
    expect(err.message).toContain(culprit);
    expect(err.message).toMatch(/where mxs needs a directory|which does not exist|symbolic link in a loop/);
    expect(err.message.split('\n')).toHaveLength(1);
  };

  it.each(cases)('%s: taking the lock is exit 6 naming the path at fault, not a raw error (exit 1)', async (_case, make) => {
    const { culprit, paths } = await setUp(make);
    let ran = false;
    const err = await rejectionOf(() => withLock(paths.lock('default'), { waitMs: 1000 }, async () => (ran = true)));
    expectStorage(err, culprit);
    expect(err.hint).toMatch(/MXS_CONFIG_DIR/);
    expect(ran).toBe(false);
  });

  it.each(cases)('%s: storing secrets is exit 6 naming the path at fault and what to fix', async (_case, make) => {
    const { culprit, files } = await setUp(make);
    const err = await rejectionOf(() => files.set('default', SECRET));
    expectStorage(err, culprit);
    expect(err.hint).toMatch(/MXS_CONFIG_DIR/);
  });

  it.each(cases)('%s: writing the sessions file is exit 6 saying what is wrong', async (_case, make) => {
    const { culprit, sessions } = await setUp(make);
    expectStorage(await rejectionOf(() => sessions.write(RECORD)), culprit);
  });

  it.each(cases)('%s: the probe assertStateWritable() fails up front with exit 6, naming the path at fault', async (_case, make) => {
    const { culprit, sessions, files } = await setUp(make);
    const err = await rejectionOf(() => sessions.assertStateWritable('default', { secrets: true }));
    expectStorage(err, culprit);
    expect(err.hint).toMatch(/MXS_CONFIG_DIR/);
    expectStorage(await rejectionOf(() => files.assertWritable('default')), culprit);
  });

  it.each(cases)('%s: deleting secrets that cannot exist is not an error', async (_case, make) => {
    const { files } = await setUp(make);
    await expect(files.delete('default')).resolves.toBeUndefined();
  });

  it.each([
    ['locks', (p: StatePaths) => dirname(p.lock('default'))],
    ['sessions', (p: StatePaths) => p.sessionsDir],
    ['secrets', (p: StatePaths) => dirname(p.secret('default'))],
  ])('a regular file where the %s directory belongs (EEXIST): the probe names it, exit 6', async (_name, where) => {
    const { root, paths, sessions } = await setUp(async (dir) => ({ root: join(dir, 'config'), culprit: '' }));
    await mkdir(root, { recursive: true });
    await writeFile(where(paths), 'in the way');
    expectStorage(await rejectionOf(() => sessions.assertStateWritable('default', { secrets: true })), where(paths));
  });

  it('a regular file where the locks directory belongs: the lock is exit 6 naming it (not "EEXIST … bug")', async () => {
    const locks = dirname(w.paths.lock('default'));
    await mkdir(dirname(locks), { recursive: true });
    await writeFile(locks, 'in the way');
    const err = await rejectionOf(() => withLock(w.paths.lock('default'), { waitMs: 1000 }, async () => 1));
    expectStorage(err, locks);
  });

  it('a directory where the sessions or secrets file belongs: the probe says so (exit 6)', async () => {
    await mkdir(join(w.paths.session('default'), 'x'), { recursive: true });
    const err = await rejectionOf(() => w.deps.sessions.assertStateWritable('default'));
    expect(err).toMatchObject({ code: 'storage', exitCode: 6 });
    expect(err.message).toContain(w.paths.session('default'));
  });

  it('in a healthy place the probe creates the directories 0700 and leaves nothing behind', async () => {
    const root = join(w.dir, 'fresh', 'config');
    const sessions = new SessionStore(statePaths(root));
    await sessions.assertStateWritable('default', { secrets: true });
    expect((await readdir(root)).sort()).toEqual(['locks', 'secrets', 'sessions']);
    for (const d of ['locks', 'secrets', 'sessions']) {
      expect((await stat(join(root, d))).mode & 0o777).toBe(0o700);
      expect(await readdir(join(root, d))).toEqual([]);
    }
    // Without secrets: no secrets directory.
    const root2 = join(w.dir, 'fresh2');
    await new SessionStore(statePaths(root2)).assertStateWritable('work');
    expect((await readdir(root2)).sort()).toEqual(['locks', 'sessions']);
  });

  it('the probe leaves an existing session and lock alone', async () => {
    await w.seed({ storage: 'file' });
    const before = await readFile(w.paths.session('default'), 'utf8');
    await w.deps.sessions.assertStateWritable('default', { secrets: true });
    expect(await readFile(w.paths.session('default'), 'utf8')).toBe(before);
    expect(await w.files.get('default')).not.toBeNull();
  });
});
