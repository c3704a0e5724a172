/**
 * The Matrix Authentication Service's admin side of OAuth, for tests: the admin-scope rule and the
 * client credentials grant (RFC 6749 §4.4). Its `handle` has the shape of the homeserver double's
 * extension hook (`extend` → `DoubleExtension.handle`: an answer for the requests it serves, undefined
 * for the rest), so it plugs into the double's OAuth mode with that one hook; `startOAuthAdminServer`
 * also serves it alone (with a homeserver's `auth_metadata` and `whoami`) for tests that need only it.
 *
 * - THE SCOPE RULE (MAS `docs/reference/scopes.md`): `urn:mas:admin` and `urn:synapse:admin:*` are
 *   granted only to users marked `can_request_admin` (authorization-code and device grants) and to
 *   clients listed as admin clients (client credentials grant): `mayGrantAdminScopes`.
 * - `POST /oauth2/token` with `grant_type=client_credentials`: the client authenticates with
 *   `client_secret_basic` (RFC 6749 §2.3.1: form-encoded id and secret) or `client_secret_post`, as
 *   configured for it; a wrong or missing secret → 401 invalid_client; a client not configured for
 *   the grant → 400 unauthorized_client; admin scopes for a client that is not an admin client → 400
 *   invalid_scope. Answer: `mat_` access token, Bearer, `expires_in` (`lifetimeSec`, 300), `scope`, no
 *   refresh token, `Cache-Control: no-store`.
 * - `POST /oauth2/revoke` with the same client authentication: a live token of that client is revoked
 *   (200); unknown tokens 200 (RFC 7009).
 * - `introspect(token)`: the live token's client and scope, or null (what Synapse would ask MAS).
 * Every grant lands in `grants`, every revocation in `revocations`.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';

export const ADMIN_SCOPES = ['urn:mas:admin', 'urn:synapse:admin:*'];

export function mayGrantAdminScopes(
  scopes: string[],
  who: { grant: 'authorization_code' | 'device_code'; canRequestAdmin: boolean } | { grant: 'client_credentials'; clientId: string; adminClients: readonly string[] },
): boolean {
  if (!scopes.some((s) => ADMIN_SCOPES.includes(s))) return true;
  return who.grant === 'client_credentials' ? who.adminClients.includes(who.clientId) : who.canRequestAdmin;
}

export interface ConfidentialClientConfig {
  clientId: string;
  clientSecret: string;
  authMethod: 'client_secret_basic' | 'client_secret_post';
  /** Listed in the policy's admin clients: may get the admin scopes. */
  admin: boolean;
}

export interface OAuthAdminOptions {
  clients: ConfidentialClientConfig[];
  lifetimeSec?: number;
}

interface Answer {
  status: number;
  json: unknown;
  headers?: Record<string, string>;
}

export interface OAuthAdmin {
  handle(req: { method: string; pathname: string; headers: http.IncomingHttpHeaders; rawBody: string }): Answer | undefined;
  introspect(token: string): { clientId: string; scope: string } | null;
  /** Every token now live becomes expired. */
  expireTokens(): void;
  grants: { clientId: string | null; authMethod: string; scope: string | null; outcome: string }[];
  revocations: { token: string | null; revoked: boolean }[];
}

const NO_STORE = { 'Cache-Control': 'no-store', Pragma: 'no-cache' };
const oauthError = (status: number, error: string, description: string): Answer => ({ status, json: { error, error_description: description }, headers: NO_STORE });

export function oauthAdmin(opts: OAuthAdminOptions): OAuthAdmin {
  const lifetimeSec = opts.lifetimeSec ?? 300;
  const tokens = new Map<string, { clientId: string; scope: string; expiresAt: number; revoked: boolean }>();
  const grants: OAuthAdmin['grants'] = [];
  const revocations: OAuthAdmin['revocations'] = [];

  /** RFC 6749 §2.3.1; returns the client or an invalid_client answer. */
  function authenticate(headers: http.IncomingHttpHeaders, form: URLSearchParams): { client: ConfidentialClientConfig; method: string } | Answer {
    const auth = headers.authorization;
    let id: string | null = null;
    let secret: string | null = null;
    let method = 'none';
    if (typeof auth === 'string' && auth.startsWith('Basic ')) {
      const [u, p] = Buffer.from(auth.slice(6), 'base64').toString('utf8').split(':');
      const dec = (v: string | undefined) => (v === undefined ? null : new URLSearchParams(`v=${v}`).get('v'));
      [id, secret, method] = [dec(u), dec(p), 'client_secret_basic'];
    } else if (form.has('client_secret')) {
      [id, secret, method] = [form.get('client_id'), form.get('client_secret'), 'client_secret_post'];
    }
    const client = opts.clients.find((c) => c.clientId === id);
    if (!client || secret !== client.clientSecret || method !== client.authMethod) return oauthError(401, 'invalid_client', 'Client authentication failed');
    return { client, method };
  }

  function tokenGrant(headers: http.IncomingHttpHeaders, form: URLSearchParams): Answer {
    const who = authenticate(headers, form);
    const scope = form.get('scope');
    const record = { clientId: 'client' in who ? who.client.clientId : null, authMethod: 'client' in who ? who.method : 'none', scope, outcome: 'refused' };
    grants.push(record);
    if (!('client' in who)) return who;
    const scopes = (scope ?? '').split(' ').filter((s) => s !== '');
    if (!mayGrantAdminScopes(scopes, { grant: 'client_credentials', clientId: who.client.clientId, adminClients: opts.clients.filter((c) => c.admin).map((c) => c.clientId) })) {
      return oauthError(400, 'invalid_scope', 'The client may not request the admin scopes');
    }
    const token = `mat_${randomBytes(20).toString('hex').slice(0, 30)}`;
    tokens.set(token, { clientId: who.client.clientId, scope: scopes.join(' '), expiresAt: Date.now() + lifetimeSec * 1000, revoked: false });
    record.outcome = 'granted';
    return { status: 200, json: { access_token: token, token_type: 'Bearer', expires_in: lifetimeSec, scope: scopes.join(' ') }, headers: NO_STORE };
  }

  function revoke(headers: http.IncomingHttpHeaders, form: URLSearchParams): Answer {
    const who = authenticate(headers, form);
    const token = form.get('token');
    const record = { token, revoked: false };
    revocations.push(record);
    if (!('client' in who)) return who;
    const row = token === null ? undefined : tokens.get(token);
    if (row && row.clientId === who.client.clientId && !row.revoked) record.revoked = row.revoked = true;
    return { status: 200, json: {}, headers: NO_STORE };
  }

  return {
    grants,
    revocations,
    handle(req) {
      if (req.method !== 'POST' || (req.pathname !== '/oauth2/token' && req.pathname !== '/oauth2/revoke')) return undefined;
      const form = new URLSearchParams(req.rawBody);
      // Revocations by confidential clients only: a public client's (client_id alone) are the double's.
      if (req.pathname === '/oauth2/revoke') return String(req.headers.authorization ?? '').startsWith('Basic ') || form.has('client_secret') ? revoke(req.headers, form) : undefined;
      return form.get('grant_type') === 'client_credentials' ? tokenGrant(req.headers, form) : undefined;
    },
    introspect(token) {
      const row = tokens.get(token);
      return row && !row.revoked && row.expiresAt > Date.now() ? { clientId: row.clientId, scope: row.scope } : null;
    },
    expireTokens() {
      for (const row of tokens.values()) row.expiresAt = Date.now() - 1;
    },
  };
}

/** `oauthAdmin` served alone on 127.0.0.1, as a homeserver whose auth is delegated to it (metadata, whoami). */
export async function startOAuthAdminServer(opts: OAuthAdminOptions): Promise<OAuthAdmin & { url: string; close(): Promise<void> }> {
  const admin = oauthAdmin(opts);
  let url = '';
  const server = http.createServer((req, res) => {
    let rawBody = '';
    req.on('data', (c: Buffer) => (rawBody += c.toString()));
    req.on('end', () => {
      const pathname = new URL(req.url ?? '/', url).pathname;
      const send = (a: Answer) => {
        res.writeHead(a.status, { 'content-type': 'application/json', ...a.headers });
        res.end(JSON.stringify(a.json));
      };
      const answer = admin.handle({ method: req.method ?? 'GET', pathname, headers: req.headers, rawBody });
      if (answer) return send(answer);
      if (pathname === '/_matrix/client/versions') return send({ status: 200, json: { versions: ['v1.15'] } });
      if (pathname === '/_matrix/client/v1/auth_metadata' || pathname === '/.well-known/openid-configuration') {
        return send({
          status: 200,
          json: {
            issuer: `${url}/`,
            authorization_endpoint: `${url}/authorize`,
            token_endpoint: `${url}/oauth2/token`,
            revocation_endpoint: `${url}/oauth2/revoke`,
            registration_endpoint: `${url}/oauth2/registration`,
            grant_types_supported: ['authorization_code', 'refresh_token', 'client_credentials'],
            token_endpoint_auth_methods_supported: ['none', 'client_secret_basic', 'client_secret_post'],
          },
        });
      }
      if (pathname === '/_matrix/client/v3/account/whoami') {
        // Synapse with MAS: a client's own token has no user, so it is no Matrix session.
        const token = String(req.headers.authorization ?? '').replace(/^Bearer /, '');
        return send(admin.introspect(token) ? { status: 403, json: { errcode: 'M_FORBIDDEN', error: 'The token belongs to no user' } } : { status: 401, json: { errcode: 'M_UNKNOWN_TOKEN', error: 'Token is not active', soft_logout: false } });
      }
      send({ status: 404, json: { errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' } });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    ...admin,
    url,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
