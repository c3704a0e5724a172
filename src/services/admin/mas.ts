import { MxsError, badResponse, usageError } from '../../errors.js';
import { jsonBody, retryableStatus, send, serverLine, type HttpDeps, type HttpResponse } from '../../http/transport.js';
import { printable } from '../../printable.js';
import type { AdminBackend, AdminSession, AdminToken, CreatedToken } from './backend.js';

// The Matrix Authentication Service admin API (`{issuer}/api/admin/v1`, OpenAPI description:
// shared/mas-admin-api.json): JSON:API-like `{data, meta, links}` answers, cursor pagination
// (`page[first]`, `page[after]`, `links.next`), errors `{errors: [{title}]}`. Users are addressed by
// MAS's own ULID, found by username.

/** How an admin back end reaches its API with the session's token. */
export interface AdminTransport {
  http: HttpDeps;
  /** Runs `call` with the session's current access token (refreshed when expired, replayed once on a refusal). */
  authed<T>(call: (accessToken: string) => Promise<T>): Promise<T>;
  /** Registers a secret as soon as it exists, so that no output, error or trace can show it. */
  rememberSecret(...values: string[]): void;
  /** The server name of the session's user (`example.org` of `@admin:example.org`): a localpart's server. */
  serverName: string;
}

const PAGE_SIZE = 100;
/** More pages than any admin listing needs: a server whose listing never ends is refused. */
const MAX_PAGES = 1000;
const API_SCOPE = 'urn:matrix:client:api:*';
const DEVICE_SCOPES = ['urn:matrix:client:device:', 'urn:matrix:org.matrix.msc2967.client:device:'];

/** MAS admin API errors (`ErrorResponse`): `{errors: [{title}]}`; the titles are the server's words. */
export function decodeMasAdminError(res: HttpResponse, _now: number): MxsError {
  const errors = Array.isArray(res.json?.errors) ? (res.json!.errors as unknown[]) : [];
  const title = errors.map((e) => serverLine((e as { title?: unknown } | null)?.title)).find((t) => t !== undefined);
  const { status, host } = res;
  const what = title ?? (status >= 500 ? 'server error' : 'request failed');
  // 401 for a token without `urn:mas:admin` ("Missing urn:mas:admin scope") is a refusal of rights, not of the token.
  const missingScope = status === 403 || (status === 401 && /scope/i.test(title ?? ''));
  const code = missingScope ? 'M_FORBIDDEN' : status === 401 ? 'M_UNKNOWN_TOKEN' : status === 404 ? 'M_NOT_FOUND' : status === 429 ? 'M_LIMIT_EXCEEDED' : 'bad_response';
  return new MxsError({
    code,
    message: `${host}: ${what} (HTTP ${status}).`,
    hint: status === 401 || status === 403 ? undefined : 'Retry later; --verbose shows the exchange.',
    kind: status === 401 || status === 403 ? 'auth' : 'network',
    status,
    detail: title,
    retryable: retryableStatus(status),
  });
}

type Resource = { id: string; attributes: Record<string, unknown> };

export function masAdminBackend(base: string, t: AdminTransport): AdminBackend {
  const root = base.replace(/\/+$/, '');

  async function call(method: 'GET' | 'POST', path: string, body?: unknown): Promise<Record<string, unknown>> {
    const res = await t.authed((accessToken) => send(t.http, { method, url: `${root}/${path}`, accessToken, json: body, retry: method === 'GET' }, decodeMasAdminError));
    return jsonBody(res, 'the Matrix Authentication Service admin API');
  }

  function resource(doc: Record<string, unknown>, what: string): Resource {
    const data = doc.data as Resource | undefined;
    if (!data || typeof data.id !== 'string' || typeof data.attributes !== 'object' || data.attributes === null) throw badResponse(`The admin API's ${what} answer has no resource.`);
    return data;
  }

  /** Every item of a listing: `page[first]`, then `page[after]` from `links.next` until there is none. */
  async function all(collection: string, filters: Record<string, string>): Promise<Resource[]> {
    const items: Resource[] = [];
    let after: string | null = null;
    for (let page = 0; page < MAX_PAGES; page++) {
      const query = new URLSearchParams({ ...filters, 'page[first]': String(PAGE_SIZE), ...(after === null ? {} : { 'page[after]': after }) });
      const doc = await call('GET', `${collection}?${query}`);
      const data = Array.isArray(doc.data) ? (doc.data as Resource[]) : [];
      items.push(...data);
      const next = (doc.links as { next?: unknown } | undefined)?.next;
      if (typeof next !== 'string' || next === '' || data.length === 0) return items;
      // The cursor is taken from the link, the URL is mxs's own: the token never follows a link elsewhere.
      after = new URL(next, 'http://cursor.invalid').searchParams.get('page[after]') ?? data[data.length - 1]!.id;
    }
    throw badResponse(`The admin API's ${collection} listing did not end after ${MAX_PAGES} pages.`);
  }

  const clientNames = new Map<string, Promise<string | null>>();
  function clientName(clientId: string): Promise<string | null> {
    let name = clientNames.get(clientId);
    if (!name) {
      name = call('GET', `oauth2-clients/${encodeURIComponent(clientId)}`)
        .then((doc) => str(resource(doc, 'client').attributes.client_name))
        .catch(() => null);
      clientNames.set(clientId, name);
    }
    return name;
  }

  const usernames = new Map<string, Promise<string>>();
  function matrixIdOf(ulid: string): Promise<string> {
    let id = usernames.get(ulid);
    if (!id) {
      id = call('GET', `users/${encodeURIComponent(ulid)}`).then((doc) => `@${String(resource(doc, 'user').attributes.username)}:${t.serverName}`);
      usernames.set(ulid, id);
    }
    return id;
  }

  /** A session by ID, whichever kind it is (an ID that is not a ULID is no session: nothing is asked). */
  async function findOne(id: string): Promise<AdminSession | null> {
    if (!/^[0-9A-HJKMNP-TV-Z]{26}$/.test(id)) return null;
    for (const kind of ['oauth2', 'compat', 'browser', 'personal'] as const) {
      try {
        const r = resource(await call('GET', `${kind === 'personal' ? 'personal-sessions' : COLLECTION[kind]}/${id}`), 'session');
        return toSession(kind, r);
      } catch (err) {
        if ((err as MxsError).status !== 404) throw err;
      }
    }
    return null;
  }

  async function toSession(kind: AdminSession['kind'], r: Resource): Promise<AdminSession> {
    const a = r.attributes;
    switch (kind) {
      case 'oauth2':
        return { ...common(kind, r), deviceId: deviceOf(str(a.scope)), client: str(a.human_name) ?? (typeof a.client_id === 'string' ? await clientName(a.client_id) : null) };
      case 'compat':
        return { ...common(kind, r), deviceId: str(a.device_id), client: str(a.human_name) };
      case 'personal':
        return { ...common(kind, r), deviceId: deviceOf(str(a.scope)), client: str(a.human_name), finishedAt: str(a.revoked_at) };
      default:
        return common(kind, r);
    }
  }

  function created(doc: Record<string, unknown>, userId: string): CreatedToken {
    const data = resource(doc, 'personal session');
    const token = data.attributes.access_token;
    if (typeof token !== 'string' || token === '') throw badResponse('The admin API created a personal session but sent no access token.');
    t.rememberSecret(token);
    return { id: data.id, userId, token, expiresAt: str(data.attributes.expires_at) };
  }

  return {
    api: 'mas',

    async resolveUser(user) {
      const localpart = localpartOf(user, t.serverName);
      try {
        const data = resource(await call('GET', `users/by-username/${encodeURIComponent(localpart)}`), 'user');
        return { userId: `@${localpart}:${t.serverName}`, adminId: data.id };
      } catch (err) {
        const e = err as MxsError;
        if (e.status === 404) throw usageError(`There is no user ${printable(localpart)} on ${t.serverName} (${e.detail ?? 'not found'}).`, 'Check the user ID: @user:server, or its localpart.');
        throw e;
      }
    },

    async sessions(user, { active }) {
      const status: Record<string, string> = active ? { 'filter[status]': 'active' } : {};
      const [oauth2, compat, browser, personal] = await Promise.all([
        all('oauth2-sessions', { 'filter[user]': user.adminId, ...status }),
        all('compat-sessions', { 'filter[user]': user.adminId, ...status }),
        all('user-sessions', { 'filter[user]': user.adminId, ...status }),
        all('personal-sessions', { 'filter[actor_user]': user.adminId, ...status }),
      ]);
      const sessions = await Promise.all([
        ...oauth2.map((r) => toSession('oauth2', r)),
        ...compat.map((r) => toSession('compat', r)),
        ...browser.map((r) => toSession('browser', r)),
        ...personal.map((r) => toSession('personal', r)),
      ]);
      return sessions.sort((a, b) => (b.lastActiveAt ?? b.createdAt ?? '').localeCompare(a.lastActiveAt ?? a.createdAt ?? '') || a.id.localeCompare(b.id));
    },

    async findSessions(ids) {
      const found: AdminSession[] = [];
      const unknown: string[] = [];
      for (const id of ids) {
        const session = await findOne(id);
        if (session) found.push(session);
        else unknown.push(id);
      }
      return { found, unknown };
    },

    async endSessions(sessions) {
      const ended: string[] = [];
      for (const s of sessions) {
        const id = encodeURIComponent(s.id);
        if (s.kind === 'personal') await call('POST', `personal-sessions/${id}/revoke`);
        else if (s.kind !== 'device') await call('POST', `${COLLECTION[s.kind]}/${id}/finish`);
        else throw usageError(`${printable(s.id)} is a Synapse device, not a session of the Matrix Authentication Service.`, 'See the sessions with: mxs admin sessions USER');
        ended.push(s.id);
      }
      return ended;
    },

    async createToken(user, { expiresInMs, name }) {
      const device = randomDeviceId();
      const body = {
        actor_user_id: user.adminId,
        human_name: name ?? `mxs token for ${localpartOf(user.userId, t.serverName)}`,
        scope: `${API_SCOPE} urn:matrix:client:device:${device}`,
        expires_in: expiresInMs === null ? null : Math.max(1, Math.round(expiresInMs / 1000)),
      };
      return created(await call('POST', 'personal-sessions', body), user.userId);
    },

    async listTokens(user) {
      const items = await all('personal-sessions', { 'filter[actor_user]': user.adminId });
      return items.map(
        (r): AdminToken => ({
          id: r.id,
          name: str(r.attributes.human_name),
          createdAt: str(r.attributes.created_at),
          expiresAt: str(r.attributes.expires_at),
          lastActiveAt: str(r.attributes.last_active_at),
          revokedAt: str(r.attributes.revoked_at),
        }),
      );
    },

    async revokeToken(id) {
      await tokenCall(id, 'revoke', () => call('POST', `personal-sessions/${encodeURIComponent(id)}/revoke`));
    },

    async regenerateToken(id, { expiresInMs }) {
      const body = { expires_in: expiresInMs === null ? null : Math.max(1, Math.round(expiresInMs / 1000)) };
      const doc = await tokenCall(id, 'regenerate', () => call('POST', `personal-sessions/${encodeURIComponent(id)}/regenerate`, body));
      const actor = resource(doc, 'personal session').attributes.actor_user_id;
      // The token exists from here on: hidden before anything else can fail and print.
      const token = resource(doc, 'personal session').attributes.access_token;
      if (typeof token === 'string') t.rememberSecret(token);
      return created(doc, typeof actor === 'string' ? await matrixIdOf(actor) : '');
    },
  };
}

const COLLECTION: Record<'oauth2' | 'compat' | 'browser', string> = { oauth2: 'oauth2-sessions', compat: 'compat-sessions', browser: 'user-sessions' };

/** 404 (no such personal session) and 409 (already revoked) are about the ID given: usage errors. */
async function tokenCall<T>(id: string, what: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    const e = err as MxsError;
    if (e.status === 404 || e.status === 409 || e.status === 400) {
      throw usageError(`Cannot ${what} token ${printable(id)}: ${e.detail ?? 'refused'} (HTTP ${e.status}).`, 'See the tokens with: mxs admin token list USER');
    }
    throw e;
  }
}

function common(kind: AdminSession['kind'], r: Resource): AdminSession {
  const a = r.attributes;
  return {
    kind,
    id: r.id,
    deviceId: null,
    client: null,
    createdAt: str(a.created_at),
    lastActiveAt: str(a.last_active_at),
    lastActiveIp: str(a.last_active_ip),
    userAgent: str(a.user_agent),
    finishedAt: str(a.finished_at),
  };
}

function str(v: unknown): string | null {
  return typeof v === 'string' ? v : null;
}

/** The device of a session's scope (MSC2967 `urn:matrix:client:device:ID`, or the unstable name). */
function deviceOf(scope: string | null): string | null {
  for (const token of (scope ?? '').split(' ')) {
    const prefix = DEVICE_SCOPES.find((p) => token.startsWith(p));
    if (prefix && token.length > prefix.length) return token.slice(prefix.length);
  }
  return null;
}

/** MAS accepts device IDs of `A-Z a-z 0-9 -`, 10 or more characters. */
function randomDeviceId(): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ';
  let id = '';
  for (let i = 0; i < 10; i++) id += alphabet[Math.floor(Math.random() * alphabet.length)];
  return id;
}

/** `@user:server` (of the session's server) or a localpart → the localpart; another server's user is a usage error. */
export function localpartOf(user: string, serverName: string): string {
  const m = /^@([^:]+):(.+)$/.exec(user);
  if (user.startsWith('@') && !m) throw usageError(`"${printable(user, { quoted: true })}" is not a user ID.`, 'Give @user:server, or the localpart alone.');
  if (m && m[2] !== serverName) {
    throw usageError(`${printable(user)} is not a user of ${serverName}, the server this session is on.`, 'Give a user of this server, or use a profile logged in on theirs.');
  }
  const localpart = m ? m[1]! : user;
  if (localpart === '' || !/^[\x21-\x7e]+$/.test(localpart)) throw usageError(`"${printable(user, { quoted: true })}" is not a user ID.`, 'Give @user:server, or the localpart alone.');
  return localpart;
}
