// Issue 4: keychain storage end to end. The real CLI (bin/run.js) against the homeserver double, with its
// secrets in a real, private gnome-keyring on a private D-Bus (test/support/secret-service.ts).
//
// Every keyring access from this file goes through a child process given ss().env (runKeytarChild or mxs
// itself): in-process keytar only ever reaches the first keyring of a jest worker, and each describe block
// below has its own. findCredentials is never called (it segfaults on a locked collection).
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startHomeserverDouble, type HomeserverDouble } from '../support/homeserver-double.js';
import { BIN, filesBelow, makeHome, REPO, runMxs, startMxs, type RunResult } from '../support/cli.js';
import { describeWithSecretService, runKeytarChild } from '../support/secret-service.js';

const PW = 'alice-pw';
const SERVICE = 'mxs';

type Home = Awaited<ReturnType<typeof makeHome>>;

/** The keychain account mxs uses for a profile when MXS_CONFIG_DIR is set. */
const accountOf = (home: Home, profile = 'default') => `${profile}@${home.env.MXS_CONFIG_DIR}`;

/** Reads one item of service `mxs` in a child process bound to the given keyring; null when absent. */
async function readItem(env: Record<string, string>, account: string): Promise<string | null> {
  const out = await runKeytarChild(env, `process.stdout.write(JSON.stringify(await k.getPassword(${JSON.stringify(SERVICE)}, ${JSON.stringify(account)})));`);
  return JSON.parse(out) as string | null;
}

async function readSecret(env: Record<string, string>, account: string): Promise<{ accessToken: string; refreshToken: string | null; issuedAt: string; expiresAt: string | null } | null> {
  const text = await readItem(env, account);
  return text === null ? null : JSON.parse(text);
}

function mxsIn(home: Home, env: Record<string, string | undefined>) {
  return (args: string[], extra: { input?: string; env?: Record<string, string | undefined>; timeoutMs?: number } = {}) =>
    runMxs(args, { input: extra.input, env: { ...home.env, ...env, ...extra.env }, timeoutMs: extra.timeoutMs });
}

async function loginWith(run: ReturnType<typeof mxsIn>, hs: HomeserverDouble, args: string[] = [], env?: Record<string, string | undefined>): Promise<RunResult> {
  const r = await run(['login', hs.url, '-u', 'alice', '--password-stdin', '--json', ...args], { input: PW + '\n', env });
  expect(r.stdout + r.stderr).not.toContain(PW);
  return r;
}

/** The live child processes of `pid` whose command line passes `match`, with their environment (Linux /proc). */
async function childrenOf(pid: number, match: (cmdline: string) => boolean): Promise<{ pid: number; environ: Record<string, string> }[]> {
  const found: { pid: number; environ: Record<string, string> }[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const status = await readFile(`/proc/${entry}/status`, 'utf8').catch(() => '');
    if (!new RegExp(`^PPid:\\s+${pid}$`, 'm').test(status)) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (!match(cmdline)) continue;
    const raw = await readFile(`/proc/${entry}/environ`, 'utf8').catch(() => '');
    const environ: Record<string, string> = {};
    for (const pair of raw.split('\0').filter(Boolean)) environ[pair.slice(0, pair.indexOf('='))] = pair.slice(pair.indexOf('=') + 1);
    found.push({ pid: Number(entry), environ });
  }
  return found;
}

const postLogins = (hs: HomeserverDouble) => hs.requests.filter((q) => q.method === 'POST' && q.path.split('?')[0]!.endsWith('/login')).length;

const sessionFile = (home: Home, profile = 'default') => join(home.env.MXS_CONFIG_DIR!, 'sessions', `${profile}.json`);
const secretFile = (home: Home, profile = 'default') => join(home.env.MXS_CONFIG_DIR!, 'secrets', `${profile}.json`);

/** No token of `tokens` in any file below the config dir, and no secrets/ file at all. */
async function expectNoTokenInFiles(home: Home, tokens: (string | null | undefined)[]): Promise<void> {
  const files = await filesBelow(home.env.MXS_CONFIG_DIR!);
  expect(files.length).toBeGreaterThan(0);
  for (const f of files) {
    for (const t of tokens) if (t) expect({ file: f.path, leaks: f.content.includes(t) }).toEqual({ file: f.path, leaks: false });
  }
  expect(files.filter((f) => f.path.startsWith(join(home.env.MXS_CONFIG_DIR!, 'secrets')))).toEqual([]);
  expect(existsSync(join(home.env.MXS_CONFIG_DIR!, 'secrets'))).toBe(false);
}

/** A throwaway homeserver double and config dir per test. */
function perTest() {
  const state = {} as { hs: HomeserverDouble; home: Home };
  beforeEach(async () => {
    state.hs = await startHomeserverDouble({ accessTokenLifetimeMs: 60_000 });
    state.home = await makeHome('keychain');
  });
  afterEach(async () => {
    await state.hs?.close();
    await state.home?.cleanup();
  });
  return state;
}

describeWithSecretService('keychain storage: a session in a real gnome-keyring', (ss) => {
  const t = perTest();
  const mxs = (args: string[], extra: { input?: string; env?: Record<string, string | undefined> } = {}) => mxsIn(t.home, ss().env)(args, extra);
  const login = (args: string[] = []) => loginWith(mxsIn(t.home, ss().env), t.hs, args);

  test('login stores the session in the keyring, not in any file, and leaves no probe item', async () => {
    const r = await login(['--storage', 'keychain']);
    expect(r.code).toBe(0);
    expect(r.json()).toMatchObject({ profile: 'default', homeserver: t.hs.url, userId: '@alice:localhost', refreshable: true, storage: 'keychain' });
    expect(r.stderr).not.toMatch(/keychain unavailable/i);

    const [session] = t.hs.sessions();
    expect(session!.refreshToken).toEqual(expect.any(String));
    const item = await readItem(ss().env, accountOf(t.home));
    expect(item).not.toBeNull();
    expect(item).toContain(session!.accessToken);
    const secret = JSON.parse(item!);
    expect(secret).toEqual({ accessToken: session!.accessToken, refreshToken: session!.refreshToken, issuedAt: expect.any(String), expiresAt: expect.any(String) });
    // The login's JSON expiry and the stored one agree (the record and the item were written together).
    expect(secret.expiresAt).toBe(r.json().expiresAt);

    await expectNoTokenInFiles(t.home, [session!.accessToken, session!.refreshToken]);
    const record = JSON.parse(await readFile(sessionFile(t.home), 'utf8'));
    expect(record).toMatchObject({ storage: 'keychain', userId: '@alice:localhost' });
    expect(r.stdout + r.stderr).not.toContain(session!.accessToken);

    expect(await readItem(ss().env, `${accountOf(t.home)}.probe`)).toBeNull();
    // The item is keyed by config dir: nothing under the bare profile name.
    expect(await readItem(ss().env, 'default')).toBeNull();
  });

  test('MXS_STORAGE=keychain works like --storage keychain', async () => {
    const r = await login(); // makeHome('keychain') sets MXS_STORAGE=keychain
    expect(r.code).toBe(0);
    expect(r.json().storage).toBe('keychain');
    const secret = await readSecret(ss().env, accountOf(t.home));
    expect(secret?.accessToken).toBe(t.hs.sessions()[0]!.accessToken);
  });

  test('the session survives a new process: token, whoami, and status (no keychain, no D-Bus needed)', async () => {
    expect((await login(['--storage', 'keychain'])).code).toBe(0);
    const [session] = t.hs.sessions();

    const token = await mxs(['token']);
    expect(token.code).toBe(0);
    expect(token.stdout.trim()).toBe(session!.accessToken);
    expect(token.ms).toBeLessThan(5000);

    const tokenJson = await mxs(['token', '--json']);
    expect(tokenJson.code).toBe(0);
    expect(tokenJson.json()).toMatchObject({ accessToken: session!.accessToken, expiresAt: expect.any(String) });

    const who = await mxs(['whoami', '--json']);
    expect(who.code).toBe(0);
    expect(who.json()).toMatchObject({ profile: 'default', userId: '@alice:localhost', deviceId: session!.deviceId, refreshed: false });
    expect(who.stdout + who.stderr).not.toContain(session!.accessToken);

    // status: local state only. DBUS_SESSION_BUS_ADDRESS points nowhere (runMxs's default when the env
    // does not name it), and the preload records any socket or keytar load.
    const probe = join(t.home.dir, 'probe.log');
    await writeFile(probe, '');
    const status = await runMxs(['status', '--json'], {
      env: { ...t.home.env, NODE_OPTIONS: `--require ${join(REPO, 'test/support/no-network.cjs')}`, MXS_PROBE_FILE: probe },
    });
    expect(status.code).toBe(0);
    expect(status.json()).toMatchObject({ profile: 'default', loggedIn: true, userId: '@alice:localhost', expired: false, refreshable: true, storage: 'keychain' });
    expect(await readFile(probe, 'utf8')).toBe('');
    const text = await runMxs(['status'], { env: { ...t.home.env, MXS_STORAGE: 'file' } });
    expect(text.code).toBe(0);
    expect(text.stdout).toContain('@alice:localhost');
    // The item is untouched by all of this.
    expect((await readSecret(ss().env, accountOf(t.home)))?.accessToken).toBe(session!.accessToken);
  });

  test('token starts its one keychain read before the fast path has loaded (src/cli/early.ts); file sessions and other profiles never touch keytar', async () => {
    expect((await login(['--storage', 'keychain'])).code).toBe(0);
    const [session] = t.hs.sessions();
    const probe = join(t.home.dir, 'keytar-probe.log');
    const probed = async (args: string[], extra: Record<string, string> = {}) => {
      await writeFile(probe, '');
      const r = await runMxs(args, { env: { ...t.home.env, ...ss().env, NODE_OPTIONS: `--require ${join(REPO, 'test/support/keytar-probe.cjs')}`, MXS_PROBE_FILE: probe, ...extra } });
      return { r, calls: (await readFile(probe, 'utf8')).trim().split('\n').filter(Boolean) };
    };
    // Where keytar runs in mxs's own process (Node 22.15+) the read is seen here; on older Nodes it runs in the helper.
    const inProcess = typeof (process as unknown as { execve?: unknown }).execve === 'function';

    const early = await probed(['token']);
    expect(early.r.code).toBe(0);
    expect(early.r.stdout.trim()).toBe(session!.accessToken);
    if (inProcess) expect(early.calls).toEqual(['load keytar', `getPassword ${accountOf(t.home)} before hot.cjs`]);

    // Global flags before the command, and the profile by flag: the same single early read.
    const flagged = await probed(['-p', 'default', 'token', '--min-valid', '30s']);
    expect(flagged.r.code).toBe(0);
    if (inProcess) expect(flagged.calls).toEqual(['load keytar', `getPassword ${accountOf(t.home)} before hot.cjs`]);

    // Without the early read (as after a bare tsc build) the answer is the same: one read, later.
    const late = await probed(['token'], { MXS_NO_EARLY: '1' });
    expect(late.r.stdout).toBe(early.r.stdout);
    if (inProcess) expect(late.calls).toEqual(['load keytar', `getPassword ${accountOf(t.home)} after hot.cjs`]);

    // No session for that profile, or status (local state only): keytar is never loaded.
    expect((await probed(['token', '-p', 'nobody'])).calls).toEqual([]);
    expect((await probed(['status'])).calls).toEqual([]);
  });

  test('the keychain helper process gets only what libsecret needs from the environment: never MXS_PROXY_TOKEN or other secrets', async () => {
    expect((await login(['--storage', 'keychain'])).code).toBe(0);
    const proxyToken = `proxy-token-${Date.now()}-for-the-bot`;
    const run = startMxs(['proxy', '--json'], { env: { ...t.home.env, ...ss().env, MXS_PROXY_TOKEN: proxyToken, BOT_DB_PASSWORD: 'hunter2-db', LANG: 'C.UTF-8' }, timeoutMs: 60_000 });
    try {
      let out = '';
      run.child.stdout!.on('data', (d) => (out += d));
      const deadline = Date.now() + 30_000;
      while (!out.includes('\n') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      const url = (JSON.parse(out.split('\n')[0]!) as { url: string }).url;
      // The session was read from the keyring through the helper, and the proxy works with it.
      const whoami = await fetch(`${url}/_matrix/client/v3/account/whoami`, { headers: { authorization: `Bearer ${proxyToken}` } });
      expect(whoami.status).toBe(200);
      const helpers = await childrenOf(run.child.pid!, (cmdline) => cmdline.includes('keytar'));
      expect(helpers).toHaveLength(1);
      const env = helpers[0]!.environ;
      expect(env.MXS_PROXY_TOKEN).toBeUndefined();
      expect(env.BOT_DB_PASSWORD).toBeUndefined();
      expect(env.MXS_CONFIG_DIR).toBeUndefined();
      expect(env.DBUS_SESSION_BUS_ADDRESS).toBe(ss().env.DBUS_SESSION_BUS_ADDRESS);
      expect(env.LANG).toBe('C.UTF-8');
      expect(Object.values(env).join('\n')).not.toContain(proxyToken);
    } finally {
      run.child.kill('SIGTERM');
      await run.done;
    }
  });

  test('refresh replaces the keyring item: the new tokens are in it, the old ones are gone', async () => {
    expect((await login(['--storage', 'keychain'])).code).toBe(0);
    const before = (await readSecret(ss().env, accountOf(t.home)))!;
    expect(before.refreshToken).toEqual(expect.any(String));

    const r = await mxs(['refresh', '--json']);
    expect(r.code).toBe(0);
    expect(r.json()).toMatchObject({ profile: 'default', refreshTokenRotated: true });
    expect(t.hs.usedRefreshTokens).toEqual([before.refreshToken]);

    const after = (await readSecret(ss().env, accountOf(t.home)))!;
    const current = t.hs.sessions()[0]!;
    expect(after.accessToken).toBe(current.accessToken);
    expect(after.refreshToken).toBe(current.refreshToken);
    expect(after.accessToken).not.toBe(before.accessToken);
    expect(after.refreshToken).not.toBe(before.refreshToken);
    const raw = (await readItem(ss().env, accountOf(t.home)))!;
    expect(raw).not.toContain(before.accessToken);
    expect(raw).not.toContain(before.refreshToken!);
    expect(after.expiresAt).toBe(r.json().expiresAt);

    const token = await mxs(['token']);
    expect(token.code).toBe(0);
    expect(token.stdout.trim()).toBe(after.accessToken);
    await expectNoTokenInFiles(t.home, [before.accessToken, before.refreshToken, after.accessToken, after.refreshToken]);
    // The sessions file follows the item.
    const record = JSON.parse(await readFile(sessionFile(t.home), 'utf8'));
    expect(record).toMatchObject({ storage: 'keychain', expiresAt: after.expiresAt, issuedAt: after.issuedAt });
  });

  test('token refreshes a token near its expiry, and stores the new tokens in the keyring before printing', async () => {
    await t.hs.close();
    t.hs = await startHomeserverDouble({ accessTokenLifetimeMs: 3000 });
    expect((await login(['--storage', 'keychain'])).code).toBe(0);
    const before = (await readSecret(ss().env, accountOf(t.home)))!;
    // Refresh is due once less than half the lifetime (1.5 s) is left.
    await new Promise((r) => setTimeout(r, 1700));
    const r = await mxs(['token']);
    expect(r.code).toBe(0);
    const after = (await readSecret(ss().env, accountOf(t.home)))!;
    expect(after.accessToken).not.toBe(before.accessToken);
    expect(after.refreshToken).not.toBe(before.refreshToken);
    expect(r.stdout.trim()).toBe(after.accessToken);
    expect(t.hs.sessions()[0]!.accessToken).toBe(after.accessToken);
    expect(t.hs.usedRefreshTokens).toEqual([before.refreshToken]);
    await expectNoTokenInFiles(t.home, [before.accessToken, before.refreshToken, after.accessToken, after.refreshToken]);
  });

  test('logout deletes the keyring item and the sessions file', async () => {
    expect((await login(['--storage', 'keychain'])).code).toBe(0);
    const before = (await readSecret(ss().env, accountOf(t.home)))!;

    const r = await mxs(['logout', '--json']);
    expect(r.code).toBe(0);
    expect(r.json()).toEqual({ profile: 'default', serverSide: true });
    expect(await readItem(ss().env, accountOf(t.home))).toBeNull();
    expect(existsSync(sessionFile(t.home))).toBe(false);
    expect(existsSync(secretFile(t.home))).toBe(false);
    expect(t.hs.accessTokenStatus(before.accessToken)).toBe('unknown');

    const token = await mxs(['token']);
    expect(token.code).toBe(4);
    const local = await mxs(['logout', '--local']);
    expect(local.code).toBe(4);
  });

  test('logout --local forgets the item without asking the server', async () => {
    expect((await login(['--storage', 'keychain'])).code).toBe(0);
    const before = (await readSecret(ss().env, accountOf(t.home)))!;
    const r = await mxs(['logout', '--local', '--json']);
    expect(r.code).toBe(0);
    expect(r.json()).toEqual({ profile: 'default', serverSide: false });
    expect(await readItem(ss().env, accountOf(t.home))).toBeNull();
    expect(existsSync(sessionFile(t.home))).toBe(false);
    expect(t.hs.accessTokenStatus(before.accessToken)).toBe('valid');
  });

  test('two profiles and two config dirs never share an item', async () => {
    const other = await makeHome('keychain');
    try {
      const mxsOther = mxsIn(other, ss().env);
      expect((await login(['--storage', 'keychain'])).code).toBe(0);
      expect((await login(['--storage', 'keychain', '--profile', 'work'])).code).toBe(0);
      expect((await loginWith(mxsOther, t.hs, ['--storage', 'keychain'])).code).toBe(0);

      const accounts = [accountOf(t.home), accountOf(t.home, 'work'), accountOf(other)];
      const secrets = await Promise.all(accounts.map((a) => readSecret(ss().env, a)));
      const issued = t.hs.sessions().map((s) => s.accessToken);
      expect(issued).toHaveLength(3);
      expect(secrets.map((s) => s?.accessToken).sort()).toEqual([...issued].sort());
      expect(new Set(secrets.map((s) => s?.refreshToken)).size).toBe(3);

      // Each one's `token` prints its own item's token.
      expect((await mxs(['token'])).stdout.trim()).toBe(secrets[0]!.accessToken);
      expect((await mxs(['token', '--profile', 'work'])).stdout.trim()).toBe(secrets[1]!.accessToken);
      expect((await mxsOther(['token'])).stdout.trim()).toBe(secrets[2]!.accessToken);

      // Refreshing and logging out of one leaves the others' items alone.
      expect((await mxs(['refresh', '--profile', 'work'])).code).toBe(0);
      expect((await mxsOther(['logout'])).code).toBe(0);
      expect(await readItem(ss().env, accountOf(other))).toBeNull();
      expect(await readSecret(ss().env, accountOf(t.home))).toEqual(secrets[0]);
      const work = await readSecret(ss().env, accountOf(t.home, 'work'));
      expect(work?.accessToken).not.toBe(secrets[1]!.accessToken);
      expect((await mxs(['token'])).stdout.trim()).toBe(secrets[0]!.accessToken);
      expect((await mxs(['token', '--profile', 'work'])).stdout.trim()).toBe(work!.accessToken);
      await expectNoTokenInFiles(t.home, [...secrets.flatMap((s) => [s!.accessToken, s!.refreshToken]), work!.accessToken, work!.refreshToken]);
    } finally {
      await other.cleanup();
    }
  });

  test('a keychain item deleted behind mxs: token exits 6 and says so', async () => {
    expect((await login(['--storage', 'keychain'])).code).toBe(0);
    await runKeytarChild(ss().env, `await k.deletePassword(${JSON.stringify(SERVICE)}, ${JSON.stringify(accountOf(t.home))});`);
    const r = await mxs(['token', '--json']);
    expect(r.code).toBe(6);
    expect(r.json().error).toMatchObject({ code: 'storage', exitCode: 6 });
    expect(r.stderr).toMatch(/locked, or the item was deleted/);
  });
});

describe('keychain storage without any D-Bus session', () => {
  const t = perTest();
  // Two ways to have no session bus: the variable unset (with no DISPLAY and no XDG_RUNTIME_DIR/bus, so
  // GDBus cannot autolaunch or find one), or pointing at a socket that does not exist.
  const noBus: [string, Record<string, string | undefined>, RegExp][] = [
    ['DBUS_SESSION_BUS_ADDRESS unset', { DBUS_SESSION_BUS_ADDRESS: undefined, DISPLAY: undefined, WAYLAND_DISPLAY: undefined, XDG_RUNTIME_DIR: undefined }, /autolaunch D-Bus|X11|DISPLAY/],
    ['DBUS_SESSION_BUS_ADDRESS at a missing socket', { DBUS_SESSION_BUS_ADDRESS: 'unix:path=/nonexistent/mxs-test-bus', DISPLAY: undefined, WAYLAND_DISPLAY: undefined }, /Could not connect|No such file/],
  ];

  test.each(noBus)('%s: login --storage auto falls back to the 0600 file and says why', async (_name, env, why) => {
    const r = await loginWith(mxsIn(t.home, env), t.hs, ['--storage', 'auto']);
    expect(r.code).toBe(0);
    expect(r.json().storage).toBe('file');
    expect(r.stderr).toMatch(/keychain unavailable/i);
    expect(r.stderr).toMatch(why);
    expect(r.stderr).toContain(secretFile(t.home));
    expect(r.stderr).toMatch(/0600/);
    const [session] = t.hs.sessions();
    expect(JSON.parse(await readFile(secretFile(t.home), 'utf8')).accessToken).toBe(session!.accessToken);
    expect((await filesBelow(t.home.env.MXS_CONFIG_DIR!)).find((f) => f.path === secretFile(t.home))?.mode).toBe(0o600);
    expect(JSON.parse(await readFile(sessionFile(t.home), 'utf8')).storage).toBe('file');
    // The file session keeps working without any keychain.
    const token = await mxsIn(t.home, env)(['token']);
    expect(token.code).toBe(0);
    expect(token.stdout.trim()).toBe(session!.accessToken);
  });

  test.each(noBus)('%s: login --storage keychain exits 6 at once, before any credential is sent', async (_name, env, why) => {
    const r = await loginWith(mxsIn(t.home, env), t.hs, ['--storage', 'keychain']);
    expect(r.code).toBe(6);
    expect(r.ms).toBeLessThan(3000);
    expect(r.json().error).toMatchObject({ code: 'storage', exitCode: 6 });
    const [first, hint] = r.stderr.trim().split('\n').slice(-2);
    expect(first).toMatch(/keychain is unusable/i);
    expect(first).toMatch(why);
    expect(hint).toMatch(/--storage file/);
    expect(postLogins(t.hs)).toBe(0);
    expect(t.hs.sessions()).toEqual([]);
    expect(await filesBelow(t.home.dir)).toEqual([]);
  });

  test('MXS_STORAGE=keychain without a bus: exit 6 too', async () => {
    const r = await loginWith(mxsIn(t.home, {}), t.hs); // makeHome('keychain'); runMxs points the bus nowhere
    expect(r.code).toBe(6);
    expect(postLogins(t.hs)).toBe(0);
  });
});

describeWithSecretService('keychain storage: a locked keyring', (ss) => {
  // One keyring for the whole block: lock() cannot be undone. Tests run in order on one session.
  let hs: HomeserverDouble;
  let home: Home;
  let mxs: ReturnType<typeof mxsIn>;
  let accessToken: string;

  beforeAll(async () => {
    hs = await startHomeserverDouble({ accessTokenLifetimeMs: 60_000 });
    home = await makeHome('keychain');
    mxs = mxsIn(home, ss().env);
    const r = await loginWith(mxs, hs, ['--storage', 'keychain']);
    expect(r.code).toBe(0);
    accessToken = hs.sessions()[0]!.accessToken;
    expect((await readSecret(ss().env, accountOf(home)))?.accessToken).toBe(accessToken);
    await ss().lock();
  });
  afterAll(async () => {
    await hs?.close();
    await home?.cleanup();
  });

  test('token exits 6 at once, saying the keychain is locked, with a hint', async () => {
    const r = await mxs(['token']);
    expect(r.code).toBe(6);
    expect(r.ms).toBeLessThan(5000);
    expect(r.stdout).toBe('');
    const lines = r.stderr.trim().split('\n');
    expect(lines[0]).toMatch(/locked/);
    expect(lines[1]).toMatch(/Unlock the keychain/);
    expect(r.stderr).not.toContain(accessToken);
    const json = await mxs(['token', '--json']);
    expect(json.code).toBe(6);
    expect(json.json().error).toMatchObject({ code: 'storage', exitCode: 6, message: expect.stringMatching(/locked/) });
    expect(json.stdout).not.toContain(accessToken);
  });

  test('whoami and refresh exit 6 too, without sending anything', async () => {
    const sent = hs.requests.length;
    for (const cmd of [['whoami'], ['refresh']]) {
      const r = await mxs(cmd);
      expect({ cmd, code: r.code }).toEqual({ cmd, code: 6 });
      expect(r.stderr).toMatch(/locked/);
      expect(r.ms).toBeLessThan(5000);
    }
    expect(hs.requests.length).toBe(sent);
  });

  test('status still works from local state only', async () => {
    const r = await mxs(['status', '--json']);
    expect(r.code).toBe(0);
    expect(r.json()).toMatchObject({ loggedIn: true, storage: 'keychain', expired: false });
    const text = await mxs(['status']);
    expect(text.code).toBe(0);
    expect(text.stdout).toContain('@alice:localhost');
  });

  test('login --storage keychain exits 6 before any POST /login', async () => {
    const before = postLogins(hs);
    const r = await loginWith(mxs, hs, ['--storage', 'keychain']);
    expect(r.code).toBe(6);
    expect(r.ms).toBeLessThan(5000);
    expect(r.json().error).toMatchObject({ code: 'storage', exitCode: 6 });
    expect(r.stderr).toMatch(/locked collection|locked/i);
    expect(postLogins(hs)).toBe(before);
    expect(hs.sessions()).toHaveLength(1);
    // The stored session is left as it was.
    expect(JSON.parse(await readFile(sessionFile(home), 'utf8')).storage).toBe('keychain');
    expect(existsSync(secretFile(home))).toBe(false);
  });

  test('login --storage auto falls back to the 0600 file with a notice', async () => {
    const r = await loginWith(mxs, hs, ['--storage', 'auto', '--profile', 'fallback']);
    expect(r.code).toBe(0);
    expect(r.json()).toMatchObject({ profile: 'fallback', storage: 'file' });
    expect(r.stderr).toMatch(/keychain unavailable: .*locked.*Secrets are stored in .*0600/i);
    expect(r.stderr).toContain(secretFile(home, 'fallback'));
    const token = await mxs(['token', '--profile', 'fallback']);
    expect(token.code).toBe(0);
    expect(token.stdout.trim()).toBe(JSON.parse(await readFile(secretFile(home, 'fallback'), 'utf8')).accessToken);
    // The keychain profile is still there, still locked out.
    expect((await mxs(['token'])).code).toBe(6);
  });
});

/** runMxs, plus when the first stderr output arrived: tells "gave up in time" apart from "exited in time". */
function runTimed(args: string[], env: Record<string, string | undefined>, input: string, killAfterMs: number): Promise<RunResult & { firstStderrMs: number | null }> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, NO_COLOR: '1', ...env } as NodeJS.ProcessEnv, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let firstStderrMs: number | null = null;
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => {
      firstStderrMs ??= Date.now() - started;
      stderr += d;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started, firstStderrMs, json: () => JSON.parse(stdout) });
    });
    child.stdin.end(input);
  });
}

describeWithSecretService('keychain storage: a keychain that does not answer (gnome-keyring SIGSTOPped)', (ss) => {
  const t = perTest();
  const TIMEOUT_MS = 1000;
  // How long a run may take before we kill it: well past the 4 s it should take, well short of the ~50 s
  // (two 25 s D-Bus call timeouts) that libsecret waits on a frozen keyring.
  const KILL_AFTER_MS = 10_000;
  let frozen = false;
  const freeze = () => {
    process.kill(ss().pids.keyring!, 'SIGSTOP');
    frozen = true;
  };
  const thaw = () => {
    if (frozen) process.kill(ss().pids.keyring!, 'SIGCONT');
    frozen = false;
  };
  afterEach(thaw);
  const env = () => ({ ...t.home.env, ...ss().env, MXS_KEYCHAIN_TIMEOUT_MS: String(TIMEOUT_MS) });
  const loginArgs = (storage: string) => ['login', t.hs.url, '-u', 'alice', '--password-stdin', '--json', '--storage', storage];

  test('token gives up after MXS_KEYCHAIN_TIMEOUT_MS with exit 6, and the process exits', async () => {
    expect((await loginWith(mxsIn(t.home, ss().env), t.hs, ['--storage', 'keychain'])).code).toBe(0);
    const accessToken = t.hs.sessions()[0]!.accessToken;
    freeze();
    const r = await runTimed(['token'], env(), '', KILL_AFTER_MS);
    const status = await runTimed(['status', '--json'], env(), '', KILL_AFTER_MS);
    thaw();
    const again = await runMxs(['token'], { env: env() });

    // mxs gives up on the keychain in time and says so ...
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(new RegExp(`keychain read did not answer within ${TIMEOUT_MS} ms`));
    expect(r.stderr).toMatch(/Unlock or start your keychain .*--storage file/);
    expect(r.firstStderrMs).toBeGreaterThanOrEqual(TIMEOUT_MS);
    expect(r.firstStderrMs).toBeLessThan(4000);
    // ... status needs no keychain, frozen or not ...
    expect({ code: status.code, signal: status.signal }).toEqual({ code: 0, signal: null });
    expect(status.ms).toBeLessThan(4000);
    // ... and once the keyring answers again, the session is intact.
    expect(again.code).toBe(0);
    expect(again.stdout.trim()).toBe(accessToken);
    // The process must also EXIT then, with 6: not be killed by us after KILL_AFTER_MS.
    expect({ code: r.code, signal: r.signal, exitedWithin4s: r.ms < 4000 }).toEqual({ code: 6, signal: null, exitedWithin4s: true });
  }, 60_000);

  test('login --storage keychain gives up the same way, before any POST /login, and exits', async () => {
    freeze();
    const r = await runTimed(loginArgs('keychain'), env(), PW + '\n', KILL_AFTER_MS);
    thaw();
    expect(r.stderr).toMatch(/keychain write did not answer within 1000 ms/);
    expect(r.firstStderrMs).toBeLessThan(4000);
    expect(r.stdout).toContain('"exitCode": 6');
    expect(postLogins(t.hs)).toBe(0);
    expect(t.hs.sessions()).toEqual([]);
    expect(existsSync(sessionFile(t.home))).toBe(false);
    expect({ code: r.code, signal: r.signal, exitedWithin4s: r.ms < 4000 }).toEqual({ code: 6, signal: null, exitedWithin4s: true });
  }, 60_000);

  test('login --storage auto falls back to the file after the timeout, and exits', async () => {
    freeze();
    const r = await runTimed(loginArgs('auto'), env(), PW + '\n', KILL_AFTER_MS);
    thaw();
    expect(r.stderr).toMatch(/keychain unavailable: .*did not answer within 1000 ms.*Secrets are stored in .*0600/i);
    expect(r.firstStderrMs).toBeLessThan(4000);
    expect(r.json().storage).toBe('file');
    expect(JSON.parse(await readFile(secretFile(t.home), 'utf8')).accessToken).toBe(t.hs.sessions()[0]!.accessToken);
    expect({ code: r.code, signal: r.signal, exitedWithin5s: r.ms < 5000 }).toEqual({ code: 0, signal: null, exitedWithin5s: true });
  }, 60_000);
});
