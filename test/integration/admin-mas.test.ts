// `mxs admin` against the double's MAS admin mode (test/support/mas-admin-double.ts), in-process:
// every exchange mxs has with the admin API is checked against MAS's OpenAPI description after each
// test (requests and answers), every --json document against its schema in docs/schemas/.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import _Ajv2020 from 'ajv/dist/2020.js';
import _addFormats from 'ajv-formats';
import { adminCommands, admin } from '../../src/cli/commands/admin.js';
import type { AdminBackend } from '../../src/services/admin/backend.js';
import type { AdminConnection } from '../../src/services/admin/choose.js';
import { statePaths } from '../../src/store/paths.js';
import { FileSecretStore } from '../../src/store/secrets.js';
import { SessionStore } from '../../src/store/sessions.js';
import { makeHome, REPO } from '../support/cli.js';
import { startMasAdminDouble } from '../support/mas-admin-double.js';
import { exchangeProblems } from '../support/mas-admin-openapi.js';
import { runCommand } from '../support/run-command.js';
import type { CommandDefinition } from '../../src/cli/command.js';

const Ajv2020 = _Ajv2020.default;
const addFormats = _addFormats.default;
const ajv = new Ajv2020({ allErrors: true, strict: true });
addFormats(ajv);
const schema = (name: string) => ajv.compile(JSON.parse(readFileSync(join(REPO, 'docs', 'schemas', `${name}.schema.json`), 'utf8')));
const SHAPES = { sessions: schema('admin-sessions'), ended: schema('admin-sessions-end'), token: schema('admin-token'), tokens: schema('admin-token-list') };
function expectShape(name: keyof typeof SHAPES, doc: unknown): void {
  const validate = SHAPES[name];
  expect({ valid: validate(doc), errors: validate.errors ?? null }).toEqual({ valid: true, errors: null });
}

type Double = Awaited<ReturnType<typeof startMasAdminDouble>>;
let double: Double;
let home: Awaited<ReturnType<typeof makeHome>>;

beforeEach(async () => {
  double = await startMasAdminDouble({ users: { root: 'pw', bob: 'pw', carol: 'pw' }, masAdmin: { admins: ['root'] } });
  home = await makeHome('file');
});

afterEach(async () => {
  const problems = exchangeProblems(double.admin.exchanges);
  await double.close();
  await home.cleanup();
  expect(problems).toEqual([]);
});

/** Stores a profile as `mxs login` would after an OAuth login that granted these tokens. */
async function storeSession(localpart: string, tokens: { accessToken: string; refreshToken: string; expiresAt: number; deviceId: string }, legacy = false): Promise<void> {
  const profile = 'default';
  const paths = statePaths(home.env.MXS_CONFIG_DIR!);
  const issuedAt = new Date().toISOString();
  const expiresAt = new Date(tokens.expiresAt).toISOString();
  await new FileSecretStore(paths).set(profile, { accessToken: tokens.accessToken, refreshToken: tokens.refreshToken, issuedAt, expiresAt });
  await new SessionStore(paths).write({
    profile,
    homeserver: double.url,
    userId: `@${localpart}:localhost`,
    deviceId: tokens.deviceId,
    issuedAt,
    expiresAt,
    refreshable: true,
    storage: 'file',
    method: legacy ? 'password' : 'oauth',
    auth: legacy ? { type: 'matrix' } : { type: 'oauth', issuer: double.issuer!, clientId: 'CLIENT', tokenEndpoint: `${double.url}/oauth2/token`, revocationEndpoint: `${double.url}/oauth2/revoke` },
  });
}

const asAdmin = () => storeSession('root', double.admin.adminSession('root'));
const run = (command: CommandDefinition, argv: string[], env: Record<string, string> = {}) => runCommand(command, argv, { env: { ...home.env, ...env } });
const finishes = () => double.admin.exchanges.filter((x) => x.method === 'POST' && /\/(finish|revoke)$/.test(x.path));

describe('admin sessions', () => {
  it("lists a user's sessions of every kind, across several pages, newest activity first", async () => {
    await asAdmin();
    for (let i = 0; i < 103; i++) double.admin.addSession({ kind: 'compat', user: 'bob', deviceId: `COMPAT${String(i).padStart(4, '0')}`, lastActiveAt: '2026-01-01T00:00:00Z' });
    const oauth = double.admin.addSession({ kind: 'oauth2', user: 'bob', clientName: 'Element X', userAgent: 'Element/1.0', lastActiveAt: new Date(Date.now() + 120_000).toISOString(), lastActiveIp: '192.0.2.7' });
    const browser = double.admin.addSession({ kind: 'browser', user: 'bob', userAgent: 'Firefox', lastActiveAt: new Date(Date.now() + 60_000).toISOString() });
    const personal = double.admin.addSession({ kind: 'personal', user: 'bob', humanName: 'ci bot' });
    double.admin.addSession({ kind: 'compat', user: 'carol' });

    const r = await run(admin.sessions, ['@bob:localhost', '--json']);
    expect(r.exitCode).toBe(0);
    const doc = r.json();
    expectShape('sessions', doc);
    expect(doc).toMatchObject({ profile: 'default', api: 'mas', user: '@bob:localhost' });
    expect(doc.sessions).toHaveLength(106);
    expect(doc.sessions.slice(0, 2).map((s: { id: string }) => s.id)).toEqual([oauth, browser]);
    expect(doc.sessions[0]).toMatchObject({ kind: 'oauth2', client: 'Element X', userAgent: 'Element/1.0', lastActiveIp: '192.0.2.7', deviceId: expect.stringMatching(/^[A-Z]{10}$/), finishedAt: null });
    expect(doc.sessions.find((s: { id: string }) => s.id === personal)).toMatchObject({ kind: 'personal', client: 'ci bot' });
    // 103 compat sessions are two pages of 100: the second asked for with the first's cursor.
    const compatPages = double.admin.exchanges.filter((x) => x.path.endsWith('/compat-sessions'));
    expect(compatPages).toHaveLength(2);
    expect(new Map(compatPages[1]!.query).get('page[after]')).toMatch(/^[0-9A-Z]{26}$/);
    expect(r.stderr).toContain(`Using the Matrix Authentication Service admin API at ${double.url}/api/admin/v1.`);
  });

  it('asks for active sessions only with --active, and escapes what clients said about themselves', async () => {
    await asAdmin();
    double.admin.addSession({ kind: 'compat', user: 'bob', finished: true });
    double.admin.addSession({ kind: 'oauth2', user: 'bob', clientName: 'Evil\u001b[2J\nclient', userAgent: 'UA\u0007\u202e' });
    const r = await run(admin.sessions, ['bob', '--active']);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain('Evil\\x1b[2J\\nclient');
    expect(r.stdout).toContain('UA\\x07\\u202e');
    expect(r.stdout).not.toMatch(/[\u0007\u001b\u202e]/);
    expect(r.stdout).not.toContain('compat');
    const listings = double.admin.exchanges.filter((x) => x.method === 'GET' && /-sessions$/.test(x.path));
    expect(listings.every((x) => new Map(x.query).get('filter[status]') === 'active')).toBe(true);
  });

  it('names a user the server does not have: exit 2', async () => {
    await asAdmin();
    const r = await run(admin.sessions, ['@nobody:localhost']);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain('There is no user nobody on localhost');
  });
});

describe('admin sessions end', () => {
  it('ends one session by ID: the finish endpoint, and its token stops working', async () => {
    await asAdmin();
    const id = double.admin.addSession({ kind: 'oauth2', user: 'bob', clientName: 'Element' });
    const token = double.sessions().find((s) => s.userId === '@bob:localhost')!.accessToken;
    const r = await run(admin.sessionsEnd, [id, '--yes', '--json']);
    expect(r.exitCode).toBe(0);
    expectShape('ended', r.json());
    expect(r.json()).toEqual({ profile: 'default', api: 'mas', ended: [id] });
    expect(finishes().map((x) => x.path)).toEqual([`/api/admin/v1/oauth2-sessions/${id}/finish`]);
    expect(double.admin.row(id)!.attributes.finished_at).toEqual(expect.any(String));
    expect(double.accessTokenStatus(token)).toBe('unknown');
  });

  it("ends every active session of a user with --user --all, and no one else's", async () => {
    await asAdmin();
    const ids = [double.admin.addSession({ kind: 'oauth2', user: 'bob' }), double.admin.addSession({ kind: 'compat', user: 'bob' }), double.admin.addSession({ kind: 'browser', user: 'bob' }), double.admin.addSession({ kind: 'personal', user: 'bob' })];
    double.admin.addSession({ kind: 'compat', user: 'bob', finished: true });
    const carol = double.admin.addSession({ kind: 'compat', user: 'carol' });
    const r = await run(admin.sessionsEnd, ['--user', 'bob', '--all', '--yes']);
    expect(r.exitCode).toBe(0);
    expect(r.stderr).toContain('Ended 4 sessions');
    expect(finishes()).toHaveLength(4);
    expect(finishes().map((x) => x.path)).toContain(`/api/admin/v1/personal-sessions/${ids[3]}/revoke`);
    expect(double.admin.row(carol)!.attributes.finished_at).toBeNull();
  });

  it('names unknown IDs and ends nothing: exit 2', async () => {
    await asAdmin();
    const id = double.admin.addSession({ kind: 'compat', user: 'bob' });
    const r = await run(admin.sessionsEnd, [id, '01ARZ3NDEKTSV4RRFFQ69G5FAV', 'not\u001ban-id', '--yes']);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain('No active session has the ID 01ARZ3NDEKTSV4RRFFQ69G5FAV, not\\x1ban-id. Nothing was ended.');
    expect(finishes()).toEqual([]);
    expect(double.admin.row(id)!.attributes.finished_at).toBeNull();
  });

  it('needs --yes without a terminal, and ends nothing', async () => {
    await asAdmin();
    const id = double.admin.addSession({ kind: 'compat', user: 'bob' });
    const r = await run(admin.sessionsEnd, [id]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain('Pass --yes');
    expect(finishes()).toEqual([]);
  });
});

describe('admin token', () => {
  it('create: the token alone on stdout, once; its session and expiry on stderr; never in the --verbose trace', async () => {
    await asAdmin();
    const r = await run(admin.tokenCreate, ['@bob:localhost', '--expires', '90d', '--name', 'build bot', '--verbose']);
    expect(r.exitCode).toBe(0);
    const created = double.admin.exchanges.find((x) => x.method === 'POST' && x.path.endsWith('/personal-sessions'))!;
    const token = (created.answer as any).data.attributes.access_token as string;
    const id = (created.answer as any).data.id as string;
    expect(r.stdout).toBe(`${token}\n`);
    expect(r.stderr).toContain(`Token for @bob:localhost: session ${id}, expires `);
    expect(r.stderr).toContain('POST http://127.0.0.1'); // the trace is there
    expect(r.stderr).not.toContain(token);
    expect(created.body).toMatchObject({ actor_user_id: double.admin.ulidOf('bob'), human_name: 'build bot', expires_in: 90 * 86400 });
  });

  it('create --json: {id, userId, token, expiresAt}; without --expires the token never expires', async () => {
    await asAdmin();
    const r = await run(admin.tokenCreate, ['bob', '--json']);
    expect(r.exitCode).toBe(0);
    expectShape('token', r.json());
    expect(r.json()).toMatchObject({ userId: '@bob:localhost', token: expect.stringMatching(/^mpt_/), expiresAt: null });
  });

  it('list, regenerate (a new token, printed as create does) and revoke', async () => {
    await asAdmin();
    const made = (await run(admin.tokenCreate, ['bob', '--json', '--name', 'bot'])).json();
    const listed = await run(admin.tokenList, ['bob', '--json']);
    expectShape('tokens', listed.json());
    expect(listed.json().tokens).toEqual([expect.objectContaining({ id: made.id, name: 'bot', revokedAt: null })]);
    expect(listed.stdout).not.toContain(made.token);

    const again = await run(admin.tokenRegenerate, [made.id, '--expires', '1h']);
    expect(again.exitCode).toBe(0);
    expect(again.stdout).toMatch(/^mpt_\S+\n$/);
    expect(again.stdout.trim()).not.toBe(made.token);
    expect(again.stderr).toContain(`Token for @bob:localhost: session ${made.id}, expires `);

    const revoked = await run(admin.tokenRevoke, [made.id, '--json']);
    expect(revoked.exitCode).toBe(0);
    expectShape('ended', revoked.json());
    expect((await run(admin.tokenList, ['bob', '--json'])).json().tokens[0].revokedAt).toEqual(expect.any(String));
    const twice = await run(admin.tokenRevoke, [made.id]);
    expect(twice.exitCode).toBe(2);
    expect(twice.stderr).toContain('is already revoked');
  });
});

describe('without admin rights, or without the MAS admin API', () => {
  it('a session without urn:mas:admin: exit 4, the server\'s refusal as it came, and the hint to log in with --admin', async () => {
    await storeSession('bob', double.admin.userSession('bob'));
    const r = await run(admin.sessions, ['carol', '--json']);
    expect(r.exitCode).toBe(4);
    expect(r.stderr).toContain('Missing urn:mas:admin scope (HTTP 401)');
    expect(r.stderr).toContain(`mxs login ${double.url} --admin`);
    expect(r.json().error).toMatchObject({ code: 'M_FORBIDDEN', exitCode: 4 });
  });

  it('says in one line that the MAS admin API is not exposed, and uses the Synapse back end', async () => {
    await asAdmin();
    double.admin.disable();
    const seen: AdminConnection[] = [];
    const synapse = (conn: AdminConnection): AdminBackend => {
      seen.push(conn);
      return {
        api: 'synapse',
        resolveUser: async (u) => ({ userId: u.startsWith('@') ? u : `@${u}:localhost`, adminId: u }),
        sessions: async () => [{ kind: 'device', id: 'DEV1', deviceId: 'DEV1', client: 'phone', createdAt: null, lastActiveAt: null, lastActiveIp: null, userAgent: null, finishedAt: null }],
        endSessions: async (s) => s.map((x) => x.id),
        createToken: async () => ({ id: '@bob:localhost', userId: '@bob:localhost', token: 'syt_secret', expiresAt: null }),
      };
    };
    const commands = adminCommands(synapse);
    const r = await run(commands.sessions, ['bob', '--json']);
    expect(r.exitCode).toBe(0);
    expectShape('sessions', r.json());
    expect(r.json()).toMatchObject({ api: 'synapse', sessions: [{ kind: 'device', id: 'DEV1' }] });
    const lines = r.stderr.trim().split('\n');
    expect(lines).toEqual([`mxs: The Matrix Authentication Service admin API is not exposed at ${double.url}/api/admin/v1 (HTTP 404); using the Synapse admin API.`]);
    expect(seen[0]!.record.userId).toBe('@root:localhost');

    const list = await run(commands.tokenList, ['bob']);
    expect(list.exitCode).toBe(2);
    expect(list.stderr).toContain('The Synapse admin API has no list of tokens');
    expect((await run(commands.tokenRevoke, ['X'])).exitCode).toBe(2);
    expect((await run(commands.tokenRegenerate, ['X'])).exitCode).toBe(2);
    const end = await run(commands.sessionsEnd, ['DEV1', '--yes']);
    expect(end.exitCode).toBe(2);
    expect(end.stderr).toContain('--user USER');
  });

  it('goes straight to the Synapse admin API for a session without OAuth, and says so', async () => {
    await storeSession('root', double.admin.adminSession('root'), true);
    const r = await run(adminCommands(() => ({ api: 'synapse', resolveUser: async () => ({ userId: '@bob:localhost', adminId: 'x' }), sessions: async () => [], endSessions: async () => [], createToken: async () => { throw new Error('unused'); } })).sessions, ['bob', '--json']);
    expect(r.exitCode).toBe(0);
    expect(r.json()).toEqual({ profile: 'default', api: 'synapse', user: '@bob:localhost', sessions: [] });
    expect(r.stderr.trim()).toBe('mxs: Using the Synapse admin API.');
    expect(double.admin.exchanges).toEqual([]);
  });

  it('refuses an --admin-api the token would reach over plain http: exit 2, nothing sent', async () => {
    await asAdmin();
    const r = await run(admin.sessions, ['bob', '--admin-api', 'http://admin.example.org/api/admin/v1']);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain('mxs sends the access token only over https');
    expect(double.admin.exchanges).toEqual([]);
  });

  it('treats nothing listening at --admin-api as not exposed', async () => {
    await asAdmin();
    const r = await run(adminCommands(() => ({ api: 'synapse', resolveUser: async () => ({ userId: '@bob:localhost', adminId: 'x' }), sessions: async () => [], endSessions: async () => [], createToken: async () => { throw new Error('unused'); } })).sessions, ['bob', '--admin-api', 'http://127.0.0.1:9/api/admin/v1']);
    expect(r.exitCode).toBe(0);
    expect(r.stderr).toContain('is not exposed at http://127.0.0.1:9/api/admin/v1 (connection refused); using the Synapse admin API.');
  });
});
