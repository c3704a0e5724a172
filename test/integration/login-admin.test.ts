// `mxs login --admin` and `mxs login --client-credentials` as commands (in-process, against the
// homeserver double): the flags, the secret from standard input, the refusals a user sees, and, end to
// end against the double's MAS admin mode (test/support/mas-admin-double.ts: the scope rule, the client
// credentials grant, the admin API checked against MAS's OpenAPI description), the admin session at work.
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import _Ajv2020 from 'ajv/dist/2020.js';
import _addFormats from 'ajv-formats';
import { admin } from '../../src/cli/commands/admin.js';
import { startHomeserverDouble, type HomeserverDouble } from '../support/homeserver-double.js';
import { makeHome, REPO } from '../support/cli.js';
import { waitFor } from '../support/fault-kit.js';
import { startMasAdminDouble } from '../support/mas-admin-double.js';
import { exchangeProblems } from '../support/mas-admin-openapi.js';
import { mxsInProcess, runCommand, type CommandRunOptions } from '../support/run-command.js';

let home: Awaited<ReturnType<typeof makeHome>>;
let hs: HomeserverDouble | undefined;
beforeEach(async () => {
  home = await makeHome('file');
});
afterEach(async () => {
  await hs?.close();
  hs = undefined;
  await home.cleanup();
});

const run = (args: string[], stdin?: string, opts: CommandRunOptions = {}) => mxsInProcess(args, { stdin, env: home.env, ...opts });
const SECRET = 'client-secret-never-shown';

/** The --json output of a client-credentials session against docs/schemas (ajv, strict, draft 2020-12). */
async function expectShape(file: string, value: unknown): Promise<void> {
  const ajv = new _Ajv2020.default({ allErrors: true, strict: true });
  _addFormats.default(ajv);
  const dir = join(REPO, 'docs', 'schemas');
  for (const f of (await readdir(dir)).filter((n) => n.endsWith('.schema.json'))) ajv.addSchema(JSON.parse(await readFile(join(dir, f), 'utf8')));
  const validate = ajv.getSchema(`https://github.com/mxs-cli/mxs/blob/main/docs/schemas/${file}`)!;
  expect({ valid: validate(value), errors: validate.errors ?? null }).toEqual({ valid: true, errors: null });
}

describe('login --admin', () => {
  it('on a server without OAuth: exit 2, saying an admin user logs in as usual; nothing stored', async () => {
    hs = await startHomeserverDouble();
    const r = await run(['login', hs.url, '--admin']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/does not use OAuth 2\.0/);
    expect(r.stderr).toMatch(/An admin user logs in as usual, without --admin/);
    expect((await run(['status'])).code).toBe(4);
    expect(hs.requests.filter((q) => q.method === 'POST')).toEqual([]);
  });

  it('asks for the admin scopes; a server that does not know them: exit 4 (invalid_scope), the user is not allowed to request admin; nothing stored', async () => {
    // The double without its MAS admin mode knows no admin scope: invalid_scope, as servers other than MAS answer.
    hs = await startHomeserverDouble({ oauth: {} });
    const r = await run(['login', hs.url, '--admin', '--json']);
    expect(r.code).toBe(4);
    expect(r.json().error).toMatchObject({ code: 'invalid_scope', exitCode: 4 });
    expect(r.stderr).toMatch(/refused the admin scopes: this user is not allowed to request admin/);
    const [device] = hs.requests.filter((q) => q.path === '/oauth2/device');
    expect(String(device!.body.scope).split(' ')).toEqual(expect.arrayContaining(['urn:mas:admin', 'urn:synapse:admin:*', 'urn:matrix:client:api:*']));
    expect((await run(['status'])).code).toBe(4);
  });

  it.each([['--password-stdin', '-u', 'alice'], ['--token-stdin']])('with %s: exit 2 (flags that cannot go together)', async (...flags) => {
    hs = await startHomeserverDouble();
    expect((await run(['login', hs.url, '--admin', ...flags], 'x\n')).code).toBe(2);
  });
});

describe('login --client-credentials', () => {
  it.each([
    [['--client-credentials'], /--client-credentials and --client-id go together/],
    [['--client-id', 'abc'], /--client-credentials and --client-id go together/],
    [['--client-credentials', '--client-id', 'abc', '--browser'], /cannot also be provided|--browser/],
    [['--client-credentials', '--client-id', 'abc', '--admin'], /cannot also be provided|--admin/],
  ])('%j: exit 2 before anything is sent', async (flags, message) => {
    hs = await startHomeserverDouble({ oauth: {} });
    const r = await run(['login', hs.url, ...flags], `${SECRET}\n`);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(hs.requests.filter((q) => q.method === 'POST')).toEqual([]);
  });

  it('reads the secret from standard input; a server without the grant: exit 2, the secret sent nowhere and shown nowhere', async () => {
    hs = await startHomeserverDouble({ oauth: {} });
    const r = await run(['login', hs.url, '--client-credentials', '--client-id', 'abc', '--json'], `${SECRET}\n`);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/does not offer the client credentials grant/);
    expect(r.stdout + r.stderr).not.toContain(SECRET);
    expect(JSON.stringify(hs.requests)).not.toContain(SECRET);
  });

  it('on a server without OAuth: exit 2', async () => {
    hs = await startHomeserverDouble();
    const r = await run(['login', hs.url, '--client-credentials', '--client-id', 'abc'], `${SECRET}\n`);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/are for OAuth 2\.0 servers/);
  });

  it('no secret on standard input: exit 2', async () => {
    hs = await startHomeserverDouble({ oauth: {} });
    const r = await run(['login', hs.url, '--client-credentials', '--client-id', 'abc'], '');
    expect(r.code).toBe(2);
  });
});


const ADMIN_SCOPES = ['urn:matrix:client:api:*', 'urn:mas:admin', 'urn:synapse:admin:*'];
const CLIENTS = [
  { clientId: '01JADMINBASIC', clientSecret: SECRET, authMethod: 'client_secret_basic' as const, admin: true },
  { clientId: '01JADMINPOST', clientSecret: SECRET, authMethod: 'client_secret_post' as const, admin: true },
  { clientId: '01JPLAIN', clientSecret: SECRET, authMethod: 'client_secret_basic' as const, admin: false },
];

describe("admin sessions, end to end against the double's MAS admin mode", () => {
  let mas: Awaited<ReturnType<typeof startMasAdminDouble>>;
  async function start(oauth: { authorizeAs?: string; accessTokenLifetimeSec?: number } = {}) {
    mas = await startMasAdminDouble({ users: { root: 'pw', bob: 'pw' }, oauth: { deviceIntervalSec: 0, ...oauth }, masAdmin: { admins: ['root'], clients: CLIENTS } });
    hs = mas;
    mas.admin.addSession({ kind: 'compat', user: 'bob', deviceId: 'BOBPHONE' });
  }
  afterEach(() => {
    // Every exchange with the admin API followed MAS's OpenAPI description.
    if (mas) expect(exchangeProblems(mas.admin.exchanges)).toEqual([]);
  });
  const adminSessions = () => runCommand(admin.sessions, ['bob', '--json'], { env: home.env });
  const grants = () => mas.requests.filter((q) => q.path === '/oauth2/token' && q.body?.grant_type === 'client_credentials');

  /** `mxs login --admin` by device code, approved (or not, by the policy) as `localpart` once mxs shows the code; the run. */
  async function deviceLogin(localpart: string, interrupts = false) {
    const done = run(['login', mas.url, '--admin', '--json'], undefined, { interrupts });
    await waitFor('a device code', () => mas.deviceAuthorizations().length > 0, 5000, 5);
    mas.approveDevice(mas.deviceAuthorizations()[0]!.userCode, localpart);
    return { done };
  }

  it('login --admin by device code as a user marked can_request_admin: status shows the admin scopes, and admin sessions works', async () => {
    await start();
    const r = await (await deviceLogin('root')).done;
    expect(r.code).toBe(0);
    expect(String(mas.deviceAuthorizations()[0]!.scope).split(' ')).toEqual(expect.arrayContaining(ADMIN_SCOPES));
    expect((await run(['status', '--json'])).json().scopes).toEqual(expect.arrayContaining(ADMIN_SCOPES));
    const sessions = await adminSessions();
    expect(sessions.exitCode).toBe(0);
    expect(sessions.json()).toMatchObject({ api: 'mas', user: '@bob:localhost', sessions: [{ kind: 'compat', deviceId: 'BOBPHONE' }] });
  });

  it('login --admin --browser as a user not allowed: access_denied, exit 4, nothing stored', async () => {
    await start({ authorizeAs: 'bob' });
    let browsed = false;
    // The user follows the printed URL; MAS refuses, and the browser goes back to mxs with the error.
    const onStderr = (text: string) => {
      const url = /Open this URL in a browser to log in:\n\s+(http\S+)/.exec(text)?.[1];
      if (url === undefined || browsed) return;
      browsed = true;
      void fetch(url, { redirect: 'manual' }).then((a) => fetch(a.headers.get('location')!));
    };
    const r = await run(['login', mas.url, '--admin', '--browser', '--json'], undefined, { onStderr });
    expect(r.code).toBe(4);
    expect(r.json().error).toMatchObject({ code: 'access_denied', exitCode: 4 });
    expect(r.stderr).toMatch(/refused the admin scopes: this user is not allowed to request admin/);
    expect(mas.authorizationRequests.map((a) => a.outcome)).toEqual(['access_denied']);
    expect((await run(['status'])).code).toBe(4);
  });

  it('login --admin by device code as a user not allowed: the code stays pending, mxs keeps waiting; Ctrl-C: exit 130, nothing stored', async () => {
    await start();
    const before = process.listeners('SIGINT');
    const login = (await deviceLogin('bob', true)).done;
    const polls = () => mas.deviceAuthorizations()[0]!.polls;
    const approvedAt = polls();
    await waitFor('polls after the refused approval', () => polls() >= approvedAt + 2, 5000, 5);
    expect(mas.deviceAuthorizations()[0]).toMatchObject({ status: 'pending', approvedAs: null });
    const added = process.listeners('SIGINT').filter((l) => !before.includes(l));
    expect(added).toHaveLength(1);
    (added[0] as () => void)(); // the command's own SIGINT handler, as a Ctrl-C calls it
    const r = await login;
    expect(r.code).toBe(130);
    expect(r.stderr).toContain('Login cancelled; nothing was stored.');
    expect((await run(['status'])).code).toBe(4);
  });

  it('login --client-credentials for a listed admin client: the admin scopes, the secret shown nowhere, and admin sessions works', async () => {
    await start();
    const login = await run(['login', mas.url, '--client-credentials', '--client-id', '01JADMINBASIC', '--json'], `${SECRET}\n`);
    expect([login.code, login.json()]).toEqual([0, expect.objectContaining({ userId: null, deviceId: null, method: 'client_credentials', refreshable: true })]);
    expect(login.stdout + login.stderr).not.toContain(SECRET);
    expect(grants()).toHaveLength(1);
    expect(grants()[0]).toMatchObject({ headers: { authorization: expect.stringMatching(/^Basic /) }, body: { scope: ADMIN_SCOPES.join(' ') } });
    await expectShape('login.schema.json', login.json());
    const status = await run(['status', '--json']);
    await expectShape('status.schema.json', status.json());
    expect(status.json()).toMatchObject({ method: 'client_credentials', userId: null, scopes: ADMIN_SCOPES });
    expect((await run(['status'])).stdout).toMatch(/client credentials/);
    const sessions = await adminSessions();
    expect(sessions.exitCode).toBe(0);
    expect(sessions.json().sessions).toEqual([expect.objectContaining({ kind: 'compat', deviceId: 'BOBPHONE' })]);
  });

  it('a client-credentials session runs the grant again when the token expires and on refresh, gives the token to mxs token, and logs out by revoking it', async () => {
    await start({ accessTokenLifetimeSec: 1 });
    expect((await run(['login', mas.url, '--client-credentials', '--client-id', '01JADMINBASIC'], `${SECRET}\n`)).code).toBe(0);
    await new Promise((r) => setTimeout(r, 1100));
    const token = await run(['token']);
    expect(token.code).toBe(0);
    expect(mas.sessions().find((s) => s.accessToken === token.stdout.trim())).toMatchObject({ clientId: '01JADMINBASIC', scope: ADMIN_SCOPES.join(' ') });
    expect(grants()).toHaveLength(2);
    expect((await run(['refresh'])).code).toBe(0);
    expect(grants()).toHaveLength(3);

    const current = (await run(['token'])).stdout.trim();
    expect((await run(['logout'])).code).toBe(0);
    expect(mas.requests.filter((q) => q.path === '/oauth2/revoke').at(-1)!.body).toMatchObject({ token: current });
    expect(mas.accessTokenStatus(current)).toBe('unknown');
    expect((await run(['status'])).code).toBe(4);
  }, 20_000);

  it('a client the server authenticates only by client_secret_post, where the metadata offers basic too: refused (exit 4), naming the client', async () => {
    await start();
    // mxs prefers client_secret_basic where the metadata offers it (the unit tests cover _post where it is the only one).
    const r = await run(['login', mas.url, '--client-credentials', '--client-id', '01JADMINPOST'], `${SECRET}\n`);
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/refused the client credentials of 01JADMINPOST/);
    expect(mas.sessions().filter((s) => s.clientId === '01JADMINPOST')).toEqual([]);
  });

  it('a client that is not an admin client: the admin scopes are refused (invalid_scope, exit 4) with the hint to list it; nothing stored', async () => {
    await start();
    const r = await run(['login', mas.url, '--client-credentials', '--client-id', '01JPLAIN', '--json'], `${SECRET}\n`);
    expect(r.code).toBe(4);
    expect(r.json().error).toMatchObject({ code: 'invalid_scope', exitCode: 4 });
    expect(r.stderr).toMatch(/lists the client as an admin client \(MAS: policy\.data\.admin_clients\)/);
    expect((await run(['status'])).code).toBe(4);
  });

  it('a wrong secret: exit 4 (invalid_client), the secret not shown', async () => {
    await start();
    const r = await run(['login', mas.url, '--client-credentials', '--client-id', '01JADMINBASIC'], 'wrong-secret-xyz\n');
    expect(r.code).toBe(4);
    expect(r.stdout + r.stderr).not.toContain('wrong-secret-xyz');
  });
});
