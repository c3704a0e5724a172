import { logout as matrixLogout, refresh as matrixRefresh, REFRESH_PATHS } from '../matrix/client.js';
import type { HttpDeps } from '../http/transport.js';
import type { SessionAuth, SessionRecord, SessionSecret, TokenGrant } from '../model.js';
import { loginHint, type Hint } from '../errors.js';
import { refreshGrant, refusePlainHttp, revokeToken, scopeList } from '../oauth/client.js';
import { CLIENT_CREDENTIALS_SCOPE, clientCredentialsGrant, revokeWithSecret } from '../oauth/client-credentials.js';

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

/**
 * A confidential client's own session (RFC 6749 §4.4): no refresh token exists, so the client secret
 * is stored in its place (the same secret store, the same lock) and "refreshing" runs the grant again.
 */
const clientCredentials: AuthStrategy = {
  async refresh(record, clientSecret, _opts, http) {
    const auth = record.auth as Extract<SessionAuth, { type: 'oauth' }>;
    refuseStoredPlainHttp(record, auth.tokenEndpoint, 'token endpoint');
    const grant = await clientCredentialsGrant(auth.tokenEndpoint, confidentialClient(auth, clientSecret), CLIENT_CREDENTIALS_SCOPE, http);
    // A refresh token in the answer is not kept: the secret stays the way to a new token.
    const { refreshToken: _ignored, ...withoutRefresh } = grant;
    return { grant: withoutRefresh, auth: grant.scope === undefined ? auth : { ...auth, scopes: scopeList(grant.scope) } };
  },
  async end(record, secret, _opts, http) {
    // The secret itself stays valid (it is the client's, not the session's); forgetting it is logout's part.
    const auth = record.auth as Extract<SessionAuth, { type: 'oauth' }>;
    refuseStoredPlainHttp(record, auth.revocationEndpoint, 'revocation endpoint');
    if (secret.refreshToken === null) return;
    await revokeWithSecret(auth.revocationEndpoint, confidentialClient(auth, secret.refreshToken), secret.accessToken, http);
  },
  endNeedsAccessToken: false,
};

function confidentialClient(auth: Extract<SessionAuth, { type: 'oauth' }>, clientSecret: string) {
  return { clientId: auth.clientId, clientSecret, authMethod: auth.clientAuthMethod ?? 'client_secret_basic' };
}

export function strategyFor(auth: SessionAuth): AuthStrategy {
  if (auth.type !== 'oauth') return matrix;
  return auth.grant === 'client_credentials' ? clientCredentials : oauth;
}
