// Issue 12 item 4: the hot commands (status, token) have one shape, metadata plus a run function
// (src/cli/command.ts), served by two front ends: the start-up fast path and oclif. Every case here runs
// the real CLI both ways (MXS_NO_FAST_PATH=1 forces oclif) and must give the same stdout, stderr and
// exit code, successes and errors alike. A preloaded probe records which front end really ran.
import { chmod, cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HOT_COMMANDS } from '../../src/cli/fast-path.js';
import { GLOBAL_FLAGS } from '../../src/cli/command.js';
import { statusCommand } from '../../src/cli/commands/status.js';
import { tokenCommand } from '../../src/cli/commands/token.js';
import { homePerTest, REPO, runMxs, type Home, type RunResult } from '../support/cli.js';
import { startHomeserverDouble, type HomeserverDouble } from '../support/homeserver-double.js';
import { describeWithSecretService } from '../support/secret-service.js';

const HOUR = 3_600_000;
const iso = (msFromNow: number) => new Date(Date.now() + msFromNow).toISOString();

let home: Home;
let probeDir: string;
let probe: string;

beforeAll(async () => {
  probeDir = await mkdtemp(join(tmpdir(), 'mxs-front-probe-'));
  probe = join(probeDir, 'probe.cjs');
  // Which front end ran (oclif is CommonJS, so it is in require.cache once loaded), and how many
  // processes mxs started (the keychain helper is one).
  await writeFile(
    probe,
    [
      `const cp = require('node:child_process'); const spawn = cp.spawn; let spawned = 0;`,
      `cp.spawn = function (...args) { spawned++; return spawn.apply(this, args); };`,
      `process.on('exit', () => require('node:fs').writeFileSync(process.env.MXS_TEST_FRONT_PROBE, JSON.stringify({`,
      `  front: Object.keys(require.cache).some((k) => k.includes('/@oclif/core/')) ? 'oclif' : 'fast path', spawned })));`,
    ].join('\n') + '\n',
  );
});
afterAll(() => rm(probeDir, { recursive: true, force: true }));
homePerTest((h) => (home = h));

const configDir = () => home.env.MXS_CONFIG_DIR!;

/** A session as mxs stores it, written directly (no server needed for these states). */
async function storeSession(profile: string, s: { expiresAt: string | null; refreshToken?: string | null; issuedAt?: string }) {
  const issuedAt = s.issuedAt ?? iso(-HOUR);
  await mkdir(join(configDir(), 'sessions'), { recursive: true, mode: 0o700 });
  await mkdir(join(configDir(), 'secrets'), { recursive: true, mode: 0o700 });
  const record = {
    format: 2,
    profile,
    homeserver: 'https://matrix.example.org',
    userId: `@${profile}:example.org`,
    deviceId: 'DEVICE1',
    issuedAt,
    expiresAt: s.expiresAt,
    refreshable: s.refreshToken !== null,
    storage: 'file',
    method: 'password',
    auth: { type: 'matrix' },
  };
  await writeFile(join(configDir(), 'sessions', `${profile}.json`), JSON.stringify(record, null, 2) + '\n');
  const secret = { accessToken: `syt_${profile}_access`, refreshToken: s.refreshToken === undefined ? `syr_${profile}_refresh` : s.refreshToken, issuedAt, expiresAt: s.expiresAt };
  await writeFile(join(configDir(), 'secrets', `${profile}.json`), JSON.stringify(secret) + '\n', { mode: 0o600 });
}

const valid = (profile = 'default') => storeSession(profile, { expiresAt: iso(30 * 24 * HOUR) });

interface Ran extends RunResult {
  /** Processes mxs spawned. */
  spawned: number;
}

/**
 * Runs once per front end, side by side: oclif on a copy of the config dir, so that neither run can see
 * what the other wrote (with `shareDir`, both on the one dir: keychain items belong to it, and both only
 * read them). The results are compared after time-dependent numbers are masked.
 */
async function bothWays(args: string[], env: Record<string, string> = {}, shareDir = false): Promise<{ fast: Ran; oclif: Ran }> {
  const oclifDir = shareDir ? configDir() : `${configDir()}-oclif`;
  if (!shareDir) {
    await cp(configDir(), oclifDir, { recursive: true }).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOENT') throw e;
    });
  }
  const run = async (extra: Record<string, string>, front: string): Promise<Ran> => {
    const probeOut = join(probeDir, `ran-${Date.now()}-${Math.random()}`);
    const r = await runMxs(args, { env: { ...home.env, MXS_PROFILE: undefined, NODE_OPTIONS: `--require ${probe}`, MXS_TEST_FRONT_PROBE: probeOut, ...env, ...extra } });
    const ran = JSON.parse(await readFile(probeOut, 'utf8'));
    expect({ args, front: ran.front }).toEqual({ args, front });
    const sameDir = (text: string) => text.replaceAll(oclifDir, configDir());
    return { ...r, stdout: sameDir(r.stdout), stderr: sameDir(r.stderr), json: r.json, spawned: ran.spawned };
  };
  const [fast, oclif] = await Promise.all([run({}, 'fast path'), run({ MXS_NO_FAST_PATH: '1', MXS_CONFIG_DIR: oclifDir }, 'oclif')]);
  return { fast, oclif };
}

/** Durations and remaining milliseconds move between two runs; everything else must not. */
const mask = (text: string) =>
  text
    .replace(/(expires in|expired) (\d+[dhms] ?)+/g, '$1 <duration>')
    .replace(/^(@\S+) (\d+[dhms])+$/gm, '$1 <duration>')
    .replace(/"expiresInMs": -?\d+/g, '"expiresInMs": <ms>');

const outcome = (r: RunResult) => ({ code: r.code, signal: r.signal, stdout: mask(r.stdout), stderr: mask(r.stderr) });

// [case, setup, argv, extra env, expected exit code]
type Case = [string, () => Promise<unknown>, string[], Record<string, string>, number];

const noSession = async () => {};
const corruptSessions = async () => {
  await valid();
  await writeFile(join(configDir(), 'sessions', 'default.json'), '{"format": 2, "profile": ');
};
const cases: Record<string, Case[]> = {
  status: [
    ['not logged in', noSession, ['status'], {}, 4],
    ['not logged in, --json', noSession, ['status', '--json'], {}, 4],
    ['valid', valid, ['status'], {}, 0],
    ['valid, --json', valid, ['status', '--json'], {}, 0],
    ['expired, refreshable', () => storeSession('default', { expiresAt: iso(-60_000) }), ['status'], {}, 5],
    ['expired, refreshable, --json', () => storeSession('default', { expiresAt: iso(-60_000) }), ['status', '--json'], {}, 5],
    ['expired for good (no refresh token)', () => storeSession('default', { expiresAt: iso(-60_000), refreshToken: null }), ['status'], {}, 4],
    ['token that never expires', () => storeSession('default', { expiresAt: null }), ['status'], {}, 0],
    ['--all, two profiles', async () => (await valid('work'), valid()), ['status', '--all'], {}, 0],
    ['--all --json', async () => (await valid('work'), valid()), ['status', '--all', '--json'], {}, 0],
    ['--all, none stored', noSession, ['status', '--all'], {}, 0],
    ['--watch, not on a terminal (prints once)', valid, ['status', '--watch'], {}, 0],
    ['-p work', () => valid('work'), ['status', '-p', 'work'], {}, 0],
    ['global flag before the command', () => valid('work'), ['--profile', 'work', 'status'], {}, 0],
    ['MXS_PROFILE', () => valid('work'), ['status'], { MXS_PROFILE: 'work' }, 0],
    ['the mxs switch default', async () => (await valid('work'), writeFile(join(configDir(), 'config.json'), '{"format": 1, "defaultProfile": "work"}\n')), ['status'], {}, 0],
    ['corrupt config.json', async () => (await valid(), writeFile(join(configDir(), 'config.json'), 'nope')), ['status'], {}, 6],
    ['corrupt sessions file', corruptSessions, ['status'], {}, 6],
    ['corrupt sessions file, --json', corruptSessions, ['status', '--json'], {}, 6],
    ['invalid profile name', noSession, ['status', '-p', '../etc'], {}, 2],
    ['--timeout 0s', valid, ['status', '--timeout', '0s'], {}, 2],
    ['--short', valid, ['status', '--short'], {}, 0],
    ['--short, expired, refreshable', () => storeSession('default', { expiresAt: iso(-60_000) }), ['status', '--short'], {}, 5],
    ['--short, not logged in (nothing at all)', noSession, ['status', '--short'], {}, 4],
    ['--short -p work', () => valid('work'), ['status', '--short', '-p', 'work'], {}, 0],
  ],
  token: [
    ['not logged in', noSession, ['token'], {}, 4],
    ['not logged in, --json', noSession, ['token', '--json'], {}, 4],
    ['valid', valid, ['token'], {}, 0],
    ['valid, --json', valid, ['token', '--json'], {}, 0],
    ['valid, --min-valid 5m -p work', () => valid('work'), ['token', '--min-valid', '5m', '-p', 'work'], {}, 0],
    ['valid, --verbose --storage file --timeout 5s', valid, ['token', '--verbose', '--storage', 'file', '--timeout', '5s'], {}, 0],
    ['expired for good (no refresh token)', () => storeSession('default', { expiresAt: iso(-60_000), refreshToken: null }), ['token'], {}, 4],
    ['expired for good, --json', () => storeSession('default', { expiresAt: iso(-60_000), refreshToken: null }), ['token', '--json'], {}, 4],
    ['corrupt sessions file', corruptSessions, ['token'], {}, 6],
    ['corrupt secrets file', async () => (await valid(), writeFile(join(configDir(), 'secrets', 'default.json'), '[]', { mode: 0o600 })), ['token', '--json'], {}, 6],
    ['secrets file readable by others', async () => (await valid(), chmod(join(configDir(), 'secrets', 'default.json'), 0o644)), ['token'], {}, 6],
    ['tokens missing from the store', async () => (await valid(), rm(join(configDir(), 'secrets', 'default.json'))), ['token'], {}, 4],
    ['bad --min-valid', valid, ['token', '--min-valid', 'soon'], {}, 2],
    ['bad --min-valid, --json', valid, ['token', '--min-valid', 'soon', '--json'], {}, 2],
  ],
};

it('covers every hot command of the fast path', () => {
  expect(Object.keys(cases).sort()).toEqual([...HOT_COMMANDS].sort());
});

// Start-up cost (docs/PERFORMANCE.md): on the happy path the fast path loads none of Node's modules for
// sockets, streams or terminals, nor its AbortController (the run's cancellation makes one on first use).
it.each([[['token']], [['status']], [['status', '--short']]])('%j on a valid session: the fast path loads no socket, stream, tty or AbortController module', async (args) => {
  await valid();
  const loads = join(probeDir, `loads-${Date.now()}-${Math.random()}.cjs`);
  const list = `${loads}.json`;
  await writeFile(loads, `process.on('exit', () => require('node:fs').writeFileSync(${JSON.stringify(list)}, JSON.stringify(process.moduleLoadList)));\n`);
  const r = await runMxs(args, { env: { ...home.env, MXS_PROFILE: undefined, NODE_OPTIONS: `--require ${loads}` } });
  expect(r.code).toBe(0);
  const loaded: string[] = JSON.parse(await readFile(list, 'utf8'));
  expect(loaded).toContain('NativeModule fs');
  const costly = ['net', 'stream', 'tty', 'internal/abort_controller'].map((m) => `NativeModule ${m}`);
  expect(loaded.filter((m) => costly.includes(m))).toEqual([]);
});

describe.each(Object.keys(cases))('%s: the fast path and oclif give the same output', (id) => {
  it.each(cases[id]!)('%s', async (_name, setup, args, env, exitCode) => {
    await setup();
    const { fast, oclif } = await bothWays(args, env);
    expect(outcome(fast)).toEqual(outcome(oclif));
    expect(fast.code).toBe(exitCode);
    expect([fast.spawned, oclif.spawned]).toEqual([0, 0]);
    // Errors (not status's 4 and 5, which are answers) are one line of what happened and one of what to do.
    if (exitCode === 2 || exitCode === 6 || (id === 'token' && exitCode !== 0)) expect(fast.stderr).toMatch(/^Error: .+\n.+\n$/);
    if (args.includes('--json')) expect(() => JSON.parse(fast.stdout)).not.toThrow();
  });
});

describe('token refreshing an expired session against the homeserver double', () => {
  let hs: HomeserverDouble;
  beforeEach(async () => {
    hs = await startHomeserverDouble({ accessTokenLifetimeMs: HOUR });
  });
  afterEach(() => hs.close());

  const expire = async () => {
    hs.expireAccessTokens();
    for (const dir of ['sessions', 'secrets']) {
      const file = join(configDir(), dir, 'default.json');
      const data = JSON.parse(await readFile(file, 'utf8'));
      data.expiresAt = iso(-60_000);
      await writeFile(file, JSON.stringify(data, null, 2) + '\n');
    }
  };

  it.each([[['token']], [['token', '--json']]])('%j refreshes once each way and prints the new token', async (args) => {
    const login = await runMxs(['login', hs.url, '-u', 'alice', '--password-stdin'], { env: home.env, input: 'alice-pw\n' });
    expect(login.code).toBe(0);
    const printed = (r: RunResult) => (args.includes('--json') ? JSON.parse(r.stdout).accessToken : r.stdout.trim());
    const ways: RunResult[] = [];
    for (const extra of [{}, { MXS_NO_FAST_PATH: '1' }]) {
      await expire();
      const before = hs.count('/refresh');
      const r = await runMxs(args, { env: { ...home.env, ...extra } });
      expect(hs.count('/refresh') - before).toBe(1);
      expect(hs.accessTokenStatus(printed(r))).toBe('valid');
      ways.push(r);
    }
    // Each way got its own new token and expiry.
    const [fast, oclif] = ways.map((r) => ({ ...outcome(r), stdout: outcome(r).stdout.replace(printed(r), '<token>').replace(/"expiresAt": "[^"]+"/, '"expiresAt": <time>') }));
    expect(fast).toEqual(oclif);
    expect(fast!.code).toBe(0);
  });
});

describeWithSecretService('token from the OS keychain (a private gnome-keyring)', (ss) => {
  let hs: HomeserverDouble;
  beforeEach(async () => {
    hs = await startHomeserverDouble({ accessTokenLifetimeMs: HOUR });
  });
  afterEach(() => hs.close());
  // keytar runs in mxs's process where a hung call cannot hold the exit (process.execve, Node 22.15+),
  // else in a helper process (src/store/keytar-direct.ts; the frozen-keyring cases are in keychain.test.ts).
  const helpers = typeof (process as unknown as { execve?: unknown }).execve === 'function' ? 0 : 1;

  it.each([[['token']], [['token', '--json']]])(`%j: the same output both ways, with ${helpers} helper process`, async (args) => {
    const env = { ...ss().env, MXS_STORAGE: 'keychain' };
    const login = await runMxs(['login', hs.url, '-u', 'alice', '--password-stdin'], { env: { ...home.env, ...env }, input: 'alice-pw\n' });
    expect(login.code).toBe(0);
    const { fast, oclif } = await bothWays(args, env, true);
    expect(outcome(fast)).toEqual(outcome(oclif));
    expect(fast.code).toBe(0);
    expect(fast.stdout).toContain(hs.sessions()[0]!.accessToken);
    expect([fast.spawned, oclif.spawned]).toEqual([helpers, helpers]);
  });
});

describe('the fast path parses what oclif parses', () => {
  // oclif's flag definitions, as `oclif manifest` wrote them from the definitions (src/cli/oclif-command.ts builds them).
  const manifestFlags = async (id: string) => JSON.parse(await readFile(join(REPO, 'oclif.manifest.json'), 'utf8')).commands[id].flags as Record<string, Record<string, unknown>>;
  const parsing = (f: Record<string, unknown>) => ({
    type: f.type,
    char: f.char,
    env: f.env,
    default: f.default,
    options: f.options,
    exclusive: f.exclusive,
  });

  it.each([statusCommand, tokenCommand].map((c) => [c.id, c] as const))('%s: the same flags, types, env vars, defaults and choices', async (id, command) => {
    const fromManifest = Object.fromEntries(Object.entries(await manifestFlags(id)).map(([name, f]) => [name, parsing(f)]));
    const fromMetadata = Object.fromEntries(
      Object.entries({ ...GLOBAL_FLAGS, ...(command.flags as Record<string, object>) }).map(([name, f]) => [name, parsing({ ...f } as Record<string, unknown>)]),
    );
    expect(fromMetadata).toEqual(fromManifest);
  });
});
