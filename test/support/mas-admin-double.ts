/**
 * The homeserver double's MAS ADMIN MODE: the Matrix Authentication Service admin API at the issuer's
 * `/api/admin/v1`, following MAS's own OpenAPI description (test/fixtures/mas-admin-api.json; its
 * answers and mxs's requests are checked against it in test/unit/mas-admin-double.test.ts, and by
 * `checkExchanges` in any test that uses this mode). It plugs into test/support/homeserver-double.ts
 * through the `extend` option (OAuth mode only).
 *
 * - Authentication: `Authorization: Bearer` with a live MAS token of the double (an OAuth or compat
 *   session). A token whose session's scope lacks `urn:mas:admin` → 401 `{errors: [{title: "Missing
 *   urn:mas:admin scope"}]}`; no or an unknown token → 401 "Invalid access token".
 * - THE SCOPE RULE (MAS's policy, `docs/reference/scopes.md`): `mayRequestAdminScopes` below — the
 *   admin scopes (`urn:mas:admin`, `urn:synapse:admin:*`) are granted only to users marked
 *   `can_request_admin` (`masAdmin.admins`; device and authorization-code grants, through the double's
 *   `mayGrant` hook) and to clients listed as admin clients (`masAdmin.clients`, client credentials).
 *   `adminSession(localpart)` stages a session as such a grant would (it throws for a user who may not).
 * - `POST /oauth2/token` with `grant_type=client_credentials` (RFC 6749 §4.4) for the confidential
 *   `masAdmin.clients`, each by its own `client_secret_basic` or `client_secret_post`: anything else
 *   401 invalid_client; admin scopes for a client not listed as admin 400 invalid_scope. Answer: a
 *   `mat_` token of a session (no user) carrying the scope, `expires_in`, no refresh token, no-store.
 *   `POST /oauth2/revoke` with client authentication ends that client's token's session (200 always).
 * - Users: every user of the double, with a ULID; `GET users/{id}`, `GET users/by-username/{username}`
 *   (404 `User with username "x" not found`).
 * - Sessions: `oauth2-sessions`, `compat-sessions`, `user-sessions` (browser), `personal-sessions`;
 *   listings with `filter[user]` (`filter[actor_user]` for personal ones), `filter[status]`
 *   (active|finished; personal: active|revoked) and cursor pagination: items in ULID order,
 *   `page[first]` (default 10, MAS's), `page[after]` (a ULID), `links.next` only when more follow,
 *   `meta.count`. `GET …/{id}`; `POST …/{id}/finish` (400 when already finished); an OAuth or compat
 *   session staged with `addSession` is a real session of the double: finishing it ends its tokens.
 * - Personal sessions: `POST personal-sessions` `{actor_user_id, human_name, scope, expires_in?}` →
 *   201 with the `mpt_` token once (`access_token`); `POST …/{id}/revoke` (409 when already revoked),
 *   `POST …/{id}/regenerate` `{expires_in?}` → 201 with a new token, the old one dead.
 * - `GET oauth2-clients/{id}` for the clients of staged OAuth sessions; `GET site-config`.
 * - `disable()` answers every admin path 404 (the `adminapi` resource not configured).
 * Every exchange lands in `exchanges` (method, path, query, body; status, answer).
 */
import { randomInt } from 'node:crypto';
import zlib from 'node:zlib';
import { startHomeserverDouble, type Answer, type DoubleCore, type DoubleExtension, type DoubleOptions, type HomeserverDouble } from './homeserver-double.js';

export const MAS_ADMIN_SCOPE = 'urn:mas:admin';
const ADMIN_SCOPES = [MAS_ADMIN_SCOPE, 'urn:synapse:admin:*'];
const PREFIX = '/api/admin/v1/';

/** The scope rule: whether `scope` may be granted to a user or client that `mayRequestAdmin` (or not). */
export function mayRequestAdminScopes(scope: string, mayRequestAdmin: boolean): boolean {
  return mayRequestAdmin || !scope.split(' ').some((s) => ADMIN_SCOPES.includes(s));
}

export interface ConfidentialClient {
  clientId: string;
  clientSecret: string;
  authMethod: 'client_secret_basic' | 'client_secret_post';
  /** Listed in the policy's admin clients. */
  admin: boolean;
}

export interface MasAdminOptions {
  /** Localparts marked `can_request_admin`. Default: none. */
  admins?: string[];
  /** Confidential clients for the client credentials grant. Default: none. */
  clients?: ConfidentialClient[];
}

export interface Exchange {
  method: string;
  path: string;
  query: [string, string][];
  body: unknown;
  status: number;
  answer: unknown;
}

type Kind = 'oauth2' | 'compat' | 'browser' | 'personal';
const COLLECTIONS: Record<string, Kind> = { 'oauth2-sessions': 'oauth2', 'compat-sessions': 'compat', 'user-sessions': 'browser', 'personal-sessions': 'personal' };
const TYPES: Record<Kind, string> = { oauth2: 'oauth2-session', compat: 'compat-session', browser: 'user-session', personal: 'personal-session' };

interface Row {
  id: string;
  kind: Kind;
  userUlid: string;
  attributes: Record<string, unknown>;
  /** The double's own session behind an oauth2/compat/personal row: its tokens die with the row. */
  coreId: number | null;
}

export interface StagedSession {
  kind: Kind;
  user: string;
  deviceId?: string;
  clientName?: string | null;
  humanName?: string | null;
  userAgent?: string | null;
  lastActiveAt?: string | null;
  lastActiveIp?: string | null;
  finished?: boolean;
}

export interface MasAdminControls {
  exchanges: Exchange[];
  ulidOf(localpart: string): string;
  /** A session as the user's clients would have made it; its ID. */
  addSession(s: StagedSession): string;
  /** An OAuth session with the admin scope for `localpart`, granted through the scope rule: the tokens for a stored mxs session. */
  adminSession(localpart: string): { accessToken: string; refreshToken: string; expiresAt: number; deviceId: string };
  /** A plain OAuth session (no admin scope). */
  userSession(localpart: string): { accessToken: string; refreshToken: string; expiresAt: number; deviceId: string };
  row(id: string): { kind: Kind; attributes: Record<string, unknown> } | undefined;
  disable(): void;
}

const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
let ulidClock = Date.UTC(2026, 0, 1);
/** ULIDs in creation order (MAS lists by ID). */
function ulid(): string {
  let t = ulidClock++;
  let time = '';
  for (let i = 0; i < 10; i++) {
    time = CROCKFORD[t % 32] + time;
    t = Math.floor(t / 32);
  }
  let rand = '';
  for (let i = 0; i < 16; i++) rand += CROCKFORD[randomInt(32)];
  return time + rand;
}

function masToken(prefix: string): string {
  const alnum = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
  let r = '';
  for (let i = 0; i < 30; i++) r += alnum[randomInt(62)];
  let n = zlib.crc32(`${prefix}_${r}`);
  let crc = '';
  do {
    crc += alnum[n % 62];
    n = Math.floor(n / 62);
  } while (n > 0);
  return `${prefix}_${r}_${crc.padStart(6, '0')}`;
}

const iso = (ms = Date.now()) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
const err = (status: number, title: string) => ({ status, json: { errors: [{ title }] } });
const NO_STORE = { 'Cache-Control': 'no-store', Pragma: 'no-cache' };
const oauthError = (status: number, error: string, description: string) => ({ status, json: { error, error_description: description }, headers: NO_STORE });

export async function startMasAdminDouble(opts: DoubleOptions & { masAdmin?: MasAdminOptions } = {}): Promise<HomeserverDouble & { admin: MasAdminControls }> {
  let controls!: MasAdminControls;
  const double = await startHomeserverDouble({
    ...opts,
    oauth: opts.oauth ?? {},
    extend: (core) => (controls = masAdminMode(core, Object.keys(opts.users ?? { alice: 'alice-pw' }), opts.masAdmin ?? {})).extension,
  });
  return Object.assign(double, { admin: controls });
}

function masAdminMode(core: DoubleCore, localparts: string[], opts: MasAdminOptions): MasAdminControls & { extension: DoubleExtension } {
  const admins = new Set(opts.admins ?? []);
  const users = new Map(localparts.map((l) => [l, { id: ulid(), username: l, created_at: iso() }]));
  const rows = new Map<string, Row>();
  const clients = new Map<string, string | null>(); // client ULID -> name
  const tokens = new Map<string, string>(); // personal token -> row id
  const exchanges: Exchange[] = [];
  let enabled = true;

  const userById = (id: string) => [...users.values()].find((u) => u.id === id);
  const userJson = (u: { id: string; username: string; created_at: string }) => ({
    type: 'user',
    id: u.id,
    attributes: { username: u.username, created_at: u.created_at, locked_at: null, deactivated_at: null, admin: admins.has(u.username), legacy_guest: false },
    links: { self: `/api/admin/v1/users/${u.id}` },
  });
  const collectionOf = (kind: Kind) => Object.keys(COLLECTIONS).find((c) => COLLECTIONS[c] === kind)!;
  const rowJson = (r: Row) => ({ type: TYPES[r.kind], id: r.id, attributes: r.attributes, links: { self: `/api/admin/v1/${collectionOf(r.kind)}/${r.id}` }, meta: { page: { cursor: r.id } } });
  const single = (data: unknown, self: string, status = 200) => ({ status, json: { data, links: { self } } });

  function grant(localpart: string, scope: string) {
    const deviceId = Array.from({ length: 10 }, () => 'ABCDEFGHIJKLMNOPQRSTUVWXYZ'[randomInt(26)]).join('');
    const full = `${scope} urn:matrix:client:device:${deviceId}`;
    const g = core.grantMasSession('oauth', `@${localpart}:${core.serverName}`, deviceId, full, null);
    return { ...g, deviceId, scope: full };
  }

  function addSession(s: StagedSession): string {
    const u = users.get(s.user);
    if (!u) throw new Error(`mas admin double: unknown user ${s.user}`);
    const id = ulid();
    const common = { created_at: iso(Date.now() - 3_600_000), user_agent: s.userAgent ?? null, last_active_at: s.lastActiveAt ?? null, last_active_ip: s.lastActiveIp ?? null };
    const finishedAt = s.finished ? iso() : null;
    let attributes: Record<string, unknown>;
    let coreId: number | null = null;
    if (s.kind === 'oauth2') {
      const clientId = ulid();
      clients.set(clientId, s.clientName ?? null);
      const g = grant(s.user, 'urn:matrix:client:api:*');
      coreId = g.id;
      attributes = { ...common, finished_at: finishedAt, user_id: u.id, user_session_id: null, client_id: clientId, scope: g.scope, human_name: s.humanName ?? null };
    } else if (s.kind === 'compat') {
      const g = core.grantMasSession('compat', `@${s.user}:${core.serverName}`, s.deviceId ?? 'COMPATDEV01', null, s.humanName ?? null);
      coreId = g.id;
      attributes = { ...common, user_id: u.id, device_id: s.deviceId ?? 'COMPATDEV01', user_session_id: null, redirect_uri: null, finished_at: finishedAt, human_name: s.humanName ?? null };
    } else if (s.kind === 'browser') {
      attributes = { ...common, finished_at: finishedAt, user_id: u.id };
    } else {
      attributes = personalAttributes(u.id, s.humanName ?? 'token', 'urn:matrix:client:api:*', null);
      if (s.finished) attributes.revoked_at = iso();
    }
    if (s.finished && coreId !== null) core.endMasSession(coreId);
    rows.set(id, { id, kind: s.kind, userUlid: u.id, attributes, coreId });
    return id;
  }

  function personalAttributes(actor: string, name: string, scope: string, expiresIn: number | null): Record<string, unknown> {
    return {
      created_at: iso(),
      revoked_at: null,
      owner_user_id: null,
      owner_client_id: null,
      actor_user_id: actor,
      human_name: name,
      scope,
      last_active_at: null,
      last_active_ip: null,
      expires_at: expiresIn === null ? null : iso(Date.now() + expiresIn * 1000),
    };
  }

  /** A new token for a personal session (the old one dead): the answer carries it, once. */
  function issuePersonal(row: Row, expiresIn: number | null): Record<string, unknown> {
    for (const [t, id] of tokens) if (id === row.id) tokens.delete(t);
    const token = masToken('mpt');
    tokens.set(token, row.id);
    row.attributes.expires_at = expiresIn === null ? null : iso(Date.now() + expiresIn * 1000);
    return { ...rowJson(row), attributes: { ...row.attributes, access_token: token } };
  }

  function list(kind: Kind, query: URLSearchParams, path: string) {
    const userFilter = query.get(kind === 'personal' ? 'filter[actor_user]' : 'filter[user]');
    const status = query.get('filter[status]');
    const first = query.get('page[first]') === null ? 10 : Number(query.get('page[first]'));
    const after = query.get('page[after]');
    if (!Number.isInteger(first) || first < 1) return err(400, 'Invalid page[first]');
    const ended = (r: Row) => (kind === 'personal' ? r.attributes.revoked_at : r.attributes.finished_at) !== null;
    const all = [...rows.values()]
      .filter((r) => r.kind === kind && (userFilter === null || r.userUlid === userFilter))
      .filter((r) => status === null || (status === 'active' ? !ended(r) : ended(r)))
      .sort((a, b) => (a.id < b.id ? -1 : 1));
    const from = after === null ? 0 : all.findIndex((r) => r.id > after);
    const page = from < 0 ? [] : all.slice(from, from + first);
    const more = from >= 0 && from + first < all.length;
    const link = (extra: Record<string, string>) => {
      const q = new URLSearchParams([...query].filter(([k]) => !k.startsWith('page[')));
      for (const [k, v] of Object.entries(extra)) q.set(k, v);
      return `${path}?${q}`;
    };
    return {
      status: 200,
      json: {
        meta: { count: all.length },
        data: page.map(rowJson),
        links: { self: link({ 'page[first]': String(first), ...(after ? { 'page[after]': after } : {}) }), first: link({ 'page[first]': String(first) }), last: link({ 'page[last]': String(first) }), ...(more ? { next: link({ 'page[first]': String(first), 'page[after]': page[page.length - 1]!.id }) } : {}) },
      },
    };
  }

  function route(method: string, rest: string, query: URLSearchParams, body: any, path: string): { status: number; json: unknown } {
    let m: RegExpExecArray | null;
    if (method === 'GET' && rest === 'site-config') {
      return { status: 200, json: { server_name: core.serverName, password_login_enabled: true, password_registration_enabled: false, password_registration_email_required: false, password_registration_token_required: false, registration_token_required: false, email_change_allowed: true, displayname_change_allowed: true, password_change_allowed: true, account_recovery_allowed: false, account_deactivation_allowed: true, captcha_enabled: false, minimum_password_complexity: 3 } };
    }
    if (method === 'GET' && (m = /^users\/by-username\/([^/]+)$/.exec(rest))) {
      const u = users.get(decodeURIComponent(m[1]!));
      return u ? single(userJson(u), path) : err(404, `User with username ${JSON.stringify(decodeURIComponent(m[1]!))} not found`);
    }
    if (method === 'GET' && (m = /^users\/([^/]+)$/.exec(rest))) {
      const u = userById(m[1]!);
      return u ? single(userJson(u), path) : err(404, `User ID ${m[1]} not found`);
    }
    if (method === 'GET' && (m = /^oauth2-clients\/([^/]+)$/.exec(rest))) {
      if (!clients.has(m[1]!)) return err(404, `OAuth 2.0 client with ID ${m[1]} not found`);
      return single({ type: 'oauth2-client', id: m[1], attributes: { client_id: m[1], client_name: clients.get(m[1]!), client_uri: null, logo_uri: null, redirect_uris: [], grant_types: ['authorization_code', 'refresh_token'], is_static: false }, links: { self: `/api/admin/v1/oauth2-clients/${m[1]}` } }, path);
    }
    if (method === 'POST' && rest === 'personal-sessions') {
      const actor = userById(body?.actor_user_id);
      if (!actor) return err(404, `User ID ${body?.actor_user_id} not found`);
      if (typeof body.human_name !== 'string' || typeof body.scope !== 'string') return err(400, 'Invalid request body');
      const id = ulid();
      const row: Row = { id, kind: 'personal', userUlid: actor.id, attributes: personalAttributes(actor.id, body.human_name, body.scope, body.expires_in ?? null), coreId: null };
      rows.set(id, row);
      return single(issuePersonal(row, body.expires_in ?? null), path, 201);
    }
    if ((m = /^([a-z0-9-]+)(?:\/([^/]+))?(?:\/(finish|revoke|regenerate))?$/.exec(rest)) && COLLECTIONS[m[1]!]) {
      const kind = COLLECTIONS[m[1]!]!;
      const [, , id, action] = m;
      if (id === undefined) return method === 'GET' ? list(kind, query, path) : err(405, 'Method not allowed');
      const row = rows.get(id);
      const what = { oauth2: 'OAuth 2.0 session', compat: 'Compatibility session', browser: 'User session', personal: 'Personal session' }[kind];
      if (!row || row.kind !== kind) return err(404, `${what} with ID ${id} not found`);
      if (method === 'GET' && action === undefined) return single(rowJson(row), path);
      if (method !== 'POST') return err(405, 'Method not allowed');
      if (action === 'finish' && kind !== 'personal') {
        if (row.attributes.finished_at !== null) return err(400, `${what} with ID ${id} is already finished`);
        row.attributes.finished_at = iso();
        if (row.coreId !== null) core.endMasSession(row.coreId);
        return single(rowJson(row), path);
      }
      if (action === 'revoke' && kind === 'personal') {
        if (row.attributes.revoked_at !== null) return err(409, `${what} with ID ${id} is already revoked`);
        row.attributes.revoked_at = iso();
        row.attributes.expires_at = null;
        for (const [t, rid] of tokens) if (rid === id) tokens.delete(t);
        return single(rowJson(row), path);
      }
      if (action === 'regenerate' && kind === 'personal') {
        if (row.attributes.revoked_at !== null) return err(404, `${what} with ID ${id} not found`);
        return single(issuePersonal(row, body?.expires_in ?? null), path, 201);
      }
    }
    return err(404, 'Not found');
  }

  /** RFC 6749 §2.3.1: the configured client the request authenticates as, by its own method; else null. */
  function confidentialClient(headers: Record<string, unknown>, form: URLSearchParams): ConfidentialClient | null {
    const basic = String(headers.authorization ?? '').match(/^Basic (.*)$/)?.[1];
    const [id, secret = null] = basic === undefined ? [] : Buffer.from(basic, 'base64').toString('utf8').split(':').map((v) => new URLSearchParams(`v=${v}`).get('v'));
    const [clientId, clientSecret, method] = basic === undefined ? [form.get('client_id'), form.get('client_secret'), 'client_secret_post'] : [id, secret, 'client_secret_basic'];
    return (opts.clients ?? []).find((c) => c.clientId === clientId && c.clientSecret === clientSecret && c.authMethod === method) ?? null;
  }

  /** The client credentials grant and confidential clients' revocations; the rest of OAuth is the double's. */
  function confidentialRequest(req: { method: string; pathname: string; headers: Record<string, unknown>; rawBody: string }): Answer | undefined {
    const form = new URLSearchParams(req.rawBody);
    const grant = req.pathname === '/oauth2/token' && form.get('grant_type') === 'client_credentials';
    const revoke = req.pathname === '/oauth2/revoke' && (String(req.headers.authorization ?? '').startsWith('Basic ') || form.has('client_secret'));
    if (req.method !== 'POST' || !(grant || revoke)) return undefined;
    const client = confidentialClient(req.headers, form);
    if (!client) return oauthError(401, 'invalid_client', 'Client authentication failed');
    if (revoke) {
      const session = core.masTokenSession(form.get('token') ?? '');
      if (session && session.clientId === client.clientId) core.endMasSession(session.id);
      return { status: 200, json: {}, headers: NO_STORE };
    }
    const scope = (form.get('scope') ?? '').split(' ').filter((s) => s !== '').join(' ');
    if (!mayRequestAdminScopes(scope, client.admin)) return oauthError(400, 'invalid_scope', 'The client may not request the admin scopes');
    const g = core.grantMasSession('oauth', '', '', scope, null, client.clientId);
    return { status: 200, json: { access_token: g.accessToken, token_type: 'Bearer', expires_in: Math.round((g.expiresAt - Date.now()) / 1000), scope }, headers: NO_STORE };
  }

  const extension: DoubleExtension = {
    scopes: ADMIN_SCOPES,
    mayGrant: (scope, localpart) => mayRequestAdminScopes(scope, admins.has(localpart)),
    metadata: {
      grant_types_supported: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code', 'client_credentials'],
      token_endpoint_auth_methods_supported: ['none', 'client_secret_basic', 'client_secret_post'],
    },
    handle(req) {
      if (!req.pathname.startsWith(PREFIX)) return confidentialRequest(req);
      // Not configured: what answers is not the admin API, so nothing is recorded as its exchange.
      if (!enabled) return { status: 404, json: { errors: [{ title: 'Not found' }] } };
      let body: unknown;
      try {
        body = req.rawBody === '' ? undefined : JSON.parse(req.rawBody);
      } catch {
        body = req.rawBody;
      }
      const answer = ((): { status: number; json: unknown } => {
        const auth = typeof req.headers.authorization === 'string' ? req.headers.authorization : '';
        const session = auth.startsWith('Bearer ') ? core.masTokenSession(auth.slice(7)) : null;
        if (!session) return err(401, 'Invalid access token');
        if (!(session.scope ?? '').split(' ').includes(MAS_ADMIN_SCOPE)) return err(401, `Missing ${MAS_ADMIN_SCOPE} scope`);
        return route(req.method, req.pathname.slice(PREFIX.length), req.query, body, req.pathname);
      })();
      exchanges.push({ method: req.method, path: req.pathname, query: [...req.query], body, status: answer.status, answer: answer.json });
      return answer;
    },
  };

  return {
    extension,
    exchanges,
    ulidOf: (l) => users.get(l)!.id,
    addSession,
    adminSession(localpart) {
      const scope = ['urn:matrix:client:api:*', ...ADMIN_SCOPES].join(' ');
      if (!mayRequestAdminScopes(scope, admins.has(localpart))) throw new Error(`mas admin double: ${localpart} may not request admin`);
      return grant(localpart, scope);
    },
    userSession: (localpart) => grant(localpart, 'urn:matrix:client:api:*'),
    row: (id) => rows.get(id),
    disable() {
      enabled = false;
    },
  } as MasAdminControls & { extension: typeof extension };
}
