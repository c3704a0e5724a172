// The double's MAS admin mode (test/support/mas-admin-double.ts) against MAS's OpenAPI description:
// every answer it gives here, success and error, is validated by ajv against the description's
// schemas, and so is every request these tests send. The validator itself is shown to catch a wrong
// request and a wrong answer, so that a silent validator cannot pass the other tests.
import { exchangeProblems, operationOf, requestProblems, responseProblems } from '../support/mas-admin-openapi.js';
import { MAS_ADMIN_SCOPE, mayRequestAdminScopes, startMasAdminDouble } from '../support/mas-admin-double.js';

type Double = Awaited<ReturnType<typeof startMasAdminDouble>>;
let double: Double;
let adminToken: string;

const SECRET = 'the-client-secret';
const CLIENTS = [
  { clientId: 'ADMINBASIC', clientSecret: SECRET, authMethod: 'client_secret_basic' as const, admin: true },
  { clientId: 'ADMINPOST', clientSecret: SECRET, authMethod: 'client_secret_post' as const, admin: true },
  { clientId: 'PLAIN', clientSecret: SECRET, authMethod: 'client_secret_basic' as const, admin: false },
];
const ADMIN_SCOPE = 'urn:matrix:client:api:* urn:mas:admin urn:synapse:admin:*';

beforeEach(async () => {
  double = await startMasAdminDouble({ users: { root: 'pw', bob: 'pw', carol: 'pw' }, oauth: { deviceIntervalSec: 0 }, masAdmin: { admins: ['root'], clients: CLIENTS } });
  adminToken = double.admin.adminSession('root').accessToken;
});

afterEach(async () => {
  // Whatever a test did, every exchange followed the description.
  const problems = exchangeProblems(double.admin.exchanges);
  await double.close();
  expect(problems).toEqual([]);
});

async function call(method: string, path: string, opts: { token?: string | null; body?: unknown } = {}): Promise<{ status: number; json: any }> {
  const token = opts.token === undefined ? adminToken : opts.token;
  const res = await fetch(`${double.url}/api/admin/v1/${path}`, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(opts.body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
  });
  return { status: res.status, json: await res.json() };
}

/** A form POST to the double's OAuth side; `basic` authenticates as that client (RFC 6749 §2.3.1). */
async function oauthPost(path: string, form: Record<string, string>, basic?: [string, string]): Promise<{ status: number; json: any; headers: Headers }> {
  const res = await fetch(`${double.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...(basic ? { authorization: `Basic ${Buffer.from(basic.map(encodeURIComponent).join(':')).toString('base64')}` } : {}) },
    body: new URLSearchParams(form).toString(),
  });
  return { status: res.status, json: await res.json(), headers: res.headers };
}

async function registerClient(metadata: Record<string, unknown>, url = double.url): Promise<string> {
  const res = await fetch(`${url}/oauth2/registration`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ client_uri: 'https://mxs.example.org/', token_endpoint_auth_method: 'none', application_type: 'native', ...metadata }) });
  return ((await res.json()) as { client_id: string }).client_id;
}

describe('the scope rule', () => {
  it.each([
    ['urn:matrix:client:api:*', false, true],
    [`urn:matrix:client:api:* ${MAS_ADMIN_SCOPE}`, false, false],
    ['urn:synapse:admin:*', false, false],
    [MAS_ADMIN_SCOPE, true, true],
  ])('%j, may request admin %s: %s', (scope, mayRequestAdmin, allowed) => {
    expect(mayRequestAdminScopes(scope, mayRequestAdmin)).toBe(allowed);
  });

  it('device grant: the admin scopes are a valid scope; approved by a user not marked can_request_admin, the code stays pending; by one marked, it gives them', async () => {
    const clientId = await registerClient({ grant_types: ['urn:ietf:params:oauth:grant-type:device_code'], response_types: [] });
    const device = await oauthPost('/oauth2/device', { client_id: clientId, scope: `${ADMIN_SCOPE} urn:matrix:client:device:ADMINDEV` });
    expect(device.status).toBe(200);
    const poll = () => oauthPost('/oauth2/token', { grant_type: 'urn:ietf:params:oauth:grant-type:device_code', device_code: device.json.device_code, client_id: clientId });
    double.approveDevice(device.json.user_code, 'bob');
    expect(double.deviceAuthorizations()[0]).toMatchObject({ status: 'pending', approvedAs: null });
    expect((await poll()).json.error).toBe('authorization_pending');
    double.approveDevice(device.json.user_code, 'root');
    const granted = await poll();
    expect(granted.json).toMatchObject({ scope: `${ADMIN_SCOPE} urn:matrix:client:device:ADMINDEV` });
    expect((await call('GET', 'site-config', { token: granted.json.access_token })).status).toBe(200);
  });

  it('authorization-code grant: a user not marked can_request_admin is sent back with error=access_denied', async () => {
    const other = await startMasAdminDouble({ users: { root: 'pw', bob: 'pw' }, oauth: { authorizeAs: 'bob' }, masAdmin: { admins: ['root'] } });
    try {
      const client_id = await registerClient({ application_type: 'native', redirect_uris: ['http://127.0.0.1/callback'] }, other.url);
      const q = new URLSearchParams({ response_type: 'code', client_id, redirect_uri: 'http://127.0.0.1:5555/callback', scope: `${ADMIN_SCOPE} urn:matrix:client:device:ADMINDEV`, state: 's', code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256' });
      const answer = await fetch(`${other.url}/authorize?${q}`, { redirect: 'manual' });
      expect(answer.status).toBe(302);
      expect(new URL(answer.headers.get('location')!).searchParams.get('error')).toBe('access_denied');
      q.set('scope', 'urn:matrix:client:api:* urn:matrix:client:device:PLAINDEV');
      expect(new URL((await fetch(`${other.url}/authorize?${q}`, { redirect: 'manual' })).headers.get('location')!).searchParams.get('code')).toEqual(expect.any(String));
    } finally {
      await other.close();
    }
  });

  it('gives no admin session to a user not marked can_request_admin', () => {
    expect(() => double.admin.adminSession('bob')).toThrow(/may not request admin/);
  });

  it('answers a token without urn:mas:admin 401 "Missing urn:mas:admin scope", and no token 401', async () => {
    const plain = double.admin.userSession('bob').accessToken;
    expect(await call('GET', 'site-config', { token: plain })).toEqual({ status: 401, json: { errors: [{ title: 'Missing urn:mas:admin scope' }] } });
    expect((await call('GET', 'site-config', { token: null })).status).toBe(401);
  });
});

describe('the client credentials grant', () => {
  it('gives a listed admin client, by its own authentication method, a mat_ token with the admin scope, no refresh token, not stored by caches', async () => {
    const basic = await oauthPost('/oauth2/token', { grant_type: 'client_credentials', scope: ADMIN_SCOPE }, ['ADMINBASIC', SECRET]);
    expect(basic.status).toBe(200);
    expect(basic.json).toEqual({ access_token: expect.stringMatching(/^mat_/), token_type: 'Bearer', expires_in: 300, scope: ADMIN_SCOPE });
    expect(basic.headers.get('cache-control')).toBe('no-store');
    expect((await call('GET', 'site-config', { token: basic.json.access_token })).status).toBe(200);
    const post = await oauthPost('/oauth2/token', { grant_type: 'client_credentials', scope: ADMIN_SCOPE, client_id: 'ADMINPOST', client_secret: SECRET });
    expect(post.status).toBe(200);
  });

  it.each([
    ['a wrong secret', ['ADMINBASIC', 'wrong'], {}],
    ['a method the client is not configured for', ['ADMINPOST', SECRET], {}],
    ['no authentication', undefined, { client_id: 'ADMINBASIC' }],
  ])('%s: 401 invalid_client', async (_name, basic, form) => {
    const r = await oauthPost('/oauth2/token', { grant_type: 'client_credentials', scope: ADMIN_SCOPE, ...form }, basic as [string, string] | undefined);
    expect([r.status, r.json.error]).toEqual([401, 'invalid_client']);
  });

  it('a client not listed as an admin client: the admin scopes 400 invalid_scope, others granted (and refused by the admin API)', async () => {
    const refused = await oauthPost('/oauth2/token', { grant_type: 'client_credentials', scope: ADMIN_SCOPE }, ['PLAIN', SECRET]);
    expect([refused.status, refused.json.error]).toEqual([400, 'invalid_scope']);
    const plain = await oauthPost('/oauth2/token', { grant_type: 'client_credentials', scope: 'urn:matrix:client:api:*' }, ['PLAIN', SECRET]);
    expect(plain.status).toBe(200);
    expect((await call('GET', 'site-config', { token: plain.json.access_token })).status).toBe(401);
  });

  it("revocation with the client's authentication ends its own token only; always 200", async () => {
    const token = (await oauthPost('/oauth2/token', { grant_type: 'client_credentials', scope: ADMIN_SCOPE }, ['ADMINBASIC', SECRET])).json.access_token;
    expect((await oauthPost('/oauth2/revoke', { token, client_id: 'ADMINPOST', client_secret: SECRET })).status).toBe(200);
    expect(double.accessTokenStatus(token)).toBe('valid');
    expect((await oauthPost('/oauth2/revoke', { token }, ['ADMINBASIC', SECRET])).status).toBe(200);
    expect(double.accessTokenStatus(token)).toBe('unknown');
  });
});

describe('users, sessions, pagination', () => {
  it('finds a user by username, and answers 404 for none', async () => {
    const found = await call('GET', 'users/by-username/bob');
    expect(found.status).toBe(200);
    expect(found.json.data).toMatchObject({ type: 'user', id: double.admin.ulidOf('bob'), attributes: { username: 'bob', admin: false } });
    expect(await call('GET', 'users/by-username/nobody')).toEqual({ status: 404, json: { errors: [{ title: 'User with username "nobody" not found' }] } });
    expect((await call('GET', `users/${double.admin.ulidOf('root')}`)).json.data.attributes.admin).toBe(true);
  });

  it('pages a listing with page[first] and page[after] until links.next is gone, with the filters', async () => {
    for (let i = 0; i < 5; i++) double.admin.addSession({ kind: 'compat', user: 'bob', deviceId: `DEV${i}ABCDEFG`, lastActiveIp: '10.0.0.1' });
    double.admin.addSession({ kind: 'compat', user: 'bob', finished: true });
    double.admin.addSession({ kind: 'compat', user: 'carol' });
    const user = double.admin.ulidOf('bob');
    const ids: string[] = [];
    let after: string | null = null;
    let pages = 0;
    for (;;) {
      const q = new URLSearchParams({ 'filter[user]': user, 'filter[status]': 'active', 'page[first]': '2', ...(after ? { 'page[after]': after } : {}) });
      const page = await call('GET', `compat-sessions?${q}`);
      pages++;
      ids.push(...page.json.data.map((d: { id: string }) => d.id));
      expect(page.json.meta.count).toBe(5);
      if (!page.json.links.next) break;
      after = new URL(page.json.links.next, 'http://x').searchParams.get('page[after]');
    }
    expect(pages).toBe(3);
    expect(new Set(ids).size).toBe(5);
    expect((await call('GET', `compat-sessions?filter[user]=${user}&filter[status]=finished`)).json.data).toHaveLength(1);
  });

  it.each(['oauth2', 'compat', 'browser'] as const)('finishes a %s session once; the second time is 400; an unknown one 404', async (kind) => {
    const id = double.admin.addSession({ kind, user: 'bob', clientName: 'Element', userAgent: 'Mozilla/5.0' });
    const collection = { oauth2: 'oauth2-sessions', compat: 'compat-sessions', browser: 'user-sessions' }[kind];
    const got = await call('GET', `${collection}/${id}`);
    expect(got.json.data.attributes.finished_at).toBeNull();
    const done = await call('POST', `${collection}/${id}/finish`);
    expect(done.status).toBe(200);
    expect(done.json.data.attributes.finished_at).toEqual(expect.any(String));
    expect((await call('POST', `${collection}/${id}/finish`)).status).toBe(400);
    expect((await call('POST', `${collection}/01ARZ3NDEKTSV4RRFFQ69G5FAV/finish`)).status).toBe(404);
  });

  it("ends the double's own session with it: its access token stops working", async () => {
    const id = double.admin.addSession({ kind: 'oauth2', user: 'bob', clientName: 'Element' });
    const before = double.sessions().filter((s) => s.userId === '@bob:localhost');
    expect(before).toHaveLength(1);
    await call('POST', `oauth2-sessions/${id}/finish`);
    expect(double.accessTokenStatus(before[0]!.accessToken)).toBe('unknown');
  });

  it("names an OAuth session's client", async () => {
    const id = double.admin.addSession({ kind: 'oauth2', user: 'bob', clientName: 'Element X' });
    const client = (await call('GET', `oauth2-sessions/${id}`)).json.data.attributes.client_id;
    expect((await call('GET', `oauth2-clients/${client}`)).json.data.attributes.client_name).toBe('Element X');
  });
});

describe('personal sessions', () => {
  it('creates one with its token once, lists it, regenerates it and revokes it (twice is 409)', async () => {
    const body = { actor_user_id: double.admin.ulidOf('bob'), human_name: 'bot', scope: 'urn:matrix:client:api:*', expires_in: 3600 };
    const made = await call('POST', 'personal-sessions', { body });
    expect(made.status).toBe(201);
    const { id, attributes } = made.json.data;
    expect(attributes.access_token).toMatch(/^mpt_[A-Za-z0-9]{30}_[A-Za-z0-9]{6}$/);
    expect(attributes.expires_at).toEqual(expect.any(String));
    const listed = await call('GET', `personal-sessions?filter[actor_user]=${body.actor_user_id}`);
    expect(listed.json.data.map((d: { id: string }) => d.id)).toEqual([id]);
    expect(listed.json.data[0].attributes.access_token).toBeUndefined();
    const again = await call('POST', `personal-sessions/${id}/regenerate`, { body: {} });
    expect(again.status).toBe(201);
    expect(again.json.data.attributes.access_token).not.toBe(attributes.access_token);
    expect(again.json.data.attributes.expires_at).toBeNull();
    expect((await call('POST', `personal-sessions/${id}/revoke`)).status).toBe(200);
    expect((await call('POST', `personal-sessions/${id}/revoke`)).status).toBe(409);
    expect((await call('GET', `personal-sessions?filter[actor_user]=${body.actor_user_id}&filter[status]=active`)).json.data).toEqual([]);
  });
});

describe('the validator', () => {
  it('matches a literal path before a templated one', () => {
    expect(operationOf('GET', '/api/admin/v1/users/by-username/alice')?.template).toBe('/api/admin/v1/users/by-username/{username}');
    expect(operationOf('DELETE', '/api/admin/v1/users/by-username/alice')).toBeNull();
  });

  it('catches requests the description does not allow', () => {
    const path = '/api/admin/v1/compat-sessions';
    expect(requestProblems({ method: 'GET', path, query: [['page[first]', '2']], body: undefined })).toEqual([]);
    expect(requestProblems({ method: 'GET', path, query: [['filter[owner]', 'x']], body: undefined })).toEqual([expect.stringMatching(/filter\[owner\] is not in the description/)]);
    expect(requestProblems({ method: 'GET', path, query: [['page[first]', '0']], body: undefined })).toEqual([expect.stringMatching(/must be >= 1/)]);
    expect(requestProblems({ method: 'GET', path, query: [['filter[status]', 'gone']], body: undefined })).toEqual([expect.stringMatching(/allowed values/)]);
    expect(requestProblems({ method: 'POST', path: '/api/admin/v1/personal-sessions', query: [], body: { human_name: 'x', scope: 's' } })).toEqual([expect.stringMatching(/actor_user_id/)]);
    expect(requestProblems({ method: 'PUT', path, query: [], body: undefined })).toEqual([expect.stringMatching(/no such operation/)]);
  });

  it('catches answers the description does not allow', () => {
    const x = { method: 'GET', path: '/api/admin/v1/users/by-username/a', query: [], body: undefined };
    expect(responseProblems({ ...x, status: 200, answer: { data: { type: 'user', id: 'nope', attributes: {}, links: { self: '/' } }, links: { self: '/' } } }).length).toBeGreaterThan(0);
    expect(responseProblems({ ...x, status: 500, answer: {} })).toEqual([expect.stringMatching(/status 500 is not among/)]);
    expect(responseProblems({ ...x, status: 404, answer: { errors: [{ title: 'User with username "a" not found' }] } })).toEqual([]);
  });
});
