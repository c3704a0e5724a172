// The Synapse admin API (`/_synapse/admin`) as an AdminBackend: a user's sessions are its devices,
// ending one deletes the device, and a bot's token is the admin login-as-user endpoint's. Every call
// goes through the session core (refresh ahead of expiry, 401 → refresh → replay once).

import { createHash } from 'node:crypto';
import { MxsError, usageError, type Hint } from '../../errors.js';
import type { HttpDeps } from '../../http/transport.js';
import { requestJson } from '../../matrix/http.js';
import type { AdminBackend, AdminSession, CreatedToken } from './backend.js';

/**
 * What the back end needs of the session (the shape of `mxs admin`'s AdminConnection): its homeserver,
 * and authenticated calls through the session core (refresh ahead of expiry, 401 → refresh → replay once).
 */
export interface SynapseAdminConnection {
  record: { homeserver: string };
  http: HttpDeps;
  authed<T>(call: (accessToken: string) => Promise<T>): Promise<T>;
  rememberSecret(...values: string[]): void;
  /** The Matrix server name a bare localpart belongs to (the session user's domain). */
  serverName: string;
}

type User = { userId: string; adminId: string };

const ADMIN = '/_synapse/admin';
/** Synapse lists devices in one page today; pages beyond this many are a server bug, not a user's devices. */
const MAX_PAGES = 1000;

/** The hint of a refusal for want of admin rights: log in again asking for them. */
export const ADMIN_LOGIN_HINT: Hint = ['Use a server admin\'s session; on an OAuth server log in with the admin scopes: ', { next: 'login', flags: '--admin' }];

export function synapseAdminBackend(conn: SynapseAdminConnection): AdminBackend {
  const homeserver = conn.record.homeserver;
  // Which user each listed session belongs to: endSessions takes sessions found by sessions() first.
  const owners = new WeakMap<AdminSession, string>();

  async function call(method: 'GET' | 'POST', path: string, body?: unknown, retry = true): Promise<Record<string, unknown>> {
    try {
      return (await conn.authed((accessToken) => requestJson(conn.http, { method, url: `${homeserver}${ADMIN}${path}`, accessToken, body, retry }))).body;
    } catch (err) {
      throw notAdmin(err);
    }
  }

  return {
    api: 'synapse',

    async resolveUser(user) {
      const userId = fullUserId(user, conn.serverName);
      try {
        await call('GET', `/v2/users/${encodeURIComponent(userId)}`);
      } catch (err) {
        const e = err as MxsError;
        if (e.status === 404 || e.status === 400) {
          throw usageError(`There is no user ${userId} on ${new URL(homeserver).host} (${e.detail ?? e.code}).`, 'Check the user ID: @user:server, or a localpart of the session\'s server.');
        }
        throw e;
      }
      return { userId, adminId: userId };
    },

    async sessions(user: User) {
      const devices: Record<string, unknown>[] = [];
      let from: string | undefined;
      for (let page = 0; page < MAX_PAGES; page++) {
        const body = await call('GET', `/v2/users/${encodeURIComponent(user.userId)}/devices${from === undefined ? '' : `?from=${encodeURIComponent(from)}`}`);
        if (Array.isArray(body.devices)) devices.push(...body.devices.filter(isObject));
        const next = body.next_token;
        if ((typeof next !== 'string' && typeof next !== 'number') || String(next) === from) break;
        from = String(next);
      }
      // Synapse keeps no deleted devices: every device is an active session (`--active` changes nothing).
      const sessions = devices.filter((d) => typeof d.device_id === 'string').map(toSession);
      for (const s of sessions) owners.set(s, user.userId);
      return sessions.sort(byActivity);
    },

    async endSessions(sessions) {
      const byUser = new Map<string, string[]>();
      for (const s of sessions) {
        const owner = owners.get(s);
        if (owner === undefined) throw new Error(`session ${s.id} was not listed by sessions() first`);
        byUser.set(owner, [...(byUser.get(owner) ?? []), s.id]);
      }
      const ended: string[] = [];
      for (const [userId, ids] of byUser) {
        // Not repeated on a lost answer: a repeat is harmless, but POST is never retried blindly.
        await call('POST', `/v2/users/${encodeURIComponent(userId)}/delete_devices`, { devices: ids }, false);
        ended.push(...ids);
      }
      return ended;
    },

    async createToken(user: User, opts): Promise<CreatedToken> {
      const validUntil = opts.expiresInMs === null ? null : conn.http.now() + opts.expiresInMs;
      const body = await call('POST', `/v1/users/${encodeURIComponent(user.userId)}/login`, validUntil === null ? {} : { valid_until_ms: validUntil }, false);
      const token = body.access_token;
      if (typeof token !== 'string' || token === '') {
        throw new MxsError({ code: 'bad_response', message: 'The server answered the admin login without an access_token.', hint: 'Retry later; --verbose shows the exchange.', kind: 'network' });
      }
      conn.rememberSecret(token);
      // Synapse gives such a token no ID and no device: its fingerprint (as `mxs inspect` shows it) names it.
      return { id: fingerprint(token), userId: user.userId, token, expiresAt: validUntil === null ? null : new Date(validUntil).toISOString() };
    },
  };
}

/** `alice` → `@alice:SERVER`; a full ID is taken as given. */
export function fullUserId(user: string, serverName: string): string {
  const u = user.trim();
  if (u.startsWith('@')) {
    if (!/^@[^:\s]+:\S+$/.test(u)) throw usageError(`"${u.slice(0, 64)}" is not a Matrix user ID.`, 'Give @user:server, or a localpart of the session\'s server.');
    return u;
  }
  if (!/^[^:@\s]+$/.test(u)) throw usageError(`"${u.slice(0, 64)}" is not a user: give @user:server or a localpart.`, 'For example: alice, or @alice:example.org.');
  return `@${u}:${serverName}`;
}

/** The first 12 hex digits of the token's SHA-256: the same `fingerprint` as `mxs inspect`. */
export function fingerprint(token: string): string {
  return createHash('sha256').update(token).digest('hex').slice(0, 12);
}

/** Synapse: 403 M_FORBIDDEN "You are not a server admin" — exit 4, naming the admin login. */
function notAdmin(err: unknown): unknown {
  const e = err as MxsError;
  if (!(e instanceof MxsError) || e.status !== 403 || e.code !== 'M_FORBIDDEN') return err;
  return e.with({ message: `The session has no admin rights on this server: ${e.message}`, hint: ADMIN_LOGIN_HINT, kind: 'auth' });
}

function toSession(d: Record<string, unknown>): AdminSession {
  const str = (k: string) => (typeof d[k] === 'string' && d[k] !== '' ? (d[k] as string) : null);
  const ts = typeof d.last_seen_ts === 'number' && Number.isFinite(d.last_seen_ts) ? new Date(d.last_seen_ts).toISOString() : null;
  return {
    kind: 'device',
    id: d.device_id as string,
    deviceId: d.device_id as string,
    client: str('display_name'),
    createdAt: null,
    lastActiveAt: ts,
    lastActiveIp: str('last_seen_ip'),
    userAgent: str('last_seen_user_agent'),
    finishedAt: null,
  };
}

/** Newest activity first; sessions never seen last, by ID for a stable order. */
function byActivity(a: AdminSession, b: AdminSession): number {
  if (a.lastActiveAt !== b.lastActiveAt) {
    if (a.lastActiveAt === null) return 1;
    if (b.lastActiveAt === null) return -1;
    return a.lastActiveAt < b.lastActiveAt ? 1 : -1;
  }
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
