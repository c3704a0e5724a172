import { createHash, randomBytes } from 'node:crypto';
import { MxsError, badResponse, usageError, type Hint } from '../errors.js';
import { isLoopbackHost } from '../http/loopback.js';
import { jsonBody, retryableStatus, retryAfterMs, send, serverLine, type HttpDeps, type HttpResponse } from '../http/transport.js';
import { decodeMatrixError } from '../matrix/http.js';
import type { TokenGrant } from '../model.js';
import { optionalLifetimeMs, optionalString, optionalToken, requireString, requireToken } from '../matrix/validate.js';

// Matrix's OAuth 2.0 API (spec v1.15+, MSC3861 family) as plain functions over the server metadata:
// discovery, client registration (RFC 7591), the device authorization grant (RFC 8628), the
// authorization-code grant with PKCE (RFC 7636), refresh (RFC 6749 §6) and revocation (RFC 7009).

export interface AuthMetadata {
  issuer: string;
  authorizationEndpoint: string;
  tokenEndpoint: string;
  revocationEndpoint: string;
  registrationEndpoint: string;
  deviceAuthorizationEndpoint?: string;
  accountManagementUri?: string;
  /** MSC4191 `account_management_actions_supported` (e.g. `org.matrix.device_delete`); [] when absent. */
  accountManagementActions: string[];
  grantTypes: string[];
  codeChallengeMethods: string[];
  /** `token_endpoint_auth_methods_supported` (RFC 8414; empty when not given, which means client_secret_basic). */
  tokenEndpointAuthMethods: string[];
  /** RFC 9207: the server puts `iss` in every authorization response. */
  issParameterSupported: boolean;
}

export const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
export const API_SCOPE = 'urn:matrix:client:api:*';
/** The Matrix Authentication Service's admin API, and Synapse's admin API behind it (MAS docs, scopes.md). */
export const SYNAPSE_ADMIN_SCOPE = 'urn:synapse:admin:*';
export const ADMIN_SCOPES = ['urn:mas:admin', SYNAPSE_ADMIN_SCOPE];
export const deviceScope = (deviceId: string) => `urn:matrix:client:device:${deviceId}`;

/** A new device ID for the device scope (MSC2967: 10+ characters of [A-Za-z0-9]). */
export function newDeviceId(): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  return Array.from(randomBytes(12), (b) => alphabet[b % alphabet.length]).join('');
}

const METADATA_PATHS = ['/_matrix/client/v1/auth_metadata', '/_matrix/client/unstable/org.matrix.msc2965/auth_metadata'];

/**
 * `GET /auth_metadata` (spec v1.15, then MSC2965's unstable path). null: the server uses the legacy
 * API (it answers 404 M_UNRECOGNIZED, or 404/405 without a Matrix body on older servers).
 */
export async function discoverAuthMetadata(baseUrl: string, deps: HttpDeps): Promise<AuthMetadata | null> {
  for (const path of METADATA_PATHS) {
    let res: HttpResponse;
    try {
      res = await send(deps, { method: 'GET', url: `${baseUrl}${path}` }, decodeMatrixError);
    } catch (err) {
      const e = err as MxsError;
      if (e.status === 404 || e.status === 405 || e.status === 400) continue;
      throw e;
    }
    return parseMetadata(jsonBody(res, 'a Matrix homeserver'));
  }
  return null;
}

function parseMetadata(body: Record<string, unknown>): AuthMetadata {
  const what = 'auth_metadata';
  const url = (key: string, required: boolean): string | undefined => {
    const v = required ? requireString(body, key, what) : optionalString(body, key, what);
    if (v === undefined) return undefined;
    let parsed: URL;
    try {
      parsed = new URL(v);
    } catch {
      throw badResponse(`The server's ${what} has an invalid "${key}".`);
    }
    if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') throw badResponse(`The server's ${what} has an invalid "${key}".`);
    return v;
  };
  const list = (key: string): string[] => (Array.isArray(body[key]) ? (body[key] as unknown[]).filter((x): x is string => typeof x === 'string') : []);
  return {
    issuer: url('issuer', true)!,
    authorizationEndpoint: url('authorization_endpoint', true)!,
    tokenEndpoint: url('token_endpoint', true)!,
    revocationEndpoint: url('revocation_endpoint', true)!,
    registrationEndpoint: url('registration_endpoint', true)!,
    deviceAuthorizationEndpoint: url('device_authorization_endpoint', false),
    accountManagementUri: url('account_management_uri', false),
    accountManagementActions: list('account_management_actions_supported'),
    grantTypes: list('grant_types_supported'),
    codeChallengeMethods: list('code_challenge_methods_supported'),
    tokenEndpointAuthMethods: list('token_endpoint_auth_methods_supported'),
    issParameterSupported: body.authorization_response_iss_parameter_supported === true,
  };
}

/**
 * RFC 8414 §3.3 (OpenID Connect Discovery §4.3): the issuer's own metadata document must name the
 * issuer it was fetched from, the one the homeserver named. An issuer that publishes no such document
 * is taken as named: Matrix clients need only the homeserver's auth_metadata (spec v1.15).
 */
export async function confirmIssuer(meta: AuthMetadata, deps: HttpDeps): Promise<void> {
  const url = `${meta.issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
  let own: unknown;
  try {
    own = (await send(deps, { method: 'GET', url }, decodeMatrixError)).json?.issuer;
  } catch (err) {
    if ([404, 405, 410].includes((err as MxsError).status ?? 0)) return;
    throw err;
  }
  if (own === undefined || own === meta.issuer) return;
  throw new MxsError({
    code: 'bad_response',
    message: `The homeserver names ${meta.issuer} as its OAuth issuer, but that issuer's own metadata names ${String(own).slice(0, 200)}.`,
    hint: 'Nothing was sent to either. Report it to the server admin: the homeserver and its OAuth server disagree.',
    kind: 'network',
  });
}

/** The metadata's URLs that a code, a verifier or a token is sent to (or fetched from, for the issuer). */
export function secretBearingEndpoints(meta: AuthMetadata): [string, string][] {
  const named: [string, string | undefined][] = [
    ['issuer', meta.issuer],
    ['authorization endpoint', meta.authorizationEndpoint],
    ['token endpoint', meta.tokenEndpoint],
    ['device authorization endpoint', meta.deviceAuthorizationEndpoint],
    ['registration endpoint', meta.registrationEndpoint],
    ['revocation endpoint', meta.revocationEndpoint],
  ];
  return named.filter((e): e is [string, string] => e[1] !== undefined);
}

/**
 * Contract: plain http:// only to loopback unless --insecure, for every URL a secret or a code goes
 * to. The same rule as for the homeserver, so a server cannot route tokens around it through its metadata.
 */
export function refusePlainHttp(url: string, what: string, insecure: boolean, hint: Hint): void {
  const u = new URL(url);
  if (u.protocol !== 'http:' || insecure || isLoopbackHost(u.hostname)) return;
  throw usageError(`Refusing plain http:// to ${u.host} (${what}): codes and tokens would cross the network unencrypted.`, hint);
}

/** An OAuth error answer (RFC 6749 §5.2, RFC 8628 §3.5, RFC 7591 §3.2.2) as one MxsError. */
export function decodeOAuthError(res: HttpResponse, now: number): MxsError {
  const { status, json, host } = res;
  const error = typeof json?.error === 'string' && /^[\x20-\x7e]{1,64}$/.test(json.error) ? json.error : undefined;
  if (!error) {
    // Not an OAuth answer: a Matrix error (the homeserver itself), a proxy page, or a server error.
    return decodeMatrixError(res, now);
  }
  const serverMessage = serverLine(json?.error_description);
  // invalid_grant: the refresh token or code is dead; the others: the client or request is refused.
  // Pending/slow_down are not failures and are handled by the device poll before this matters.
  const auth = status >= 400 && status < 500 && status !== 429;
  return new MxsError({
    code: error,
    message: `${host}: ${serverMessage ?? error} (HTTP ${status} ${error}).`,
    hint: auth ? undefined : 'Retry later; --verbose shows the exchange.',
    kind: auth ? 'auth' : 'network',
    status,
    detail: serverMessage,
    retryable: retryableStatus(status),
    retryAfterMs: status === 429 ? retryAfterMs(res, now) : undefined,
  });
}

async function oauthPost(deps: HttpDeps, url: string, form: Record<string, string>, what: string, retry = true): Promise<{ body: Record<string, unknown>; sentAt: number }> {
  const res = await send(deps, { method: 'POST', url, form, retry }, decodeOAuthError);
  return { body: jsonBody(res, `an OAuth ${what} endpoint`), sentAt: res.sentAt };
}

export interface ClientRegistration {
  clientName: string;
  clientUri: string;
  grantTypes: string[];
  redirectUris?: string[];
}

const REGISTRATION_REFUSALS = new Set(['invalid_client_metadata', 'invalid_redirect_uri', 'invalid_software_statement', 'unapproved_software_statement']);

/** RFC 7591 + MSC2966: a native public client, registered at each login (the Matrix Authentication Service answers identical metadata with the same client ID). */
export async function registerClient(meta: AuthMetadata, reg: ClientRegistration, deps: HttpDeps): Promise<string> {
  const json: Record<string, unknown> = {
    client_name: reg.clientName,
    client_uri: reg.clientUri,
    application_type: 'native',
    token_endpoint_auth_method: 'none',
    grant_types: reg.grantTypes,
    response_types: reg.redirectUris ? ['code'] : [],
  };
  if (reg.redirectUris) json.redirect_uris = reg.redirectUris;
  const res = await send(deps, { method: 'POST', url: meta.registrationEndpoint, json, retry: false }, decodeOAuthError).catch((err: MxsError) => {
    const message = `The server refused to register mxs as an OAuth client: ${err.message}`;
    // RFC 7591 §3.2.2: the server refused this metadata (the Matrix Authentication Service: its policy).
    // The same metadata would be refused again, so it is final, not "retry later".
    if (REGISTRATION_REFUSALS.has(err.code)) {
      throw err.with({ kind: 'auth', message, hint: 'Ask the server admin about its client registration policy (MXS_OAUTH_CLIENT_URI, if set, must be https and not localhost).' });
    }
    throw err.with({ kind: err.kind === 'auth' ? 'network' : err.kind, message });
  });
  return requireString(jsonBody(res, 'an OAuth registration endpoint'), 'client_id', 'client registration');
}

export function tokenGrant(body: Record<string, unknown>, sentAt: number): TokenGrant {
  const what = 'token';
  const type = optionalString(body, 'token_type', what);
  if (type !== undefined && type.toLowerCase() !== 'bearer') throw badResponse(`The server's token response has token_type "${type.slice(0, 20)}", not Bearer.`);
  return {
    accessToken: requireToken(body, 'access_token', what),
    refreshToken: optionalToken(body, 'refresh_token', what),
    // RFC 6749 §5.1: expires_in is in seconds.
    expiresInMs: optionalLifetimeMs(body, 'expires_in', what, 1000),
    ...(typeof body.scope === 'string' && body.scope.trim() !== '' ? { scope: body.scope } : {}),
    sentAt,
  };
}

/** A token response's `scope` as the list stored with the session (bounded: it is server text). */
export function scopeList(scope: string | undefined): string[] | undefined {
  if (scope === undefined) return undefined;
  return [...new Set(scope.split(' ').filter((s) => s !== '' && /^[\x21-\x7e]{1,200}$/.test(s)))].slice(0, 50);
}

/** RFC 6749 §6: refresh. Network errors and 5xx are retried with the same (old) refresh token. */
export async function refreshGrant(tokenEndpoint: string, clientId: string, refreshToken: string, deps: HttpDeps): Promise<TokenGrant> {
  const { body, sentAt } = await oauthPost(deps, tokenEndpoint, { grant_type: 'refresh_token', refresh_token: refreshToken, client_id: clientId }, 'token');
  return tokenGrant(body, sentAt);
}

/** RFC 7009: revocation answers 200 even for an unknown token. */
export async function revokeToken(revocationEndpoint: string, clientId: string, token: string, hint: 'access_token' | 'refresh_token', deps: HttpDeps): Promise<void> {
  await send(deps, { method: 'POST', url: revocationEndpoint, form: { token, token_type_hint: hint, client_id: clientId } }, decodeOAuthError);
}

// ---------------------------------------------------------------------------------------------
// Device authorization grant (RFC 8628)

export interface DeviceAuthorization {
  deviceCode: string;
  userCode: string;
  verificationUri: string;
  verificationUriComplete?: string;
  /** When the codes expire (local clock, ms). */
  expiresAt: number;
  intervalMs: number;
}

export async function startDeviceAuthorization(meta: AuthMetadata, clientId: string, scope: string, deps: HttpDeps, loginHint?: string): Promise<DeviceAuthorization> {
  if (!meta.deviceAuthorizationEndpoint) throw badResponse('The server has no device_authorization_endpoint.');
  const form: Record<string, string> = { client_id: clientId, scope };
  if (loginHint) form.login_hint = loginHint;
  const { body, sentAt } = await oauthPost(deps, meta.deviceAuthorizationEndpoint, form, 'device authorization', false);
  const what = 'device authorization';
  const expiresInMs = optionalLifetimeMs(body, 'expires_in', what, 1000);
  if (expiresInMs === undefined) throw badResponse(`The server's ${what} response has no "expires_in".`);
  const interval = body.interval;
  if (interval !== undefined && (typeof interval !== 'number' || !Number.isInteger(interval) || interval < 0 || interval > 3600)) {
    throw badResponse(`The server's ${what} response has an invalid "interval".`);
  }
  return {
    deviceCode: requireToken(body, 'device_code', what),
    userCode: requireString(body, 'user_code', what).slice(0, 64),
    verificationUri: requireString(body, 'verification_uri', what),
    verificationUriComplete: optionalString(body, 'verification_uri_complete', what),
    expiresAt: sentAt + expiresInMs,
    // RFC 8628 §3.2: 5 seconds when the server does not say.
    intervalMs: (typeof interval === 'number' ? interval : 5) * 1000,
  };
}

/**
 * Polls the token endpoint until the user approves or denies, the code expires, or `signal` aborts.
 * `authorization_pending` may come as 400 (RFC 8628) or 403 (the Matrix Authentication Service);
 * `slow_down` adds 5 s to the interval (§3.5).
 */
export async function pollDeviceToken(
  meta: AuthMetadata,
  clientId: string,
  auth: DeviceAuthorization,
  deps: HttpDeps & { sleep: (ms: number, signal?: AbortSignal) => Promise<void> },
  signal?: AbortSignal,
): Promise<TokenGrant> {
  let interval = auth.intervalMs;
  for (;;) {
    await deps.sleep(interval, signal);
    if (signal?.aborted) throw signal.reason;
    if (deps.now() >= auth.expiresAt) throw deviceCodeExpired();
    try {
      const { body, sentAt } = await oauthPost(deps, meta.tokenEndpoint, { grant_type: DEVICE_GRANT, device_code: auth.deviceCode, client_id: clientId }, 'token');
      return tokenGrant(body, sentAt);
    } catch (err) {
      const e = err as MxsError;
      if (e.code === 'authorization_pending') continue;
      if (e.code === 'slow_down') {
        interval += 5000;
        continue;
      }
      if (e.code === 'access_denied') throw new MxsError({ code: 'access_denied', message: 'The login was denied in the browser.', hint: 'Run mxs login again and approve the request.', kind: 'auth', status: e.status });
      if (e.code === 'expired_token') throw deviceCodeExpired();
      throw e;
    }
  }
}

function deviceCodeExpired(): MxsError {
  return new MxsError({ code: 'expired_token', message: 'The login code expired before it was approved.', hint: 'Run mxs login again and approve the new code sooner.', kind: 'auth' });
}

// ---------------------------------------------------------------------------------------------
// Authorization code grant with PKCE (RFC 7636, S256)

export interface Pkce {
  verifier: string;
  challenge: string;
}

export function newPkce(): Pkce {
  const verifier = randomBytes(32).toString('base64url');
  return { verifier, challenge: createHash('sha256').update(verifier).digest('base64url') };
}

export function newState(): string {
  return randomBytes(16).toString('base64url');
}

export function authorizationUrl(
  meta: AuthMetadata,
  p: { clientId: string; redirectUri: string; scope: string; state: string; challenge: string; loginHint?: string },
): string {
  const url = new URL(meta.authorizationEndpoint);
  const q = url.searchParams;
  q.set('response_type', 'code');
  q.set('client_id', p.clientId);
  q.set('redirect_uri', p.redirectUri);
  q.set('scope', p.scope);
  q.set('state', p.state);
  q.set('code_challenge', p.challenge);
  q.set('code_challenge_method', 'S256');
  q.set('response_mode', 'query');
  if (p.loginHint) q.set('login_hint', p.loginHint);
  return url.toString();
}

export async function exchangeCode(
  meta: AuthMetadata,
  p: { clientId: string; code: string; redirectUri: string; verifier: string },
  deps: HttpDeps,
): Promise<TokenGrant> {
  const { body, sentAt } = await oauthPost(
    deps,
    meta.tokenEndpoint,
    { grant_type: 'authorization_code', code: p.code, redirect_uri: p.redirectUri, client_id: p.clientId, code_verifier: p.verifier },
    'token',
    false,
  );
  return tokenGrant(body, sentAt);
}
