// `mxs login --admin` and `mxs login --client-credentials` as commands (in-process, against the
// homeserver double): the flags, the secret from standard input, and the refusals a user sees.
import { startHomeserverDouble, type HomeserverDouble } from '../support/homeserver-double.js';
import { makeHome } from '../support/cli.js';
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
