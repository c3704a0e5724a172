// The reference's JSON Schemas (docs/schemas/) held against what mxs really prints: every --json
// shape, and the error object for each exit code that can be staged without a real server or a
// terminal, comes from the built CLI run against the homeserver double and is validated with ajv.
// Also: every schema compiles (ajv strict mode), every shape the reference documents has its schema,
// and docs/commands.md is what `npm run docs` generates from today's command definitions.
import { execFile } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import _Ajv2020, { type ErrorObject } from 'ajv/dist/2020.js';
import _addFormats from 'ajv-formats';
import { startHomeserverDouble, type HomeserverDouble } from '../support/homeserver-double.js';
import { makeHome, REPO, runMxs, startMxs, type RunResult } from '../support/cli.js';
import { waitFor } from '../support/fault-kit.js';
import { deviceCodeLogin } from '../support/run-command.js';

const Ajv2020 = _Ajv2020.default;
const addFormats = _addFormats.default;
const SCHEMAS = join(REPO, 'docs', 'schemas');
const BASE = 'https://github.com/mxs-cli/mxs/blob/main/docs/schemas/';
const PW = 'alice-pw';

/** Every --json shape the reference documents, and the schema file that describes it. */
const SHAPES: Record<string, string> = {
  login: 'login.schema.json',
  refresh: 'refresh.schema.json',
  status: 'status.schema.json',
  'status --all': 'status-all.schema.json',
  whoami: 'whoami.schema.json',
  inspect: 'inspect.schema.json',
  token: 'token.schema.json',
  logout: 'logout.schema.json',
  devices: 'devices.schema.json',
  'devices delete': 'devices-delete.schema.json',
  'devices rename': 'devices-rename.schema.json',
  switch: 'switch.schema.json',
  // Validated against real output in test/integration/doctor.test.ts.
  doctor: 'doctor.schema.json',
  'doctor --all': 'doctor-all.schema.json',
  'proxy (start line)': 'proxy-start.schema.json',
  api: 'api.schema.json',
  error: 'error.schema.json',
  // Held against real output in test/integration/admin-mas.test.ts (the double's MAS admin mode).
  'admin sessions': 'admin-sessions.schema.json',
  'admin sessions end': 'admin-sessions-end.schema.json',
  'admin token create': 'admin-token.schema.json',
  'admin token list': 'admin-token-list.schema.json',
};

/**
 * Where mxs does not yet print what the contract (and so the schema) asks: only these ajv errors are
 * tolerated for that schema, and the test fails once they are gone, so the entry is removed with the fix.
 */
const KNOWN_GAPS: Record<string, { why: string; matches(e: ErrorObject): boolean }> = {
};

const ajv = new Ajv2020({ allErrors: true, strict: true });
addFormats(ajv);
let schemaFiles: string[] = [];

beforeAll(async () => {
  schemaFiles = (await readdir(SCHEMAS)).filter((f) => f.endsWith('.schema.json')).sort();
  for (const f of schemaFiles) ajv.addSchema(JSON.parse(await readFile(join(SCHEMAS, f), 'utf8')));
});

/** Validates `value` against docs/schemas/FILE; a failure prints ajv's errors and the output. */
function expectShape(file: string, value: unknown): void {
  const validate = ajv.getSchema(BASE + file);
  if (!validate) throw new Error(`no schema ${file} in docs/schemas`);
  const valid = validate(value) as boolean;
  const errors = validate.errors ?? [];
  const gap = KNOWN_GAPS[file];
  const unexpected = gap ? errors.filter((e) => !gap.matches(e)) : errors;
  if (unexpected.length > 0) {
    expect({ file, valid, errors: unexpected.map((e) => `${e.instancePath || '/'} ${e.message} ${JSON.stringify(e.params)}`), output: value }).toEqual({ file, valid: true, errors: [], output: value });
  }
  if (gap && valid) throw new Error(`${file} now validates: the known gap (${gap.why}) is closed; remove it from KNOWN_GAPS`);
}

/** stdout as one JSON document, with the exit code that came with it. */
function outcome(r: RunResult): { code: number | null; json: unknown } {
  let json: unknown;
  try {
    json = r.json();
  } catch {
    throw new Error(`stdout is not one JSON document (exit ${r.code}):\n${r.stdout}\nstderr:\n${r.stderr}`);
  }
  return { code: r.code, json };
}

describe('the schemas', () => {
  it('every schema file compiles in ajv strict mode, draft 2020-12, with an $id naming its file', async () => {
    for (const f of schemaFiles) {
      const schema = JSON.parse(await readFile(join(SCHEMAS, f), 'utf8'));
      expect({ f, $schema: schema.$schema, $id: schema.$id }).toEqual({ f, $schema: 'https://json-schema.org/draft/2020-12/schema', $id: BASE + f });
      expect(() => ajv.getSchema(BASE + f)).not.toThrow();
    }
  });

  it('every documented shape has a schema, every schema is a documented shape, and the reference links each', async () => {
    expect(schemaFiles).toEqual([...new Set(Object.values(SHAPES))].sort());
    const reference = await readFile(join(REPO, 'docs', 'REFERENCE.md'), 'utf8');
    for (const f of schemaFiles) expect({ f, linked: reference.includes(`(schemas/${f})`) }).toEqual({ f, linked: true });
  });

  it('docs/commands.md is what `npm run docs` generates from the command definitions', async () => {
    const pkg = JSON.parse(await readFile(join(REPO, 'package.json'), 'utf8'));
    expect(pkg.scripts.docs).toMatch(/oclif readme/);
    const { stdout } = await promisify(execFile)(join(REPO, 'node_modules', '.bin', 'oclif'), ['readme', '--readme-path', 'docs/commands.md', '--no-aliases', '--no-source-links', '--dry-run'], {
      cwd: REPO,
      env: { ...process.env, COLUMNS: '120', OCLIF_SKIP_NEW_VERSION_CHECK: 'true' },
    });
    // --dry-run prints a line of its own first and a newline of console.log's last.
    const generated = stdout.replace(/^replacing <!-- commands --> in .*\n/, '').trimEnd();
    const committed = (await readFile(join(REPO, 'docs', 'commands.md'), 'utf8')).trimEnd();
    // On a mismatch: run `npm run docs` and commit docs/commands.md.
    expect(committed).toBe(generated);
  }, 60_000);
});

describe('real output against the schemas (homeserver double)', () => {
  let hs: HomeserverDouble;
  let home: Awaited<ReturnType<typeof makeHome>>;
  let loginJson: unknown;
  const mxs = (args: string[], input?: string, env: Record<string, string> = {}) => runMxs(args, { input, env: { ...home.env, ...env } });
  const login = (profile: string) => mxs(['login', hs.url, '-u', 'alice', '--password-stdin', '--json', '--profile', profile], PW + '\n');

  // One account with two logged-in profiles (default, work), shared by the tests below in order.
  beforeAll(async () => {
    hs = await startHomeserverDouble({ accessTokenLifetimeMs: 10 * 60_000 });
    home = await makeHome('file');
    const r = await login('default');
    expect(r.code).toBe(0);
    loginJson = outcome(r).json;
    expect((await login('work')).code).toBe(0);
  });
  afterAll(async () => {
    await hs.close();
    await home.cleanup();
  });

  it('login', () => expectShape('login.schema.json', loginJson));

  it.each([
    ['refresh', ['refresh'], 'refresh.schema.json', 0],
    ['whoami', ['whoami'], 'whoami.schema.json', 0],
    ['inspect --stored --online', ['inspect', '--stored', '--online'], 'inspect.schema.json', 0],
    ['token', ['token'], 'token.schema.json', 0],
    ['status', ['status'], 'status.schema.json', 0],
    ['status, not logged in (exit 4)', ['status', '--profile', 'nobody'], 'status.schema.json', 4],
    ['status --all', ['status', '--all'], 'status-all.schema.json', 0],
    ['devices', ['devices'], 'devices.schema.json', 0],
    ['api', ['api', 'account/whoami'], 'api.schema.json', 0],
    ['api, an HTTP error (exit 7)', ['api', 'rooms/!nowhere:localhost/state'], 'api.schema.json', 7],
  ])('%s', async (_name, args, file, code) => {
    const r = outcome(await mxs([...args, '--json']));
    expectShape(file, r.json);
    expect(r.code).toBe(code);
  });

  it('devices rename and devices delete', async () => {
    const res = await fetch(`${hs.url}/_matrix/client/v3/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ type: 'm.login.password', identifier: { type: 'm.id.user', user: 'alice' }, password: PW, device_id: 'LAPTOP' }),
    });
    expect(res.status).toBe(200);
    const renamed = outcome(await mxs(['devices', 'rename', 'LAPTOP', 'work laptop', '--json']));
    expectShape('devices-rename.schema.json', renamed.json);
    expect(renamed.code).toBe(0);
    const deleted = outcome(await mxs(['devices', 'delete', 'LAPTOP', '--yes', '--password-stdin', '--json'], PW + '\n'));
    expectShape('devices-delete.schema.json', deleted.json);
    expect(deleted).toEqual({ code: 0, json: { profile: 'default', deleted: ['LAPTOP'] } });
  });

  it('proxy: the start line', async () => {
    const run = startMxs(['proxy', '--json', '--quiet'], { env: home.env });
    let stdout = '';
    run.child.stdout!.on('data', (d) => (stdout += d));
    await waitFor('the start line', () => stdout.includes('\n') || run.child.exitCode !== null, 30_000, 20);
    run.child.kill('SIGTERM');
    const r = await run.done;
    expectShape('proxy-start.schema.json', JSON.parse(stdout.split('\n')[0]!));
    expect(r.code).toBe(0);
  });

  it('switch', async () => {
    const r = outcome(await mxs(['switch', 'work', '--json']));
    expectShape('switch.schema.json', r.json);
    expect(r.code).toBe(0);
  });

  it('logout', async () => {
    const r = outcome(await mxs(['logout', '--profile', 'work', '--json']));
    expectShape('logout.schema.json', r.json);
    expect(r.code).toBe(0);
  });

  it('status: expired with a refresh token stored (exit 5)', async () => {
    const short = await startHomeserverDouble({ accessTokenLifetimeMs: 1000 });
    try {
      expect((await mxs(['login', short.url, '-u', 'alice', '--password-stdin', '--profile', 'brief'], PW + '\n')).code).toBe(0);
      await new Promise((r) => setTimeout(r, 1100));
      const r = outcome(await mxs(['status', '--profile', 'brief', '--json']));
      expectShape('status.schema.json', r.json);
      expect(r).toMatchObject({ code: 5, json: { expired: true, refreshable: true } });
    } finally {
      await short.close();
    }
  });

  // The error object on stdout, one per exit code that needs neither a real server nor a terminal
  // (1 is a bug, 130 needs a prompt; 5 is status's own answer above).
  it.each([
    ['2, a flag oclif refuses', ['status', '--no-such-flag'], '', {}, 2, 'usage'],
    ['2, a bad profile name', ['token', '--profile', '-bad'], '', {}, 2, 'usage'],
    ['2, switch to a profile without a session', ['switch', 'nobody'], '', {}, 2, 'usage'],
    ['2, the server\'s errcode', ['devices', 'rename', 'GHOST', 'x', '--profile', 'default'], '', {}, 2, 'M_NOT_FOUND'],
    ['3, nothing listening', ['login', 'http://127.0.0.1:9', '-u', 'alice', '--password-stdin'], PW + '\n', {}, 3, 'network'],
    ['4, not logged in', ['whoami', '--profile', 'nobody'], '', {}, 4, 'not_logged_in'],
    ['4, a wrong password', ['login', 'HS', '-u', 'alice', '--password-stdin', '--profile', 'wrong'], 'not-the-pw\n', {}, 4, 'M_FORBIDDEN'],
    ['6, no keychain with --storage keychain', ['login', 'HS', '-u', 'alice', '--password-stdin', '--profile', 'kc', '--storage', 'keychain'], PW + '\n', {}, 6, 'storage'],
    ['127, exec of a command that does not exist', ['exec', '--json', '--profile', 'default', '--', '/nonexistent/mxs-test-command'], '', {}, 127, 'command_not_found'],
  ])('error, exit %s', async (_name, args, input, env, code, errcode) => {
    // HS stands for the double's URL; after `--` everything is exec's command's, so --json goes before.
    const argv = args.map((a) => (a === 'HS' ? hs.url : a));
    const r = outcome(await mxs(argv.includes('--json') ? argv : [...argv, '--json'], input || undefined, env));
    expectShape('error.schema.json', r.json);
    expect(r).toMatchObject({ code, json: { error: { code: errcode, exitCode: code } } });
  });
});

describe('an OAuth 2.0 session against the double', () => {
  let hs: HomeserverDouble;
  let home: Awaited<ReturnType<typeof makeHome>>;
  beforeAll(async () => {
    hs = await startHomeserverDouble({ oauth: { deviceIntervalSec: 1 } });
    home = await makeHome('file');
  });
  afterAll(async () => {
    await hs.close();
    await home.cleanup();
  });

  it('login (device code), status, refresh and logout', async () => {
    const login = outcome(await deviceCodeLogin(hs, [hs.url, '--json'], { env: home.env }));
    expectShape('login.schema.json', login.json);
    expect(login).toMatchObject({ code: 0, json: { method: 'oauth', issuer: hs.issuer } });
    for (const [args, file] of [[['status'], 'status.schema.json'], [['refresh'], 'refresh.schema.json'], [['logout'], 'logout.schema.json']] as const) {
      const r = outcome(await runMxs([...args, '--json'], { env: home.env }));
      expectShape(file, r.json);
      expect({ args, code: r.code }).toEqual({ args, code: 0 });
    }
  });
});
