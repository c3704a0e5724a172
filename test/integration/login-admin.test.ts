// `mxs login --admin` and `mxs login --client-credentials` as commands (in-process, against the
// homeserver double): the flags, the secret from standard input, and the refusals a user sees.
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import _Ajv2020 from 'ajv/dist/2020.js';
import _addFormats from 'ajv-formats';
import { startHomeserverDouble, type HomeserverDouble } from '../support/homeserver-double.js';
import { makeHome, REPO } from '../support/cli.js';
import { startOAuthAdminServer } from '../support/oauth-admin.js';
import { mxsInProcess } from '../support/run-command.js';

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

const run = (args: string[], stdin?: string) => mxsInProcess(args, { stdin, env: home.env });
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

  it('asks for the admin scopes; a server that will not grant them: exit 4, the user is not allowed to request admin; nothing stored', async () => {
    // The double's MAS grants no admin scope to anyone (invalid_scope): the refusal a user without can_request_admin meets.
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

describe('a client-credentials session, end to end (test/support/oauth-admin.ts)', () => {
  const clients = [
    { clientId: '01JADMINBASIC', clientSecret: SECRET, authMethod: 'client_secret_basic' as const, admin: true },
    { clientId: '01JADMINPOST', clientSecret: SECRET, authMethod: 'client_secret_post' as const, admin: true },
    { clientId: '01JPLAIN', clientSecret: SECRET, authMethod: 'client_secret_basic' as const, admin: false },
  ];
  let mas: Awaited<ReturnType<typeof startOAuthAdminServer>>;
  afterEach(async () => {
    await mas?.close();
  });

  it('logs in, shows the scopes, runs the grant again on refresh and when the token expires, gives the token to mxs token, and logs out by revoking it', async () => {
    mas = await startOAuthAdminServer({ clients, lifetimeSec: 1 });
    const login = await run(['login', mas.url, '--client-credentials', '--client-id', '01JADMINBASIC', '--json'], `${SECRET}\n`);
    expect([login.code, login.json()]).toEqual([0, expect.objectContaining({ userId: null, deviceId: null, method: 'client_credentials', refreshable: true })]);
    expect(login.stdout + login.stderr).not.toContain(SECRET);
    expect(mas.grants).toEqual([{ clientId: '01JADMINBASIC', authMethod: 'client_secret_basic', scope: 'urn:matrix:client:api:* urn:mas:admin urn:synapse:admin:*', outcome: 'granted' }]);
    await expectShape('login.schema.json', login.json());
    const status = await run(['status', '--json']);
    await expectShape('status.schema.json', status.json());
    expect(status.json()).toMatchObject({ method: 'client_credentials', userId: null, scopes: ['urn:matrix:client:api:*', 'urn:mas:admin', 'urn:synapse:admin:*'] });
    expect((await run(['status'])).stdout).toMatch(/client credentials/);

    await new Promise((r) => setTimeout(r, 1100));
    const token = await run(['token']);
    expect(token.code).toBe(0);
    expect(mas.introspect(token.stdout.trim())).toMatchObject({ clientId: '01JADMINBASIC' });
    expect(mas.grants).toHaveLength(2);
    expect((await run(['refresh'])).code).toBe(0);
    expect(mas.grants).toHaveLength(3);

    const current = (await run(['token'])).stdout.trim();
    const logout = await run(['logout']);
    expect(logout.code).toBe(0);
    expect(mas.revocations.at(-1)).toEqual({ token: current, revoked: true });
    expect((await run(['status'])).code).toBe(4);
  }, 20_000);

  it('a client the server authenticates only by client_secret_post, where the metadata offers basic too: refused (exit 4), naming the client', async () => {
    mas = await startOAuthAdminServer({ clients });
    // mxs prefers client_secret_basic where the metadata offers it (the unit tests cover _post where it is the only one).
    const r = await run(['login', mas.url, '--client-credentials', '--client-id', '01JADMINPOST'], `${SECRET}\n`);
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/refused the client credentials of 01JADMINPOST/);
    expect(mas.grants.at(-1)).toMatchObject({ outcome: 'refused' });
  });

  it('a client that is not an admin client: the admin scopes are refused (invalid_scope, exit 4), nothing stored', async () => {
    mas = await startOAuthAdminServer({ clients });
    const r = await run(['login', mas.url, '--client-credentials', '--client-id', '01JPLAIN', '--json'], `${SECRET}\n`);
    expect(r.code).toBe(4);
    expect(r.json().error).toMatchObject({ code: 'invalid_scope' });
    expect((await run(['status'])).code).toBe(4);
  });

  it('a wrong secret: exit 4 (invalid_client), the secret not shown', async () => {
    mas = await startOAuthAdminServer({ clients });
    const r = await run(['login', mas.url, '--client-credentials', '--client-id', '01JADMINBASIC'], 'wrong-secret-xyz\n');
    expect(r.code).toBe(4);
    expect(r.stdout + r.stderr).not.toContain('wrong-secret-xyz');
  });
});
