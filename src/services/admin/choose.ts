import { MxsError, notLoggedIn, usageError, type Hint } from '../../errors.js';
import { isLoopbackHost } from '../../http/loopback.js';
import { send } from '../../http/transport.js';
import type { SessionRecord } from '../../model.js';
import { SYNAPSE_ADMIN_SCOPE } from '../../oauth/client.js';
import { printable } from '../../printable.js';
import type { Deps } from '../deps.js';
import { refreshWhenExpired, withAccessToken } from '../session.js';
import type { AdminBackend } from './backend.js';
import { decodeMasAdminError, masAdminBackend, type AdminTransport } from './mas.js';

// Which admin API `mxs admin` talks to: the Matrix Authentication Service's when the session's server
// delegates to one (its OAuth issuer) and the API answers there (it is off unless the operator adds
// the `adminapi` resource); else Synapse's (`/_synapse/admin`). Said on stderr, and in --json (`api`).

/** What a back end needs of the session: its record, and authenticated calls through the session core. */
export interface AdminConnection extends AdminTransport {
  profile: string;
  record: SessionRecord;
}

/** Makes the Synapse back end (src/services/admin/synapse.ts) for a session. */
export type SynapseBackendFactory = (conn: AdminConnection) => AdminBackend | Promise<AdminBackend>;

export interface ChooseOptions {
  /** `--admin-api URL` / MXS_ADMIN_API: where the MAS admin API is (default `{issuer}/api/admin/v1`). */
  adminApi?: string | undefined;
  synapse: SynapseBackendFactory;
}

/** A session without admin rights: exit 4, and the login that asks for them. */
export function adminRightsHint(record: SessionRecord): Hint {
  return ['This session has no admin rights. Log in with them: ', { next: 'login', server: record.homeserver, flags: '--admin', profile: record.profile }];
}

/** The server refused the request for want of admin rights (MAS: 401 missing scope; Synapse: 403 M_FORBIDDEN). */
export function isAdminRefusal(e: unknown): e is MxsError {
  return e instanceof MxsError && e.code === 'M_FORBIDDEN' && (e.status === 401 || e.status === 403);
}

export async function adminConnection(profile: string, deps: Deps): Promise<AdminConnection> {
  const record = await deps.sessions.read(profile);
  if (!record) throw notLoggedIn(profile);
  return {
    profile,
    record,
    http: deps.http,
    // A client-credentials session belongs to no user: the homeserver's host stands in for the server name
    // (a full @user:server always works).
    serverName: record.userId === null ? new URL(record.homeserver).host : record.userId.slice(record.userId.indexOf(':') + 1),
    rememberSecret: (...values) => deps.rememberSecret(...values),
    async authed(call) {
      try {
        return (await withAccessToken(profile, deps, refreshWhenExpired, (s) => call(s.secret.accessToken))).value;
      } catch (err) {
        throw isAdminRefusal(err) ? err.with({ hint: adminRightsHint(record) }) : err;
      }
    },
  };
}

/** The back end for this session, its choice said on stderr. */
export async function chooseAdminBackend(conn: AdminConnection, deps: Deps, opts: ChooseOptions): Promise<AdminBackend> {
  const { record } = conn;
  const base = masAdminBase(record, opts.adminApi);
  if (base === null) {
    deps.notice('Using the Synapse admin API.');
    return await opts.synapse(conn);
  }
  const missing = await masAdminApiMissing(conn, base);
  if (missing === null) {
    deps.notice(`Using the Matrix Authentication Service admin API at ${base}.`);
    return masAdminBackend(base, conn);
  }
  const notThere = `The Matrix Authentication Service admin API is not exposed at ${base} (${missing})`;
  // Synapse refuses an OAuth token without its admin scope: say so rather than ask it.
  if (record.auth.type === 'oauth' && record.auth.scopes !== undefined && !record.auth.scopes.includes(SYNAPSE_ADMIN_SCOPE)) {
    throw new MxsError({ code: 'insufficient_scope', message: `${notThere}, and this session lacks ${SYNAPSE_ADMIN_SCOPE}, which the Synapse admin API needs.`, hint: adminRightsHint(record), kind: 'auth' });
  }
  deps.notice(`${notThere}; using the Synapse admin API.`);
  return await opts.synapse(conn);
}

/** The MAS admin API's base URL for this session, or null when the server does not delegate to MAS. */
export function masAdminBase(record: SessionRecord, adminApi: string | undefined): string | null {
  if (adminApi !== undefined && adminApi !== '') return checkedBase(adminApi, record);
  if (record.auth.type !== 'oauth') return null;
  return `${record.auth.issuer.replace(/\/+$/, '')}/api/admin/v1`;
}

function checkedBase(raw: string, record: SessionRecord): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw usageError(`--admin-api "${printable(raw, { quoted: true, maxChars: 200 })}" is not a URL.`, 'Give the admin API\'s base URL, e.g. https://auth.example.org/api/admin/v1');
  }
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && (isLoopbackHost(url.hostname) || record.insecure === true))) {
    // The session's access token goes there.
    throw usageError(`--admin-api ${printable(raw)}: mxs sends the access token only over https (http only to a loopback host).`, 'Give an https:// URL.');
  }
  if (url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '') throw usageError('--admin-api must be a plain base URL (no query, fragment or credentials).', 'e.g. https://auth.example.org/api/admin/v1');
  return url.toString().replace(/\/+$/, '');
}

/**
 * Whether the admin API answers at `base`: null when it does (any answer of its own, refusals
 * included: a session without the admin scope is told so, not sent elsewhere); else why not (HTTP
 * 404/405, or nothing listening). Asks `GET site-config`, the API's cheapest call.
 */
async function masAdminApiMissing(conn: AdminConnection, base: string): Promise<string | null> {
  try {
    await conn.authed((accessToken) => send(conn.http, { method: 'GET', url: `${base}/site-config`, accessToken }, decodeMasAdminError));
    return null;
  } catch (err) {
    const e = err as MxsError;
    if (e.status === 404 || e.status === 405) return `HTTP ${e.status}`;
    if (e.code === 'network' && e.status === undefined && /ECONNREFUSED|refused/i.test(`${e.message} ${e.detail ?? ''}`)) return 'connection refused';
    throw e;
  }
}
