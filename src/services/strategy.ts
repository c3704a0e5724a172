import { logout as matrixLogout, refresh as matrixRefresh, REFRESH_PATHS } from '../matrix/client.js';
import type { HttpDeps } from '../http/transport.js';
import type { SessionAuth, SessionRecord, SessionSecret, TokenGrant } from '../model.js';
import { loginHint, type Hint } from '../errors.js';
import { refreshGrant, refusePlainHttp, revokeToken, scopeList } from '../oauth/client.js';

/**
 * How a session refreshes and ends, by the protocol it was made with. The refresh transaction
 * (session.ts: lock, re-read, store before use) calls these and knows neither protocol.
 */
export interface AuthStrategy {
  /** Exchanges the refresh token; returns the grant and the session's auth as it should be stored next. */
  refresh(record: SessionRecord, refreshToken: string, opts: { lifetimeMs?: number }, http: HttpDeps): Promise<{ grant: TokenGrant; auth: SessionAuth }>;
  /** Ends the session on the server (`all`: every session of the account, where the protocol has that). */
  end(record: SessionRecord, secret: SessionSecret, opts: { all: boolean }, http: HttpDeps): Promise<void>;
  /** Whether ending the session needs a valid access token (Matrix /logout does; OAuth revocation does not). */
  endNeedsAccessToken: boolean;
}

const matrix: AuthStrategy = {
  async refresh(record, refreshToken, opts, http) {
    const preferredPath = record.auth.type === 'matrix' ? record.auth.refreshPath : undefined;
    const grant = await matrixRefresh(record.homeserver, { refreshToken, lifetimeMs: opts.lifetimeMs, preferredPath }, http);
    return { grant, auth: grant.path === REFRESH_PATHS[0] ? { type: 'matrix' } : { type: 'matrix', refreshPath: grant.path } };
  },
  async end(record, secret, opts, http) {
    await matrixLogout(record.homeserver, secret.accessToken, opts.all, http);
  },
  endNeedsAccessToken: true,
};

/**
 * The endpoints were checked at login, but a session stored by an older mxs was not: a plain-http
 * endpoint stored without the user's --insecure (which mxs has always recorded) was the server's
 * doing, so the refresh token is not sent there; logging in again picks up the server's current endpoints.
 */
function refuseStoredPlainHttp(record: SessionRecord, url: string, what: string): void {
  const hint: Hint = ['Run: ', loginHint(record.profile, new URL(record.homeserver).host), ' (with --insecure only if you really mean plain http://).'];
  refusePlainHttp(url, `the session's OAuth ${what}`, record.insecure === true, hint);
}

const oauth: AuthStrategy = {
  async refresh(record, refreshToken, _opts, http) {
    // `--lifetime` is a Matrix extension; OAuth servers set lifetimes themselves (contract: not sent).
    const auth = record.auth as Extract<SessionAuth, { type: 'oauth' }>;
    refuseStoredPlainHttp(record, auth.tokenEndpoint, 'token endpoint');
    const grant = await refreshGrant(auth.tokenEndpoint, auth.clientId, refreshToken, http);
    // A refresh may narrow the scopes (RFC 6749 §6); one that does not say keeps them.
    return { grant, auth: grant.scope === undefined ? auth : { ...auth, scopes: scopeList(grant.scope) } };
  },
  async end(record, secret, _opts, http) {
    // RFC 7009 with the session's own client: the refresh token first (it ends the grant), then the access token.
    const auth = record.auth as Extract<SessionAuth, { type: 'oauth' }>;
    refuseStoredPlainHttp(record, auth.revocationEndpoint, 'revocation endpoint');
    if (secret.refreshToken) await revokeToken(auth.revocationEndpoint, auth.clientId, secret.refreshToken, 'refresh_token', http);
    await revokeToken(auth.revocationEndpoint, auth.clientId, secret.accessToken, 'access_token', http);
  },
  endNeedsAccessToken: false,
};

export function strategyFor(auth: SessionAuth): AuthStrategy {
  return auth.type === 'oauth' ? oauth : matrix;
}
