// The double's MAS admin mode (test/support/mas-admin-double.ts) against MAS's OpenAPI description:
// every answer it gives here, success and error, is validated by ajv against the description's
// schemas, and so is every request these tests send. The validator itself is shown to catch a wrong
// request and a wrong answer, so that a silent validator cannot pass the other tests.
import { exchangeProblems, operationOf, requestProblems, responseProblems } from '../support/mas-admin-openapi.js';
import { MAS_ADMIN_SCOPE, mayRequestAdminScopes, startMasAdminDouble } from '../support/mas-admin-double.js';

type Double = Awaited<ReturnType<typeof startMasAdminDouble>>;
let double: Double;
let adminToken: string;

beforeEach(async () => {
  double = await startMasAdminDouble({ users: { root: 'pw', bob: 'pw', carol: 'pw' }, masAdmin: { admins: ['root'] } });
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

describe('the scope rule', () => {
  it.each([
    [['urn:matrix:client:api:*'], { grant: 'device_code' as const, canRequestAdmin: false }, true],
    [['urn:matrix:client:api:*', MAS_ADMIN_SCOPE], { grant: 'device_code' as const, canRequestAdmin: false }, false],
    [['urn:synapse:admin:*'], { grant: 'authorization_code' as const, canRequestAdmin: false }, false],
    [[MAS_ADMIN_SCOPE], { grant: 'authorization_code' as const, canRequestAdmin: true }, true],
    [[MAS_ADMIN_SCOPE], { grant: 'client_credentials' as const, clientId: 'C1', adminClients: ['C1'] }, true],
    [[MAS_ADMIN_SCOPE], { grant: 'client_credentials' as const, clientId: 'C2', adminClients: ['C1'] }, false],
  ])('%j for %j: %s', (scopes, who, allowed) => {
    expect(mayRequestAdminScopes(scopes, who)).toBe(allowed);
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
