/**
 * An in-process Matrix homeserver double for tests: plain `node:http` on 127.0.0.1, no dependencies.
 * This comment is the double's spec; test/unit/homeserver-double.test.ts checks every rule in it.
 *
 * LEGACY AUTH (the default), as Synapse does it (not only as the spec says):
 * - `GET /versions`; `/.well-known/matrix/client` 404; `GET /login` (flows), `POST /login` (password,
 *   `m.login.token`); `GET /_matrix/client/v1/auth_metadata` (and the MSC2965 path) 404 M_UNRECOGNIZED.
 * - Refresh (`/v3/refresh` and `/r0/refresh`, or `/unstable/org.matrix.msc2918/refresh` and
 *   `/unstable/org.matrix.msc2918.refresh_token/refresh`, as `refreshPaths` says) with Synapse's
 *   rotation rules (`AuthHandler.refresh_token`, `RegistrationWorkerStore.replace_refresh_token`):
 *   * refreshing RTn creates RTn+1/ATn+1 and records RTn+1 as RTn's successor;
 *   * refreshing RTn again while it is still valid deletes the earlier successor (and its access
 *     token) and answers 200 again: two racing refreshes both "win", the first winner's tokens die;
 *   * RTn stops working (403 M_FORBIDDEN "refresh token isn't valid anymore") once ATn+1 has been
 *     used on any authenticated request (an expired ATn+1 that is refused does not count);
 *   * refreshing RTn+1 deletes RTn and ATn (Synapse keeps only the last two refresh tokens): RTn then
 *     answers 401 M_UNKNOWN_TOKEN "refresh token does not exist", not 403. So the old access token ATn
 *     keeps working until it expires or RTn+1 is refreshed.
 *   Rules and error texts as a real Synapse 1.163.2 answered (not copied: its access-token cache keeps
 *   a deleted ATn working if it had been used before).
 * - `GET /account/whoami`, `POST /logout`, `POST /logout/all` (the last two accept an expired token).
 *
 * OAUTH 2.0 (`oauth: {…}`): a homeserver that delegates auth to the Matrix Authentication Service
 * (MAS), with MAS on the same origin (issuer = `url + '/'`). `GET /_matrix/client/v1/auth_metadata`,
 * the MSC2965 path and `/.well-known/openid-configuration` serve RFC 8414 metadata naming
 * `POST /oauth2/registration`, `POST /oauth2/device`, `GET /authorize`, `POST /oauth2/token` and
 * `POST /oauth2/revoke`; `account_management_uri` is `/account/`, `verification_uri` `/link` (not served).
 * - Registration (JSON; 201 with `client_id`, a ULID, plus the metadata), for the public native clients
 *   mxs registers: `token_endpoint_auth_method: none`, `application_type: native`; `client_uri` https,
 *   no user/password, not localhost/loopback (MAS's policy). `grant_types` (default
 *   [authorization_code]) ⊆ {authorization_code, refresh_token, urn:ietf:params:oauth:grant-type:device_code};
 *   `response_types` (default [code]) ⊆ {code}, and `code` ⟺ authorization_code (so a device-only
 *   client sends `[]`). With authorization_code, `redirect_uris` is required, each an http loopback
 *   (`127.0.0.1`, `[::1]`, `localhost`) without a port or fragment. Errors: 400 `invalid_client_metadata` /
 *   `invalid_redirect_uri` (`{error, error_description}`).
 * - Scope (device authorization and /authorize): exactly `urn:matrix:client:api:*` plus exactly one
 *   `urn:matrix:client:device:<ID>` (ID from `[A-Za-z0-9._~-]`, any length), in any order; anything
 *   else is `invalid_scope`. The device ID becomes the session's device. The `extend` hook (MAS admin
 *   mode, test/support/mas-admin-double.ts, whose tests check it) may add scope tokens, metadata and a
 *   policy (`mayGrant`): a device code it refuses stays pending when approved; /authorize access_denied.
 * - Form endpoints (device, token, revoke) need `application/x-www-form-urlencoded` (else 400
 *   invalid_request); a repeated parameter is invalid_request (RFC 6749 §3.2). Client: `client_id` in
 *   the form; unknown or missing → 401 invalid_client; a grant the client did not register → 400
 *   unauthorized_client; unknown grant_type → 400 unsupported_grant_type. Token answers carry
 *   `Cache-Control: no-store`.
 * - Device grant: `POST /oauth2/device` (client_id, scope) → device_code, user_code (6 of A-Z0-9),
 *   verification_uri (`…/link`), expires_in 1200, interval (`deviceIntervalSec`, 5), no
 *   `verification_uri_complete` (MAS sends none). Polling `POST /oauth2/token` with grant_type
 *   urn:ietf:params:oauth:grant-type:device_code, device_code, client_id: pending → 403
 *   authorization_pending, denied → 403 access_denied, expired → 403 expired_token (checked before
 *   the code's state), already exchanged / unknown / other client → 400 invalid_grant; never slow_down, however
 *   fast the polling. Controls: `approveDevice(userCode, localpart?)`, `denyDevice`, `expireDeviceCodes`,
 *   `deviceAuthorizations()`.
 * - Authorization code + PKCE: `GET /authorize?response_type=code&client_id&redirect_uri&scope&state
 *   &code_challenge&code_challenge_method=S256[&response_mode=query][&login_hint]`. Unknown client, a
 *   missing or unregistered redirect_uri, or another response_mode: 400 JSON, no redirect. A loopback
 *   redirect_uri registered without a port matches any port (RFC 8252 §7.3). Otherwise 302 to redirect_uri with
 *   `code`, `state` (when sent) and `iss` (RFC 9207) — or `error` (invalid_request for a missing or
 *   non-S256 PKCE challenge, unsupported_response_type, invalid_scope, unauthorized_client, or
 *   access_denied when the user denies). The "user" approves as `authorizeAs` (default the first user;
 *   null = denies). Every request lands in `authorizationRequests`.
 *   Token: grant_type=authorization_code with code, redirect_uri (exactly as sent to /authorize),
 *   client_id, code_verifier (S256) — any mismatch 400 invalid_grant; a code used twice is
 *   invalid_grant AND ends the session it gave (RFC 6749 §4.1.2).
 * - Tokens: `mat_…` / `mar_…` (MAS shape: 30 alphanumerics + base62 CRC32), token_type Bearer,
 *   expires_in in SECONDS (`accessTokenLifetimeSec`, 300), scope. MAS refresh (grant_type
 *   refresh_token, refresh_token, client_id): rotates and revokes ATn at once; RTn may be replayed while
 *   RTn+1 is unused and ATn+1 was never used (the replay revokes that pair and issues a new one); after
 *   that, and for unknown, revoked, expired (`expireRefreshTokens`) or other-client tokens, 400
 *   invalid_grant — the session itself survives. Every attempt lands in `usedRefreshTokens`.
 * - Revocation (form token, client_id): a live `mat_`/`mar_` token ends its whole session (both tokens)
 *   → 200; unknown, compat, expired access or consumed refresh tokens → 200 and nothing happens (so
 *   revoking only an EXPIRED access token does not end the session); another client's token → 400
 *   unauthorized_client. Every call lands in `revocations`.
 * - Authenticated routes take OAuth (and compat) tokens; an unknown, revoked or expired one → 401
 *   M_UNKNOWN_TOKEN "Token is not active", soft_logout false. `POST /logout` ends the token's session
 *   (a live one only, unlike Synapse); `POST /logout/all` ends all the user's sessions (mxs should never
 *   send it for OAuth). `POST /v3/delete_devices` answers 401 user-interactive auth `{flows: [{stages:
 *   ['m.oauth']}], params: {'m.oauth': {url}}, session}` with url = account_management_uri +
 *   `?action=org.matrix.device_delete&device_id=ID` (one device) or `?action=org.matrix.devices_list`;
 *   retried with `auth: {session}` once the devices are gone (`endSession(deviceId)` plays the account
 *   page), it answers 200 `{}`.
 * - `POST /login`, `GET /login` and every `/refresh` path answer 404 M_UNRECOGNIZED (`refreshPaths` is
 *   ignored) — unless `compat: true` (MAS's compatibility layer): `GET /login` lists m.login.password,
 *   `{type: 'm.login.sso', oauth_aware_preferred: true}` and m.login.token; `POST /login` issues compat
 *   sessions (`mct_`/`mcr_`; expires_in_ms = accessTokenLifetimeSec·1000 with `refresh_token: true`, no
 *   expiry without). MAS's compat refresh is not modelled (no mxs test refreshes a compat session).
 *
 * Every response has `Date` (skewable) and `Content-Type: application/json`; unknown paths answer
 * 404 M_UNRECOGNIZED, a known path with the wrong method 405 M_UNRECOGNIZED. `RecordedRequest.body`
 * is the parsed JSON, or for `application/x-www-form-urlencoded` the parsed form, else the raw text.
 * Faults: `inject('POST /_matrix/client/v3/refresh', fault1, fault2)` queues faults for a route
 * (method + path without query; method `*` matches any), OAuth routes included; each matching request
 * consumes one.
 *
 * Spawn the CLI with the async `spawn`/`execFile`, never a synchronous spawn: the double runs in the
 * test's own event loop and could not answer. Always `await double.close()`; it destroys open sockets,
 * including ones held by `delayMs` faults, so jest does not hang.
 */
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { createHash, randomInt } from 'node:crypto';
import zlib from 'node:zlib';

export interface DoubleOptions {
  /** Lifetime of refreshable access tokens (Synapse `refreshable_access_token_lifetime`). Default 60_000; null = refresh tokens disabled, tokens never expire. */
  accessTokenLifetimeMs?: number | null;
  /** localpart -> password. Default `{alice: 'alice-pw'}`. */
  users?: Record<string, string>;
  /** Which refresh endpoints exist. Default ['v3'] ('v3' also enables '/r0/refresh'). */
  refreshPaths?: ('v3' | 'unstable')[];
  /** m.login.token value -> localpart; each is single use. */
  loginTokens?: Record<string, string>;
  /** Delegate auth to a Matrix Authentication Service double (see the header). Default: off (legacy auth). */
  oauth?: OAuthOptions;
  /** Sees each request before the routes and may answer it instead (`next()`: the double's own answer). For modes kept in their own file (test/support/mas-devices.ts). */
  intercept?: (req: RequestContext, next: () => Answer) => Answer;
  /** More of MAS, in its own file (test/support/mas-admin-double.ts): served before the routes here, with the MAS tables in reach. */
  extend?: (core: DoubleCore) => DoubleExtension;
}

/** What an extension of the double (OAuth mode) may see and do of MAS's tables. */
export interface DoubleCore {
  serverName: string;
  /** The live MAS session a bearer token authenticates (unexpired, unrevoked), or null. */
  masTokenSession(token: string): { id: number; kind: 'oauth' | 'compat'; userId: string; deviceId: string; scope: string | null; clientId: string | null } | null;
  /** A new active MAS session with its first tokens, as a grant (or a compat login) would make. */
  grantMasSession(kind: 'oauth' | 'compat', userId: string, deviceId: string, scope: string | null, displayName: string | null, clientId?: string): { id: number; accessToken: string; refreshToken: string; expiresAt: number };
  endMasSession(id: number): void;
}

export interface DoubleExtension {
  /** An answer for requests it serves; undefined for the rest. */
  handle(req: { method: string; pathname: string; query: URLSearchParams; headers: http.IncomingHttpHeaders; rawBody: string }): Answer | undefined;
  /** Scope tokens MAS knows beyond the API and device scopes. */
  scopes?: readonly string[];
  /** MAS's policy on a grant of `scope` to `localpart`: false keeps a device code pending and answers /authorize access_denied. */
  mayGrant?(scope: string, localpart: string): boolean;
  /** More of the RFC 8414 metadata. */
  metadata?: Record<string, unknown>;
}

export interface OAuthOptions {
  /** MAS's compatibility layer: `GET`/`POST /login` (compat sessions). Default false. */
  compat?: boolean;
  /** `expires_in` of OAuth access tokens (and compat ones issued with a refresh token), whole seconds ≥ 0. Default 300 (MAS). */
  accessTokenLifetimeSec?: number;
  /** `interval` of device authorizations, whole seconds ≥ 0. Default 5 (MAS). */
  deviceIntervalSec?: number;
  /** The user at `/authorize` approves as this localpart; null = denies. Default: the first of `users`. */
  authorizeAs?: string | null;
}

export interface Fault {
  status?: number;
  json?: unknown;
  body?: string | Buffer;
  /** Content type of the fault's answer; default 'application/json' for `json`, 'text/html; charset=utf-8' for `body`. Alone, it overrides the real answer's content type. */
  contentType?: string;
  /** Extra headers, added to the fault's answer or (alone) to the real answer. */
  headers?: Record<string, string>;
  /** Wait this long before answering (use for 'hang past timeout'). If the client gave up meanwhile, no work is done. */
  delayMs?: number;
  /** Destroy the socket without answering (and without doing the work). */
  reset?: boolean;
  /** Do the real work (e.g. perform the refresh, rotating tokens), then destroy the socket: a 'lost response'. */
  commitThenReset?: boolean;
  /** Do the real work and send its JSON cut in half, with a matching Content-Length and Content-Type: application/json. */
  truncate?: boolean;
}

export interface RecordedRequest {
  method: string;
  /** The request target as sent, including any query string. */
  path: string;
  headers: Record<string, string | string[] | undefined>;
  /** Parsed JSON when possible, else the raw text; undefined when empty. */
  body: any;
  /** Date.now() when the request was received. */
  at: number;
  /** The fault this request consumed, if any. */
  fault?: Fault;
}

export interface DoubleSession {
  deviceId: string;
  userId: string;
  accessToken: string;
  refreshToken: string | null;
  /** Access-token expiry (ms since epoch), null = never. */
  expiresAt: number | null;
  /** The device's initial_device_display_name (the client_name for OAuth sessions), if given. */
  displayName: string | null;
  /** MAS sessions: the client and the scope granted. */
  clientId?: string | null;
  scope?: string | null;
}

export interface RegisteredClient {
  clientId: string;
  /** The registration request's metadata, as sent. */
  metadata: Record<string, unknown>;
  grantTypes: string[];
  redirectUris: string[];
}

export interface DeviceAuthorization {
  userCode: string;
  deviceCode: string;
  clientId: string;
  scope: string;
  deviceId: string;
  status: 'pending' | 'approved' | 'denied' | 'expired' | 'exchanged';
  /** The localpart that approved, once approved. */
  approvedAs: string | null;
  /** Token-endpoint polls for this code. */
  polls: number;
}

export interface AuthorizationRequest {
  clientId: string | null;
  redirectUri: string | null;
  scope: string | null;
  state: string | null;
  loginHint: string | null;
  /** 'approved' (302 with a code), an OAuth error code sent in the redirect (e.g. 'access_denied'), or 'rejected' (400, no redirect). */
  outcome: string;
}

export interface Revocation {
  token: string | null;
  clientId: string | null;
  /** Whether a session was ended. */
  revoked: boolean;
}

export interface HomeserverDouble {
  url: string;
  close(): Promise<void>;
  requests: RecordedRequest[];
  count(path: string): number;
  inject(route: string, ...faults: Fault[]): void;
  setDateSkewMs(ms: number): void;
  expireAccessTokens(): void;
  expireRefreshTokens(): void;
  revokeAll(): void;
  sessions(): DoubleSession[];
  accessTokenStatus(token: string): 'valid' | 'expired' | 'unknown';
  /** Every refresh token presented for refresh (legacy `/refresh`, OAuth `refresh_token` grant), in order. */
  usedRefreshTokens: string[];
  /** End every session (legacy or MAS) on this device ID, as MAS's account page or an admin would. */
  endSession(deviceId: string): void;

  // OAuth mode. The controls (approveDevice, denyDevice, expireDeviceCodes) throw when `oauth` is off.
  /** The OAuth issuer (`url + '/'`); null when `oauth` is off. */
  issuer: string | null;
  clients(): RegisteredClient[];
  deviceAuthorizations(): DeviceAuthorization[];
  /** The user enters `userCode` at `verification_uri` and approves as `localpart` (default: the first user); a code the `extend` policy refuses stays pending. Throws for an unknown or non-pending code. */
  approveDevice(userCode: string, localpart?: string): void;
  /** The user denies `userCode`. Throws for an unknown or non-pending code. */
  denyDevice(userCode: string): void;
  /** Every device code not yet exchanged expires now. */
  expireDeviceCodes(): void;
  authorizationRequests: AuthorizationRequest[];
  revocations: Revocation[];
}

// ---------------------------------------------------------------------------------------------
// Token generation, shaped like Synapse's (`syt_<b64 localpart>_<20 letters>_<base62 crc32>`).

const LETTERS = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ';
const BASE62 = '0123456789' + LETTERS;

function randomLetters(n: number, alphabet = LETTERS): string {
  let s = '';
  for (let i = 0; i < n; i++) s += alphabet[randomInt(alphabet.length)];
  return s;
}

function base62(n: number, minWidth: number): string {
  let s = '';
  do {
    s = BASE62[n % 62] + s;
    n = Math.floor(n / 62);
  } while (n > 0);
  return s.padStart(minWidth, '0');
}

/** `<base>_<base62 crc32>`: the checksum Synapse's and MAS's tokens end with. */
function withChecksum(base: string): string {
  return `${base}_${base62(zlib.crc32(base), 6)}`;
}

function makeToken(prefix: 'syt' | 'syr', localpart: string): string {
  const b64 = Buffer.from(localpart, 'utf8').toString('base64').replace(/=+$/, '');
  return withChecksum(`${prefix}_${b64}_${randomLetters(20)}`);
}

const ALNUM = BASE62;
const ULID_ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

/** MAS's token shape (mas-data-model `TokenType`): `<prefix>_<30 alphanumerics>_<base62 crc32>`. */
function makeMasToken(prefix: 'mat' | 'mar' | 'mct' | 'mcr'): string {
  return withChecksum(`${prefix}_${randomLetters(30, ALNUM)}`);
}

/** Synapse's `_verify_refresh_token`: shape and checksum only. */
function refreshTokenWellFormed(token: string): boolean {
  const parts = token.split('_');
  return parts.length === 4 && parts[0] === 'syr' && withChecksum(parts.slice(0, 3).join('_')) === token;
}

// ---------------------------------------------------------------------------------------------

interface AccessTokenRow {
  token: string;
  userId: string;
  deviceId: string;
  expiresAt: number | null;
  refreshTokenId: number | null;
  used: boolean;
}

interface RefreshTokenRow {
  id: number;
  token: string;
  userId: string;
  deviceId: string;
  expiresAt: number | null;
  nextId: number | null;
}

export interface Answer {
  status: number;
  json: unknown;
  headers?: Record<string, string>;
}

class MatrixError {
  constructor(
    readonly status: number,
    readonly errcode: string,
    readonly error: string,
    readonly extra: Record<string, unknown> = {},
  ) {}
  answer(): Answer {
    return { status: this.status, json: { errcode: this.errcode, error: this.error, ...this.extra } };
  }
}

/** An RFC 6749 §5.2 / RFC 7591 §3.2.2 error: `{error, error_description}`. */
class OAuthError {
  constructor(
    readonly status: number,
    readonly error: string,
    readonly description: string,
  ) {}
  answer(): Answer {
    return { status: this.status, json: { error: this.error, error_description: this.description }, headers: NO_STORE };
  }
}

const NO_STORE = { 'Cache-Control': 'no-store', Pragma: 'no-cache' };

const ok = (json: unknown): Answer => ({ status: 200, json });

// MAS's tables, simplified: a session (OAuth or compat) with its access and refresh tokens.
interface MasSession {
  id: number;
  kind: 'oauth' | 'compat';
  clientId: string | null;
  userId: string;
  deviceId: string;
  scope: string | null;
  displayName: string | null;
  active: boolean;
}

interface MasAccessToken {
  token: string;
  sessionId: number;
  seq: number;
  expiresAt: number | null;
  /** Set the first time it authenticates a request (Synapse introspects it: MAS records it as used). */
  used: boolean;
  revoked: boolean;
}

interface MasRefreshToken {
  token: string;
  sessionId: number;
  seq: number;
  /** The access token issued together with this refresh token. */
  accessToken: string;
  /** Set when consumed: the refresh token that replaced it. */
  next: string | null;
  consumed: boolean;
  revoked: boolean;
  expiresAt: number | null;
}

interface DeviceGrant {
  deviceCode: string;
  userCode: string;
  clientId: string;
  scope: string;
  deviceId: string;
  expiresAt: number;
  state: 'pending' | 'approved' | 'denied' | 'exchanged';
  approvedAs: string | null;
  polls: number;
}

interface AuthCodeGrant {
  code: string;
  clientId: string;
  /** The redirect_uri sent to /authorize. */
  redirectUriSent: string | null;
  scope: string;
  deviceId: string;
  userId: string;
  codeChallenge: string;
  exchangedSessionId: number | null;
}

const API_SCOPE = 'urn:matrix:client:api:*';
const DEVICE_SCOPE_PREFIX = 'urn:matrix:client:device:';
const DEVICE_CODE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
const GRANT_TYPES = ['authorization_code', 'refresh_token', DEVICE_CODE_GRANT];
const ACCOUNT_ACTIONS = ['org.matrix.profile', 'org.matrix.devices_list', 'org.matrix.device_view', 'org.matrix.device_delete', 'org.matrix.account_deactivate', 'org.matrix.cross_signing_reset'];

/** MSC2967: `urn:matrix:client:api:*` plus exactly one device scope; returns the device ID. */
function checkScope(scope: string | null, known: readonly string[] = []): { scope: string; deviceId: string } {
  if (scope === null || scope.trim() === '') throw new OAuthError(400, 'invalid_scope', 'A scope is required');
  const tokens = scope.split(' ').filter((t) => t !== '');
  if (new Set(tokens).size !== tokens.length) throw new OAuthError(400, 'invalid_scope', 'Duplicate scope');
  const devices = tokens.filter((t) => t.startsWith(DEVICE_SCOPE_PREFIX));
  const others = tokens.filter((t) => t !== API_SCOPE && !t.startsWith(DEVICE_SCOPE_PREFIX) && !known.includes(t));
  if (!tokens.includes(API_SCOPE)) throw new OAuthError(400, 'invalid_scope', `The scope must include ${API_SCOPE}`);
  if (devices.length !== 1) throw new OAuthError(400, 'invalid_scope', 'The scope must include exactly one device scope');
  if (others.length > 0) throw new OAuthError(400, 'invalid_scope', `Unsupported scope: ${others[0]}`);
  const deviceId = devices[0].slice(DEVICE_SCOPE_PREFIX.length);
  if (!/^[A-Za-z0-9._~-]+$/.test(deviceId)) throw new OAuthError(400, 'invalid_scope', 'Invalid device ID in the device scope');
  return { scope: tokens.join(' '), deviceId };
}

function parseUrl(raw: string): URL | null {
  try {
    return new URL(raw);
  } catch {
    return null;
  }
}

/** A native app's loopback redirect URI, registered without a port (RFC 8252 §7.3; MAS policy). */
function isPortlessLoopback(raw: string): boolean {
  // The raw text, not a parsed URL: WHATWG URL drops ':80'.
  return /^http:\/\/(?:127\.0\.0\.1|\[::1\]|localhost)(?:[/?#]|$)/i.test(raw);
}

function isLoopbackHost(hostname: string): boolean {
  return hostname === 'localhost' || hostname.endsWith('.localhost') || hostname === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(hostname);
}

/** Does the redirect_uri sent to /authorize match a registered one? Loopback without port: any port. */
function redirectMatches(sent: string, registered: string): boolean {
  if (sent === registered) return true;
  if (!isPortlessLoopback(registered)) return false;
  const s = parseUrl(sent);
  const r = parseUrl(registered);
  if (!s || !r || s.protocol !== 'http:' || s.username !== '' || s.password !== '') return false;
  return s.hostname === r.hostname && s.pathname === r.pathname && s.search === r.search && s.hash === '';
}

function s256(verifier: string): string {
  return createHash('sha256').update(verifier, 'ascii').digest('base64url');
}

type Handler = (ctx: RequestContext) => Answer;

export interface RequestContext {
  method: string;
  pathname: string;
  query: URLSearchParams;
  headers: http.IncomingHttpHeaders;
  rawBody: string;
}

interface Route {
  pattern: RegExp;
  methods: Record<string, Handler>;
}

const VERSIONS = [
  'r0.0.1', 'r0.1.0', 'r0.2.0', 'r0.3.0', 'r0.4.0', 'r0.5.0', 'r0.6.0', 'r0.6.1',
  'v1.1', 'v1.2', 'v1.3', 'v1.4', 'v1.5', 'v1.6', 'v1.7', 'v1.8', 'v1.9', 'v1.10', 'v1.11', 'v1.12',
];

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function stringList(v: unknown): string[] | null {
  return Array.isArray(v) && v.every((x) => typeof x === 'string') ? v : null;
}

function isForm(headers: http.IncomingHttpHeaders): boolean {
  return String(headers['content-type'] ?? '').split(';')[0].trim().toLowerCase() === 'application/x-www-form-urlencoded';
}

/** What `RecordedRequest.body` holds: the parsed form or JSON, else the raw text; undefined when empty. */
function recordedBody(headers: http.IncomingHttpHeaders, rawBody: string): unknown {
  if (rawBody === '') return undefined;
  if (isForm(headers)) return Object.fromEntries(new URLSearchParams(rawBody));
  try {
    return JSON.parse(rawBody);
  } catch {
    return rawBody;
  }
}

/** Synapse's `parse_json_object_from_request`. */
function parseJsonObject(raw: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new MatrixError(400, 'M_NOT_JSON', 'Content not JSON.');
  }
  if (!isPlainObject(parsed)) throw new MatrixError(400, 'M_BAD_JSON', 'Content must be a JSON object.');
  return parsed;
}

export async function startHomeserverDouble(opts: DoubleOptions = {}): Promise<HomeserverDouble> {
  const accessTokenLifetimeMs = opts.accessTokenLifetimeMs === undefined ? 60_000 : opts.accessTokenLifetimeMs;
  const users = opts.users ?? { alice: 'alice-pw' };
  const serverName = 'localhost';
  const refreshPaths = new Set(opts.refreshPaths ?? ['v3']);
  const loginTokens = new Map(Object.entries(opts.loginTokens ?? {}));
  const oauth = opts.oauth ?? null;
  const compat = oauth?.compat ?? false;
  const oauthAccessLifetimeSec = oauth?.accessTokenLifetimeSec ?? 300;
  const deviceIntervalSec = oauth?.deviceIntervalSec ?? 5;
  const deviceCodeLifetimeSec = 1200;
  const checkLocalpart = (localpart: string | null): string | null => {
    if (localpart !== null && !(localpart in users)) throw new Error(`homeserver double: unknown user ${JSON.stringify(localpart)}`);
    return localpart;
  };
  const authorizeAs: string | null = checkLocalpart(oauth?.authorizeAs === undefined ? Object.keys(users)[0] : oauth.authorizeAs);
  /** The double's base URL; set once it listens. */
  let baseUrl = '';

  let dateSkewMs = 0;
  let closed = false;
  const requests: RecordedRequest[] = [];
  const usedRefreshTokens: string[] = [];
  const faults = new Map<string, Fault[]>();
  const sockets = new Set<Socket>();
  const sleepers = new Map<NodeJS.Timeout, () => void>();

  // "Database".
  const accessTokens = new Map<string, AccessTokenRow>();
  const refreshTokens = new Map<number, RefreshTokenRow>();
  const displayNames = new Map<string, string>(); // `${userId}|${deviceId}` -> name
  let nextRefreshId = 1;

  // MAS "database" (OAuth mode).
  const clients = new Map<string, RegisteredClient>();
  const masSessions = new Map<number, MasSession>();
  const masAccessTokens = new Map<string, MasAccessToken>();
  const masRefreshTokens = new Map<string, MasRefreshToken>();
  const deviceGrants = new Map<string, DeviceGrant>(); // by device_code
  const authCodes = new Map<string, AuthCodeGrant>();
  const uiaSessions = new Map<string, { userId: string; devices: string[] }>();
  const authorizationRequests: AuthorizationRequest[] = [];
  const revocations: Revocation[] = [];
  let nextMasSessionId = 1;
  let nextSeq = 1;

  const now = () => Date.now();
  const expired = (expiresAt: number | null) => expiresAt !== null && expiresAt < now();

  function deleteRefreshToken(id: number): void {
    const row = refreshTokens.get(id);
    if (!row) return;
    refreshTokens.delete(id);
    // ON DELETE CASCADE to access_tokens.refresh_token_id.
    for (const [token, at] of accessTokens) if (at.refreshTokenId === id) accessTokens.delete(token);
  }

  function deleteDevices(userId: string, deviceId: string | null): void {
    for (const [token, at] of accessTokens) {
      if (at.userId === userId && (deviceId === null || at.deviceId === deviceId)) accessTokens.delete(token);
    }
    for (const [id, rt] of refreshTokens) {
      if (rt.userId === userId && (deviceId === null || rt.deviceId === deviceId)) refreshTokens.delete(id);
    }
    for (const key of [...displayNames.keys()]) {
      if (key.startsWith(`${userId}|`) && (deviceId === null || key === `${userId}|${deviceId}`)) displayNames.delete(key);
    }
  }

  function issueAccessToken(userId: string, deviceId: string, expiresAt: number | null, refreshTokenId: number | null): string {
    const token = makeToken('syt', localpartOf(userId));
    accessTokens.set(token, { token, userId, deviceId, expiresAt, refreshTokenId, used: false });
    return token;
  }

  function issueRefreshToken(userId: string, deviceId: string, expiresAt: number | null): RefreshTokenRow {
    const token = makeToken('syr', localpartOf(userId));
    const row: RefreshTokenRow = { id: nextRefreshId++, token, userId, deviceId, expiresAt, nextId: null };
    refreshTokens.set(row.id, row);
    return row;
  }

  function localpartOf(userId: string): string {
    return userId.slice(1, userId.indexOf(':'));
  }

  /** Synapse `get_access_token_from_request`. */
  function accessTokenFrom(ctx: RequestContext): string {
    const auth = ctx.headers.authorization;
    const queryToken = ctx.query.get('access_token');
    if (auth !== undefined) {
      if (Array.isArray(auth)) throw new MatrixError(400, 'M_MISSING_TOKEN', 'Too many Authorization headers.');
      if (queryToken !== null) {
        throw new MatrixError(400, 'M_MISSING_TOKEN', 'Mixing Authorization headers and access_token query parameters.');
      }
      const parts = auth.split(' ');
      if (parts.length !== 2 || parts[0] !== 'Bearer' || parts[1] === '') {
        throw new MatrixError(401, 'M_MISSING_TOKEN', 'Invalid Authorization header.');
      }
      return parts[1];
    }
    // Deprecated, but Synapse still accepts it; the request log keeps the query so tests can assert on it.
    if (queryToken !== null && queryToken !== '') return queryToken;
    throw new MatrixError(401, 'M_MISSING_TOKEN', 'Missing access token');
  }

  /** Synapse `get_user_by_access_token`: checks expiry (unless allowed), then marks the token used. */
  function authenticate(ctx: RequestContext, allowExpired = false): AccessTokenRow {
    const token = accessTokenFrom(ctx);
    const row = accessTokens.get(token);
    if (!row) throw new MatrixError(401, 'M_UNKNOWN_TOKEN', 'Invalid access token passed.', { soft_logout: false });
    if (!allowExpired && expired(row.expiresAt)) throw new MatrixError(401, 'M_UNKNOWN_TOKEN', 'Access token has expired', { soft_logout: true });
    row.used = true;
    return row;
  }

  // --- handlers ------------------------------------------------------------------------------

  const loginFlows: Handler = () => ok({ flows: [{ type: 'm.login.password' }, { type: 'm.login.token' }] });

  function resolveUser(identifierUser: string): string | null {
    let localpart = identifierUser;
    if (identifierUser.startsWith('@')) {
      const colon = identifierUser.indexOf(':');
      if (colon < 0 || identifierUser.slice(colon + 1) !== serverName) return null;
      localpart = identifierUser.slice(1, colon);
    }
    // Synapse looks users up case-insensitively.
    return Object.keys(users).find((u) => u.toLowerCase() === localpart.toLowerCase()) ?? null;
  }

  /** The credential checks of `POST /login` (Synapse's; MAS's compat layer answers the same way). */
  function checkLogin(ctx: RequestContext): { body: Record<string, unknown>; userId: string; deviceId: string } {
    const body = parseJsonObject(ctx.rawBody);
    const type = body.type;
    if (typeof type !== 'string') throw new MatrixError(400, 'M_INVALID_PARAM', 'Bad parameter: type');
    let localpart: string;
    if (type === 'm.login.password') {
      const password = body.password;
      if (typeof password !== 'string') throw new MatrixError(400, 'M_INVALID_PARAM', 'Bad parameter: password');
      // convert_client_dict_legacy_fields_to_identifier: top-level `user` is the deprecated form.
      let identifier = body.identifier;
      if (identifier === undefined && body.user !== undefined) identifier = { type: 'm.id.user', user: body.user };
      if (!isPlainObject(identifier)) throw new MatrixError(400, 'M_INVALID_PARAM', 'Invalid login submission');
      if (identifier.type !== 'm.id.user') throw new MatrixError(400, 'M_UNKNOWN', 'Unknown login identifier type');
      if (typeof identifier.user !== 'string') throw new MatrixError(400, 'M_INVALID_PARAM', "User identifier is missing 'user' key");
      const found = resolveUser(identifier.user);
      if (found === null || users[found] !== password) throw new MatrixError(403, 'M_FORBIDDEN', 'Invalid username or password');
      localpart = found;
    } else if (type === 'm.login.token') {
      const token = body.token;
      if (typeof token !== 'string') throw new MatrixError(400, 'M_INVALID_PARAM', 'Bad parameter: token');
      const found = loginTokens.get(token);
      if (found === undefined) throw new MatrixError(403, 'M_FORBIDDEN', 'Invalid login token');
      loginTokens.delete(token);
      localpart = found;
    } else {
      throw new MatrixError(400, 'M_INVALID_PARAM', 'Invalid login submission');
    }

    if (body.device_id !== undefined && typeof body.device_id !== 'string') {
      throw new MatrixError(400, 'M_INVALID_PARAM', 'device_id must be a string');
    }
    if (body.initial_device_display_name !== undefined && typeof body.initial_device_display_name !== 'string') {
      throw new MatrixError(400, 'M_INVALID_PARAM', 'initial_device_display_name must be a string');
    }
    const userId = `@${localpart}:${serverName}`;
    const deviceId = (body.device_id as string | undefined) ?? randomLetters(10, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ');
    return { body, userId, deviceId };
  }

  const login: Handler = (ctx) => {
    const { body, userId, deviceId } = checkLogin(ctx);
    const displayKey = `${userId}|${deviceId}`;
    if (typeof body.initial_device_display_name === 'string' && !displayNames.has(displayKey)) {
      displayNames.set(displayKey, body.initial_device_display_name);
    }

    const t = now();
    const rt = body.refresh_token === true && accessTokenLifetimeMs !== null ? issueRefreshToken(userId, deviceId, null) : null;
    const expiresAt = rt && accessTokenLifetimeMs !== null ? t + accessTokenLifetimeMs : null;
    const accessToken = issueAccessToken(userId, deviceId, expiresAt, rt?.id ?? null);
    const response: Record<string, unknown> = { user_id: userId, device_id: deviceId, home_server: serverName, access_token: accessToken };
    if (rt && expiresAt !== null) Object.assign(response, { refresh_token: rt.token, expires_in_ms: expiresAt - t });
    return ok(response);
  };

  /** Synapse `RefreshTokenServlet` + `AuthHandler.refresh_token` + `replace_refresh_token`. */
  const refresh: Handler = (ctx) => {
    const body = parseJsonObject(ctx.rawBody);
    if (!('refresh_token' in body)) throw new MatrixError(400, 'M_MISSING_PARAM', "Missing params: ['refresh_token']");
    const token = body.refresh_token;
    if (typeof token !== 'string') throw new MatrixError(400, 'M_INVALID_PARAM', 'Invalid param: refresh_token');
    usedRefreshTokens.push(token);

    if (!refreshTokenWellFormed(token)) throw new MatrixError(401, 'M_UNKNOWN_TOKEN', 'invalid refresh token');
    const existing = [...refreshTokens.values()].find((rt) => rt.token === token);
    if (!existing) throw new MatrixError(401, 'M_UNKNOWN_TOKEN', 'refresh token does not exist');

    const next = existing.nextId === null ? undefined : refreshTokens.get(existing.nextId);
    const nextRefreshed = next !== undefined && next.nextId !== null;
    const nextAccessUsed = next !== undefined && [...accessTokens.values()].some((a) => a.refreshTokenId === next.id && a.used);
    if (nextRefreshed || nextAccessUsed) throw new MatrixError(403, 'M_FORBIDDEN', "refresh token isn't valid anymore");

    const t = now();
    if (existing.expiresAt !== null && existing.expiresAt < t) {
      throw new MatrixError(403, 'M_FORBIDDEN', 'The supplied refresh token has expired');
    }
    const accessExpiresAt: number | null = accessTokenLifetimeMs === null ? null : t + accessTokenLifetimeMs;
    // Famedly's extension: the client may ask for a refresh-token lifetime (Synapse's own default: none).
    const asked = body['com.famedly.refresh_token_lifetime_ms'];
    const refreshExpiresAt = typeof asked === 'number' && Number.isFinite(asked) && asked > 0 ? t + asked : null;

    const newRt = issueRefreshToken(existing.userId, existing.deviceId, refreshExpiresAt);
    const newAt = issueAccessToken(existing.userId, existing.deviceId, accessExpiresAt, newRt.id);
    // replace_refresh_token: set the successor, delete the previous successor (a repeated refresh)
    // and the predecessor (only the last two refresh tokens are kept); deletes cascade to access tokens.
    const oldNextId = existing.nextId;
    existing.nextId = newRt.id;
    if (oldNextId !== null) deleteRefreshToken(oldNextId);
    for (const rt of [...refreshTokens.values()]) if (rt.nextId === existing.id) deleteRefreshToken(rt.id);

    const response: Record<string, unknown> = { access_token: newAt, refresh_token: newRt.token };
    if (accessExpiresAt !== null) response.expires_in_ms = accessExpiresAt - t;
    return ok(response);
  };

  const whoami: Handler = (ctx) => {
    const who = oauth ? authenticateMas(ctx) : authenticate(ctx);
    return ok({ user_id: who.userId, device_id: who.deviceId, is_guest: false });
  };

  /** `POST /logout` (the token's device) or `/logout/all` (every device of the user); an expired token will do. */
  function logout(all: boolean): Handler {
    return (ctx) => {
      const row = authenticate(ctx, true);
      deleteDevices(row.userId, all ? null : row.deviceId);
      return ok({});
    };
  }

  // --- Matrix Authentication Service (OAuth mode) ---------------------------------------------

  const issuer = () => `${baseUrl}/`;
  const accountManagementUri = () => `${baseUrl}/account/`;

  const authMetadata: Handler = () =>
    ok({
      issuer: issuer(),
      authorization_endpoint: `${baseUrl}/authorize`,
      token_endpoint: `${baseUrl}/oauth2/token`,
      revocation_endpoint: `${baseUrl}/oauth2/revoke`,
      registration_endpoint: `${baseUrl}/oauth2/registration`,
      device_authorization_endpoint: `${baseUrl}/oauth2/device`,
      account_management_uri: accountManagementUri(),
      account_management_actions_supported: ACCOUNT_ACTIONS,
      grant_types_supported: GRANT_TYPES,
      code_challenge_methods_supported: ['S256'],
      token_endpoint_auth_methods_supported: ['none'],
      authorization_response_iss_parameter_supported: true,
      ...extension?.metadata,
    });

  /** An `application/x-www-form-urlencoded` body; each parameter at most once (RFC 6749 §3.2). */
  function parseForm(ctx: RequestContext): Map<string, string> {
    if (!isForm(ctx.headers)) throw new OAuthError(400, 'invalid_request', 'Expected an application/x-www-form-urlencoded body');
    const form = new Map<string, string>();
    for (const [k, v] of new URLSearchParams(ctx.rawBody)) {
      if (form.has(k)) throw new OAuthError(400, 'invalid_request', `Parameter ${k} was given more than once`);
      form.set(k, v);
    }
    return form;
  }

  /** Public clients authenticate with `client_id` alone. */
  function clientFrom(form: Map<string, string>): RegisteredClient {
    const id = form.get('client_id');
    if (id === undefined || id === '') throw new OAuthError(401, 'invalid_client', 'Missing client_id');
    const client = clients.get(id);
    if (!client) throw new OAuthError(401, 'invalid_client', 'Client not found');
    return client;
  }

  function createMasSession(kind: MasSession['kind'], clientId: string | null, userId: string, deviceId: string, scope: string | null, displayName: string | null): MasSession {
    const session: MasSession = { id: nextMasSessionId++, kind, clientId, userId, deviceId, scope, displayName, active: true };
    masSessions.set(session.id, session);
    return session;
  }

  function endMasSession(id: number): void {
    const session = masSessions.get(id);
    if (!session) return;
    session.active = false;
    for (const at of masAccessTokens.values()) if (at.sessionId === id) at.revoked = true;
    for (const rt of masRefreshTokens.values()) if (rt.sessionId === id) rt.revoked = true;
  }

  function issueMasTokens(session: MasSession, withRefresh: boolean, expiresAt: number | null): { at: MasAccessToken; rt: MasRefreshToken | null } {
    const compatSession = session.kind === 'compat';
    const at: MasAccessToken = { token: makeMasToken(compatSession ? 'mct' : 'mat'), sessionId: session.id, seq: nextSeq++, expiresAt, used: false, revoked: false };
    masAccessTokens.set(at.token, at);
    if (!withRefresh) return { at, rt: null };
    const token = makeMasToken(compatSession ? 'mcr' : 'mar');
    const rt: MasRefreshToken = { token, sessionId: session.id, seq: nextSeq++, accessToken: at.token, next: null, consumed: false, revoked: false, expiresAt: null };
    masRefreshTokens.set(rt.token, rt);
    return { at, rt };
  }

  /** RFC 6749 §5.1. */
  function tokenResponse(session: MasSession): Answer {
    const t = now();
    const { at, rt } = issueMasTokens(session, true, t + oauthAccessLifetimeSec * 1000);
    return {
      status: 200,
      json: { access_token: at.token, token_type: 'Bearer', expires_in: oauthAccessLifetimeSec, refresh_token: rt!.token, scope: session.scope },
      headers: NO_STORE,
    };
  }

  const clientName = (client: RegisteredClient) => (typeof client.metadata.client_name === 'string' ? client.metadata.client_name : null);

  /** The active MAS session a live (unexpired, unrevoked) access token belongs to, or null. */
  function liveMasSession(token: string): MasSession | null {
    const at = masAccessTokens.get(token);
    const session = at === undefined ? undefined : masSessions.get(at.sessionId);
    return at && session?.active && !at.revoked && !expired(at.expiresAt) ? session : null;
  }

  /** Synapse with MAS: every token is introspected; anything not active is the same 401. Marks the token used. */
  function authenticateMas(ctx: RequestContext): MasSession {
    const token = accessTokenFrom(ctx);
    const session = liveMasSession(token);
    if (!session) throw new MatrixError(401, 'M_UNKNOWN_TOKEN', 'Token is not active', { soft_logout: false });
    masAccessTokens.get(token)!.used = true;
    return session;
  }

  /** MAS `oauth2/registration.rs` + its client-registration policy, for the public native clients mxs registers. */
  const registerClient: Handler = (ctx) => {
    let meta: unknown;
    try {
      meta = JSON.parse(ctx.rawBody);
    } catch {
      throw new OAuthError(400, 'invalid_client_metadata', 'The body is not JSON');
    }
    if (!isPlainObject(meta)) throw new OAuthError(400, 'invalid_client_metadata', 'The body must be a JSON object');
    const bad = (d: string) => new OAuthError(400, 'invalid_client_metadata', d);
    const badRedirect = (d: string) => new OAuthError(400, 'invalid_redirect_uri', d);
    const strings = (k: string, dflt: string[]): string[] => {
      const v = meta[k] ?? dflt;
      if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw bad(`${k} must be an array of strings`);
      return v as string[];
    };

    const clientUri = typeof meta.client_uri === 'string' ? parseUrl(meta.client_uri) : null;
    if (!clientUri) throw bad('missing or invalid client_uri');
    if (clientUri.protocol !== 'https:') throw bad('client_uri must use https');
    if (clientUri.username !== '' || clientUri.password !== '') throw bad('client_uri must not contain a user or password');
    if (isLoopbackHost(clientUri.hostname)) throw bad('client_uri must not be localhost');
    if (meta.token_endpoint_auth_method !== 'none') throw bad('token_endpoint_auth_method must be none (public clients only)');
    if (meta.application_type !== 'native') throw bad('application_type must be native');
    const grantTypes = strings('grant_types', ['authorization_code']);
    for (const g of grantTypes) if (!GRANT_TYPES.includes(g)) throw bad(`unsupported grant type ${g}`);
    const responseTypes = strings('response_types', ['code']);
    for (const r of responseTypes) if (r !== 'code') throw bad(`unsupported response type ${r}`);
    const authCode = grantTypes.includes('authorization_code');
    if (responseTypes.includes('code') !== authCode) throw bad('response type code goes with the authorization_code grant type, and only with it');
    const redirectUris = strings('redirect_uris', []);
    if (authCode && redirectUris.length === 0) throw badRedirect('redirect_uris is required for the authorization_code grant type');
    for (const raw of redirectUris) {
      if (!isPortlessLoopback(raw) || raw.includes('#')) {
        throw badRedirect(`redirect URI ${raw} must be http://127.0.0.1/, http://[::1]/ or http://localhost/ without a port or fragment`);
      }
    }
    const clientId = `01${randomLetters(24, ULID_ALPHABET)}`;
    clients.set(clientId, { clientId, metadata: meta, grantTypes, redirectUris });
    const json = { ...meta, client_id: clientId, client_id_issued_at: Math.floor(now() / 1000), grant_types: grantTypes, response_types: responseTypes, redirect_uris: redirectUris };
    return { status: 201, json, headers: NO_STORE };
  };

  /** RFC 8628 §3.1-3.2, as MAS answers. */
  const deviceAuthorization: Handler = (ctx) => {
    const form = parseForm(ctx);
    const client = clientFrom(form);
    if (!client.grantTypes.includes(DEVICE_CODE_GRANT)) throw new OAuthError(400, 'unauthorized_client', 'The client did not register the device code grant');
    const { scope, deviceId } = checkScope(form.get('scope') ?? null, extension?.scopes);
    let userCode: string;
    do userCode = randomLetters(6, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789');
    while ([...deviceGrants.values()].some((g) => g.userCode === userCode));
    const grant: DeviceGrant = {
      deviceCode: randomLetters(32, ALNUM),
      userCode,
      clientId: client.clientId,
      scope,
      deviceId,
      expiresAt: now() + deviceCodeLifetimeSec * 1000,
      state: 'pending',
      approvedAs: null,
      polls: 0,
    };
    deviceGrants.set(grant.deviceCode, grant);
    const json: Record<string, unknown> = {
      device_code: grant.deviceCode,
      user_code: userCode,
      verification_uri: `${baseUrl}/link`,
      expires_in: deviceCodeLifetimeSec,
      interval: deviceIntervalSec,
    };
    return { status: 200, json, headers: NO_STORE };
  };

  /** RFC 6749 §4.1.1-4.1.2 + RFC 7636 + RFC 9207; the "user" answers at once, as `authorizeAs` says. */
  const authorize: Handler = (ctx) => {
    const get = (k: string) => ctx.query.get(k);
    const record: AuthorizationRequest = {
      clientId: get('client_id'),
      redirectUri: get('redirect_uri'),
      scope: get('scope'),
      state: get('state'),
      loginHint: get('login_hint'),
      outcome: 'rejected',
    };
    authorizationRequests.push(record);
    // Errors before the redirect URI is trusted are shown to the user, never redirected (§4.1.2.1).
    const client = clients.get(record.clientId ?? '');
    if (!client) throw new OAuthError(400, 'invalid_client', 'Unknown client_id');
    const redirectUri = record.redirectUri;
    if (redirectUri === null || !client.redirectUris.some((r) => redirectMatches(redirectUri, r))) {
      throw new OAuthError(400, 'invalid_request', 'redirect_uri is missing or not registered for this client');
    }
    const responseMode = get('response_mode') ?? 'query';
    if (responseMode !== 'query') throw new OAuthError(400, 'invalid_request', `Unsupported response_mode ${responseMode}`);

    const redirect = (params: Record<string, string>): Answer => {
      const location = new URL(redirectUri);
      for (const [k, v] of Object.entries(params)) location.searchParams.append(k, v);
      if (record.state !== null) location.searchParams.append('state', record.state);
      location.searchParams.append('iss', issuer());
      return { status: 302, json: {}, headers: { Location: location.toString() } };
    };
    const fail = (error: string, description: string): Answer => {
      record.outcome = error;
      return redirect({ error, error_description: description });
    };

    const responseType = get('response_type');
    if (responseType === null) return fail('invalid_request', 'Missing response_type');
    if (responseType !== 'code') return fail('unsupported_response_type', `Unsupported response_type ${responseType}`);
    if (!client.grantTypes.includes('authorization_code')) return fail('unauthorized_client', 'The client did not register the authorization_code grant');
    let scoped: { scope: string; deviceId: string };
    try {
      scoped = checkScope(record.scope, extension?.scopes);
    } catch (e) {
      if (e instanceof OAuthError) return fail(e.error, e.description);
      throw e;
    }
    const challenge = get('code_challenge');
    if (challenge === null) return fail('invalid_request', 'PKCE is required: code_challenge is missing');
    if (get('code_challenge_method') !== 'S256') return fail('invalid_request', 'code_challenge_method must be S256');
    if (!/^[A-Za-z0-9_-]{43}$/.test(challenge)) return fail('invalid_request', 'code_challenge is not an S256 challenge');
    if (authorizeAs === null) return fail('access_denied', 'The user denied the request');
    if (extension?.mayGrant?.(scoped.scope, authorizeAs) === false) return fail('access_denied', 'The user may not be granted this scope');

    const code = randomLetters(32, ALNUM);
    authCodes.set(code, {
      code,
      clientId: client.clientId,
      redirectUriSent: record.redirectUri,
      scope: scoped.scope,
      deviceId: scoped.deviceId,
      userId: `@${authorizeAs}:${serverName}`,
      codeChallenge: challenge,
      exchangedSessionId: null,
    });
    record.outcome = 'approved';
    return redirect({ code });
  };

  function authorizationCodeGrant(form: Map<string, string>, client: RegisteredClient): Answer {
    const invalidGrant = (d: string) => new OAuthError(400, 'invalid_grant', d);
    const code = form.get('code');
    if (code === undefined) throw new OAuthError(400, 'invalid_request', 'Missing code');
    const grant = authCodes.get(code);
    if (!grant) throw invalidGrant('Unknown authorization code');
    if (grant.exchangedSessionId !== null) {
      // RFC 6749 §4.1.2: a code used twice revokes what it gave.
      endMasSession(grant.exchangedSessionId);
      throw invalidGrant('The authorization code was already used');
    }
    if (grant.clientId !== client.clientId) throw invalidGrant('The authorization code was issued to another client');
    if (grant.redirectUriSent !== null && form.get('redirect_uri') !== grant.redirectUriSent) {
      throw invalidGrant('redirect_uri does not match the authorization request');
    }
    const verifier = form.get('code_verifier');
    if (verifier === undefined) throw invalidGrant('Missing code_verifier');
    if (!/^[A-Za-z0-9._~-]{43,128}$/.test(verifier) || s256(verifier) !== grant.codeChallenge) throw invalidGrant('PKCE verification failed');
    const session = createMasSession('oauth', client.clientId, grant.userId, grant.deviceId, grant.scope, clientName(client));
    grant.exchangedSessionId = session.id;
    return tokenResponse(session);
  }

  /** MAS `oauth2/token.rs` refresh_token_grant: rotation with a grace for a lost response. */
  function refreshTokenGrant(token: string, client: RegisteredClient): Answer {
    const invalidGrant = (d: string) => new OAuthError(400, 'invalid_grant', d);
    const rt = masRefreshTokens.get(token);
    const session = rt === undefined ? undefined : masSessions.get(rt.sessionId);
    if (!rt || !session || session.kind !== 'oauth') throw invalidGrant('Unknown refresh token');
    if (!session.active || rt.revoked) throw invalidGrant('The refresh token was revoked');
    if (expired(rt.expiresAt)) throw invalidGrant('The refresh token has expired');
    if (session.clientId !== client.clientId) throw invalidGrant('The refresh token was issued to another client');
    if (rt.consumed) {
      // A replay is a lost response only while its successor pair is untouched.
      const next = rt.next === null ? undefined : masRefreshTokens.get(rt.next);
      const nextAt = next === undefined ? undefined : masAccessTokens.get(next.accessToken);
      if (!next || next.consumed || next.revoked || !nextAt || nextAt.used) throw invalidGrant('The refresh token was already used');
      next.revoked = true;
      nextAt.revoked = true;
    }
    const answer = tokenResponse(session);
    rt.consumed = true;
    rt.next = (answer.json as { refresh_token: string }).refresh_token;
    const oldAt = masAccessTokens.get(rt.accessToken);
    if (oldAt) oldAt.revoked = true;
    return answer;
  }

  function deviceCodeGrant(form: Map<string, string>, client: RegisteredClient): Answer {
    const code = form.get('device_code');
    if (code === undefined) throw new OAuthError(400, 'invalid_request', 'Missing device_code');
    const grant = deviceGrants.get(code);
    if (!grant) throw new OAuthError(400, 'invalid_grant', 'Unknown device code');
    grant.polls++;
    if (grant.clientId !== client.clientId) throw new OAuthError(400, 'invalid_grant', 'The device code was issued to another client');
    // MAS answers these three with 403, not RFC 8628's 400, and never sends slow_down.
    if (grant.expiresAt < now()) throw new OAuthError(403, 'expired_token', 'The device code has expired');
    if (grant.state === 'exchanged') throw new OAuthError(400, 'invalid_grant', 'The device code was already exchanged');
    if (grant.state === 'pending') throw new OAuthError(403, 'authorization_pending', 'The user has not approved the request yet');
    if (grant.state === 'denied') throw new OAuthError(403, 'access_denied', 'The user denied the request');
    const session = createMasSession('oauth', client.clientId, `@${grant.approvedAs}:${serverName}`, grant.deviceId, grant.scope, clientName(client));
    grant.state = 'exchanged';
    return tokenResponse(session);
  }

  const tokenEndpoint: Handler = (ctx) => {
    const form = parseForm(ctx);
    const grantType = form.get('grant_type');
    if (grantType === undefined) throw new OAuthError(400, 'invalid_request', 'Missing grant_type');
    if (!GRANT_TYPES.includes(grantType)) throw new OAuthError(400, 'unsupported_grant_type', `Unsupported grant_type ${grantType}`);
    const refreshToken = form.get('refresh_token');
    if (grantType === 'refresh_token') {
      if (refreshToken === undefined) throw new OAuthError(400, 'invalid_request', 'Missing refresh_token');
      usedRefreshTokens.push(refreshToken);
    }
    const client = clientFrom(form);
    if (!client.grantTypes.includes(grantType)) throw new OAuthError(400, 'unauthorized_client', `The client did not register the ${grantType} grant`);
    if (grantType === 'authorization_code') return authorizationCodeGrant(form, client);
    if (grantType === 'refresh_token') return refreshTokenGrant(refreshToken!, client);
    return deviceCodeGrant(form, client);
  };

  /** MAS `oauth2/revoke.rs`: only a live token of this client ends its session; anything else is a quiet 200. */
  const revoke: Handler = (ctx) => {
    const form = parseForm(ctx);
    const record: Revocation = { token: form.get('token') ?? null, clientId: form.get('client_id') ?? null, revoked: false };
    revocations.push(record);
    const client = clientFrom(form);
    if (record.token === null) throw new OAuthError(400, 'invalid_request', 'Missing token');
    let sessionId: number | null = null;
    const at = masAccessTokens.get(record.token);
    const rt = masRefreshTokens.get(record.token);
    if (at && !at.revoked && !expired(at.expiresAt)) sessionId = at.sessionId;
    if (rt && !rt.revoked && !rt.consumed) sessionId = rt.sessionId;
    const session = sessionId === null ? undefined : masSessions.get(sessionId);
    if (!session || !session.active || session.kind !== 'oauth') return { status: 200, json: {}, headers: NO_STORE };
    if (session.clientId !== client.clientId) throw new OAuthError(400, 'unauthorized_client', 'The token was issued to another client');
    endMasSession(session.id);
    record.revoked = true;
    return { status: 200, json: {}, headers: NO_STORE };
  };

  /** MAS's compat logout takes compat and OAuth tokens, live ones only; `/logout/all` ends every session of the user. */
  function masLogout(all: boolean): Handler {
    return (ctx) => {
      const session = authenticateMas(ctx);
      for (const s of masSessions.values()) if (s === session || (all && s.userId === session.userId)) endMasSession(s.id);
      return ok({});
    };
  }

  /** Synapse on MAS: `POST /delete_devices` is user-interactive auth with the `m.oauth` stage (spec v1.17). */
  const deleteDevicesRoute: Handler = (ctx) => {
    const body = parseJsonObject(ctx.rawBody);
    const devices = stringList(body.devices);
    if (devices === null) throw new MatrixError(400, 'M_BAD_JSON', 'devices must be a list of strings');
    const { userId } = authenticateMas(ctx);
    const auth = body.auth;
    let sessionId: string | null = null;
    if (isPlainObject(auth) && typeof auth.session === 'string' && uiaSessions.get(auth.session)?.userId === userId) {
      sessionId = auth.session;
      const left = [...masSessions.values()].some((s) => s.active && s.userId === userId && devices.includes(s.deviceId));
      if (!left) {
        uiaSessions.delete(sessionId);
        return ok({});
      }
    }
    if (sessionId === null) {
      sessionId = randomLetters(24);
      uiaSessions.set(sessionId, { userId, devices });
    }
    const url =
      devices.length === 1
        ? `${accountManagementUri()}?action=org.matrix.device_delete&device_id=${encodeURIComponent(devices[0])}`
        : `${accountManagementUri()}?action=org.matrix.devices_list`;
    return { status: 401, json: { flows: [{ stages: ['m.oauth'] }], params: { 'm.oauth': { url } }, session: sessionId } };
  };

  const compatLoginFlows: Handler = () => ok({ flows: [{ type: 'm.login.password' }, { type: 'm.login.sso', oauth_aware_preferred: true }, { type: 'm.login.token' }] });

  /** MAS `compat/login.rs`: Synapse's checks, a compat session; it expires only with refresh_token: true. */
  const compatLogin: Handler = (ctx) => {
    const { body, userId, deviceId } = checkLogin(ctx);
    const displayName = typeof body.initial_device_display_name === 'string' ? body.initial_device_display_name : null;
    const session = createMasSession('compat', null, userId, deviceId, null, displayName);
    const wantsRefresh = body.refresh_token === true;
    const t = now();
    const expiresAt = wantsRefresh ? t + oauthAccessLifetimeSec * 1000 : null;
    const { at, rt } = issueMasTokens(session, wantsRefresh, expiresAt);
    const response: Record<string, unknown> = { user_id: userId, device_id: deviceId, home_server: serverName, access_token: at.token };
    if (rt) {
      response.refresh_token = rt.token;
      response.expires_in_ms = (expiresAt as number) - t;
    }
    return ok(response);
  };

  const client = (versions: string, rest: string) => new RegExp(`^/_matrix/client/(?:${versions})/${rest}$`);
  const routes: Route[] = [
    { pattern: /^\/_matrix\/client\/versions$/, methods: { GET: () => ok({ versions: VERSIONS, unstable_features: {} }) } },
    {
      pattern: /^\/\.well-known\/matrix\/client$/,
      methods: { GET: () => new MatrixError(404, 'M_NOT_FOUND', '.well-known not available').answer() },
    },
    { pattern: client('r0|v3', 'account/whoami'), methods: { GET: whoami } },
  ];
  if (!oauth) {
    routes.push(
      { pattern: client('r0|v3', 'login'), methods: { GET: loginFlows, POST: login } },
      { pattern: client('r0|v3', 'logout'), methods: { POST: logout(false) } },
      { pattern: client('r0|v3', 'logout/all'), methods: { POST: logout(true) } },
    );
    if (refreshPaths.has('v3')) routes.push({ pattern: client('r0|v3', 'refresh'), methods: { POST: refresh } });
    if (refreshPaths.has('unstable')) {
      routes.push({
        pattern: client('unstable/org\\.matrix\\.msc2918|unstable/org\\.matrix\\.msc2918\\.refresh_token', 'refresh'),
        methods: { POST: refresh },
      });
    }
  } else {
    routes.push(
      { pattern: client('v1|unstable/org\\.matrix\\.msc2965', 'auth_metadata'), methods: { GET: authMetadata } },
      { pattern: /^\/\.well-known\/openid-configuration$/, methods: { GET: authMetadata } },
      { pattern: /^\/oauth2\/registration$/, methods: { POST: registerClient } },
      { pattern: /^\/oauth2\/device$/, methods: { POST: deviceAuthorization } },
      { pattern: /^\/authorize$/, methods: { GET: authorize } },
      { pattern: /^\/oauth2\/token$/, methods: { POST: tokenEndpoint } },
      { pattern: /^\/oauth2\/revoke$/, methods: { POST: revoke } },
      { pattern: client('r0|v3', 'logout'), methods: { POST: masLogout(false) } },
      { pattern: client('r0|v3', 'logout/all'), methods: { POST: masLogout(true) } },
      { pattern: client('v3', 'delete_devices'), methods: { POST: deleteDevicesRoute } },
    );
    if (compat) {
      routes.push({ pattern: client('r0|v3', 'login'), methods: { GET: compatLoginFlows, POST: compatLogin } });
    }
  }

  // ===========================================================================================
  // DEVICES BLOCK — device management for `mxs devices` (src/commands/devices/). Kept apart from the
  // rest of the double on purpose: it only adds routes, wraps handlers to record "last seen", and adds
  // the controls in `DevicesControls` (end of file). Rules, both modes unless said (Synapse 1.163's
  // synapse/rest/client/devices.py and handlers/device.py):
  // - A device exists while it has a token: legacy, any access or refresh token row; OAuth mode, an
  //   active MAS session (compat ones included). Logging out or deleting it ends it.
  // - `GET /devices` → `{devices: [{device_id, display_name, last_seen_ip, last_seen_ts, user_id}]}` of
  //   the token's user, sorted by device_id. `GET /devices/{id}` → one of them; unknown (or another
  //   user's) → 404 M_NOT_FOUND.
  // - display_name: the last `PUT /devices/{id}` name, else legacy the login's
  //   initial_device_display_name, OAuth the session's client_name; null when none.
  // - last_seen_ts / last_seen_ip: when a live (unexpired) access token of the device last
  //   authenticated a request, and `127.0.0.1`; null until then (Synapse's user_ips: `/login` itself
  //   does not count). `setDeviceLastSeen(deviceId, ts, ip?)` overrides (ts null: never seen).
  // - `PUT /devices/{id}` `{display_name}` → 200 `{}`; display_name not a string → 400 M_BAD_JSON;
  //   longer than 100 → 400 M_TOO_LARGE; unknown device → 404 M_NOT_FOUND "Not found".
  // - LEGACY `POST /delete_devices` `{devices, auth?}`: user-interactive auth with one flow
  //   `[m.login.password]` (Synapse's default `ui_auth.session_timeout: 0`: every call authenticates).
  //   Without `auth`: 401 `{flows, params: {}, session}`. `auth: {type: m.login.password, identifier:
  //   {type: m.id.user, user}, password, session}`: unknown session → 400 M_UNKNOWN "Unknown session
  //   ID: …"; wrong password (or unknown user) → 401 `{errcode: M_FORBIDDEN, error: "Invalid username or password",
  //   completed: [], flows, params, session}` (same session); another user's password → 403 M_FORBIDDEN
  //   "Invalid auth"; otherwise the devices are deleted (unknown IDs ignored) and the answer is 200 `{}`;
  //   the session stays usable (as Synapse 1.163 does, checked). Every attempt lands in `deviceDeletions`.
  //   (OAuth mode keeps its m.oauth stage, above.)
  const DEVICE_NAME_MAX = 100; // Synapse MAX_DEVICE_DISPLAY_NAME_LEN
  const renamedDevices = new Map<string, string>(); // `${userId}|${deviceId}` -> name set by PUT
  const lastSeen = new Map<string, { ts: number | null; ip: string | null }>();
  const passwordUiaSessions = new Map<string, { userId: string }>();
  const deviceDeletions: DeviceDeletionAttempt[] = [];

  function liveDevices(userId: string): Map<string, string | null> {
    const out = new Map<string, string | null>(); // deviceId -> default display name
    for (const row of [...accessTokens.values(), ...refreshTokens.values()]) {
      if (row.userId === userId && !out.has(row.deviceId)) out.set(row.deviceId, displayNames.get(`${userId}|${row.deviceId}`) ?? null);
    }
    for (const s of masSessions.values()) if (s.active && s.userId === userId && !out.has(s.deviceId)) out.set(s.deviceId, s.displayName);
    return out;
  }

  function deviceJson(userId: string, deviceId: string, defaultName: string | null): Record<string, unknown> {
    const key = `${userId}|${deviceId}`;
    const seen = lastSeen.get(key);
    return {
      device_id: deviceId,
      display_name: renamedDevices.get(key) ?? defaultName,
      last_seen_ip: seen?.ip ?? null,
      last_seen_ts: seen?.ts ?? null,
      user_id: userId,
    };
  }

  function listDevicesOf(userId: string): Record<string, unknown>[] {
    return [...liveDevices(userId)].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([id, name]) => deviceJson(userId, id, name));
  }

  const deviceOwner = (ctx: RequestContext) => (oauth ? authenticateMas(ctx).userId : authenticate(ctx).userId);
  const deviceIdOf = (ctx: RequestContext) => decodeURIComponent(/\/devices\/([^/]+)$/.exec(ctx.pathname)![1]);

  const getDevices: Handler = (ctx) => ok({ devices: listDevicesOf(deviceOwner(ctx)) });

  const getDevice: Handler = (ctx) => {
    const userId = deviceOwner(ctx);
    const deviceId = deviceIdOf(ctx);
    const devices = liveDevices(userId);
    if (!devices.has(deviceId)) throw new MatrixError(404, 'M_NOT_FOUND', 'No device found');
    return ok(deviceJson(userId, deviceId, devices.get(deviceId)!));
  };

  const putDevice: Handler = (ctx) => {
    const userId = deviceOwner(ctx);
    const deviceId = deviceIdOf(ctx);
    const body = parseJsonObject(ctx.rawBody);
    const name = body.display_name;
    if (name !== undefined && name !== null && typeof name !== 'string') throw new MatrixError(400, 'M_BAD_JSON', 'display_name: str type expected');
    if (typeof name === 'string' && name.length > DEVICE_NAME_MAX) {
      throw new MatrixError(400, 'M_TOO_LARGE', `Device display name is too long (max ${DEVICE_NAME_MAX})`);
    }
    if (!liveDevices(userId).has(deviceId)) throw new MatrixError(404, 'M_NOT_FOUND', 'Not found');
    if (typeof name === 'string') renamedDevices.set(`${userId}|${deviceId}`, name);
    return ok({});
  };

  const passwordFlows = () => ({ flows: [{ stages: ['m.login.password'] }], params: {} });

  const legacyDeleteDevices: Handler = (ctx) => {
    const requester = authenticate(ctx);
    const body = parseJsonObject(ctx.rawBody);
    const devices = stringList(body.devices);
    const attempt: DeviceDeletionAttempt = { devices: [], auth: body.auth, outcome: 'challenged' };
    deviceDeletions.push(attempt);
    if (devices === null) {
      attempt.outcome = 'rejected';
      throw new MatrixError(400, 'M_BAD_JSON', 'devices: value is not a valid list of strings');
    }
    attempt.devices = [...devices];
    const auth = body.auth;
    if (!isPlainObject(auth)) {
      const session = randomLetters(24);
      passwordUiaSessions.set(session, { userId: requester.userId });
      return { status: 401, json: { ...passwordFlows(), session } };
    }
    let session = typeof auth.session === 'string' ? auth.session : null;
    if (session !== null && !passwordUiaSessions.has(session)) {
      attempt.outcome = 'rejected';
      throw new MatrixError(400, 'M_UNKNOWN', `Unknown session ID: ${session}`);
    }
    if (session === null) {
      session = randomLetters(24);
      passwordUiaSessions.set(session, { userId: requester.userId });
    }
    const identifier = isPlainObject(auth.identifier) ? auth.identifier : null;
    const who = auth.type === 'm.login.password' && identifier?.type === 'm.id.user' && typeof identifier.user === 'string' ? resolveUser(identifier.user) : null;
    if (who === null || typeof auth.password !== 'string' || users[who] !== auth.password) {
      attempt.outcome = 'wrong_password';
      return { status: 401, json: { ...passwordFlows(), session, completed: [], errcode: 'M_FORBIDDEN', error: 'Invalid username or password' } };
    }
    if (`@${who}:${serverName}` !== requester.userId) {
      attempt.outcome = 'rejected';
      throw new MatrixError(403, 'M_FORBIDDEN', 'Invalid auth');
    }
    for (const deviceId of devices) deleteDevices(requester.userId, deviceId);
    attempt.outcome = 'deleted';
    return ok({});
  };

  /** Adds methods to the route with the same pattern (first match wins in dispatch), else a new route. */
  function addDeviceRoute(pattern: RegExp, methods: Record<string, Handler>): void {
    const existing = routes.find((r) => r.pattern.source === pattern.source);
    if (existing) Object.assign(existing.methods, methods);
    else routes.push({ pattern, methods });
  }
  addDeviceRoute(client('r0|v3', 'devices'), { GET: getDevices });
  addDeviceRoute(client('r0|v3', 'devices/[^/]+'), { GET: getDevice, PUT: putDevice });
  if (!oauth) addDeviceRoute(client('v3', 'delete_devices'), { POST: legacyDeleteDevices });

  /** The device whose live access token authenticates this request, if any (before the handler runs: logout deletes it). */
  function requestingDevice(ctx: RequestContext): { userId: string; deviceId: string } | null {
    const auth = ctx.headers.authorization;
    const token = typeof auth === 'string' && auth.startsWith('Bearer ') ? auth.slice(7) : ctx.query.get('access_token');
    if (!token) return null;
    const row = accessTokens.get(token);
    if (row) return expired(row.expiresAt) ? null : row;
    return liveMasSession(token);
  }
  /** A device that ended (logout, deletion) takes its name and activity with it, as Synapse's row does. */
  function forgetEndedDevices(): void {
    for (const map of [renamedDevices, lastSeen]) {
      for (const key of [...map.keys()]) {
        const bar = key.indexOf('|');
        if (!liveDevices(key.slice(0, bar)).has(key.slice(bar + 1))) map.delete(key);
      }
    }
  }
  for (const route of routes) {
    for (const [method, handler] of Object.entries(route.methods)) {
      route.methods[method] = (ctx) => {
        forgetEndedDevices(); // also those ended by a control (endSession, revokeAll) since the last request
        const device = requestingDevice(ctx);
        if (device) lastSeen.set(`${device.userId}|${device.deviceId}`, { ts: now(), ip: '127.0.0.1' });
        try {
          return handler(ctx);
        } finally {
          forgetEndedDevices();
        }
      };
    }
  }

  const devicesControls: DevicesControls = {
    deviceDeletions,
    setDeviceLastSeen(deviceId, ts, ip = '127.0.0.1') {
      const owners = [...accessTokens.values(), ...refreshTokens.values(), ...[...masSessions.values()].filter((s) => s.active)]
        .filter((r) => r.deviceId === deviceId)
        .map((r) => r.userId);
      if (owners.length === 0) throw new Error(`homeserver double: setDeviceLastSeen: no live device ${JSON.stringify(deviceId)}`);
      for (const userId of new Set(owners)) lastSeen.set(`${userId}|${deviceId}`, ts === null ? { ts: null, ip: null } : { ts, ip });
    },
    listDevices(userId) {
      return listDevicesOf(userId) as unknown as DoubleDevice[];
    },
  };
  // END OF DEVICES BLOCK
  // ===========================================================================================

  const extension = oauth && opts.extend ? opts.extend(core()) : undefined;
  function core(): DoubleCore {
    return {
      serverName,
      masTokenSession: liveMasSession,
      grantMasSession(kind, userId, deviceId, scope, displayName, clientId) {
        const session = createMasSession(kind, clientId ?? null, userId, deviceId, scope, displayName);
        const expiresAt = now() + oauthAccessLifetimeSec * 1000;
        const { at, rt } = issueMasTokens(session, true, expiresAt);
        return { id: session.id, accessToken: at.token, refreshToken: rt!.token, expiresAt };
      },
      endMasSession,
    };
  }

  function dispatch(ctx: RequestContext): Answer {
    const extra = extension?.handle(ctx);
    if (extra) return extra;
    return opts.intercept ? opts.intercept(ctx, () => routeRequest(ctx)) : routeRequest(ctx);
  }

  function routeRequest(ctx: RequestContext): Answer {
    const route = routes.find((r) => r.pattern.test(ctx.pathname));
    if (!route) return new MatrixError(404, 'M_UNRECOGNIZED', 'Unrecognized request').answer();
    const handler = route.methods[ctx.method];
    if (!handler) return new MatrixError(405, 'M_UNRECOGNIZED', 'Unrecognized request').answer();
    try {
      return handler(ctx);
    } catch (e) {
      if (e instanceof MatrixError || e instanceof OAuthError) return e.answer();
      return new MatrixError(500, 'M_UNKNOWN', `Internal server error: ${String(e)}`).answer();
    }
  }

  // --- HTTP plumbing -------------------------------------------------------------------------

  function takeFault(method: string, pathname: string): Fault | undefined {
    const queue = [faults.get(`${method} ${pathname}`), faults.get(`* ${pathname}`)].find((q) => q !== undefined && q.length > 0);
    return queue?.shift();
  }

  function sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        sleepers.delete(timer);
        resolve();
      }, ms);
      timer.unref();
      sleepers.set(timer, resolve);
    });
  }

  function send(res: http.ServerResponse, status: number, body: Buffer, contentType: string, headers: Record<string, string> = {}): void {
    if (res.destroyed || res.headersSent) return;
    res.statusCode = status;
    res.setHeader('Date', new Date(now() + dateSkewMs).toUTCString());
    res.setHeader('Content-Type', contentType);
    res.setHeader('Content-Length', String(body.length));
    for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
    res.end(body);
  }

  /** A fault's own answer: its body (HTML by default) or its JSON (by default a Matrix error for its status). */
  function sendFault(res: http.ServerResponse, fault: Fault): void {
    const status = Math.trunc(fault.status ?? (fault.json !== undefined || fault.body !== undefined ? 200 : 500));
    if (fault.body !== undefined) {
      const body = typeof fault.body === 'string' ? Buffer.from(fault.body, 'utf8') : fault.body;
      return send(res, status, body, fault.contentType ?? 'text/html; charset=utf-8', fault.headers);
    }
    let json = fault.json;
    const headers: Record<string, string> = {};
    if (json === undefined && status === 429) {
      json = { errcode: 'M_LIMIT_EXCEEDED', error: 'Too Many Requests', retry_after_ms: 1000 };
      headers['Retry-After'] = '1';
    }
    json ??= status >= 400 ? { errcode: 'M_UNKNOWN', error: http.STATUS_CODES[status] ?? 'Error' } : {};
    send(res, status, Buffer.from(JSON.stringify(json), 'utf8'), fault.contentType ?? 'application/json', { ...headers, ...fault.headers });
  }

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const rawBody = Buffer.concat(chunks).toString('utf8');
    const method = (req.method ?? 'GET').toUpperCase();
    const target = req.url ?? '/';
    const url = new URL(target, 'http://127.0.0.1');

    const record: RecordedRequest = { method, path: target, headers: { ...req.headers }, body: recordedBody(req.headers, rawBody), at: now() };
    requests.push(record);

    const fault = takeFault(method, url.pathname);
    if (fault) record.fault = fault;

    if (fault?.delayMs !== undefined && fault.delayMs > 0) {
      await sleep(fault.delayMs);
      // The client gave up (or the double was closed) while we waited: nothing reached the "app".
      if (closed || req.socket.destroyed) return;
    }
    if (closed) return;
    if (fault?.reset) {
      req.socket.destroy();
      return;
    }
    if (fault && (fault.status !== undefined || fault.json !== undefined || fault.body !== undefined)) return sendFault(res, fault);

    const answer = dispatch({ method, pathname: url.pathname, query: url.searchParams, headers: req.headers, rawBody });
    if (fault?.commitThenReset) {
      req.socket.destroy();
      return;
    }
    const body = Buffer.from(JSON.stringify(answer.json), 'utf8');
    const headers = { ...answer.headers, ...fault?.headers };
    if (fault?.truncate) send(res, answer.status, body.subarray(0, Math.floor(body.length / 2)), 'application/json', headers);
    else send(res, answer.status, body, fault?.contentType ?? 'application/json', headers);
  }

  const server = http.createServer((req, res) => {
    handle(req, res).catch((e) => {
      send(res, 500, Buffer.from(JSON.stringify({ errcode: 'M_UNKNOWN', error: String(e) })), 'application/json');
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  server.on('clientError', (_err, socket) => socket.destroy());

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  baseUrl = `http://127.0.0.1:${port}`;

  function requireOAuth(what: string): void {
    if (!oauth) throw new Error(`homeserver double: ${what} needs the oauth option`);
  }

  function pendingDeviceGrant(userCode: string, what: string): DeviceGrant {
    requireOAuth(what);
    const grant = [...deviceGrants.values()].find((g) => g.userCode === userCode.toUpperCase());
    if (!grant) throw new Error(`homeserver double: ${what}: no device authorization has user code ${JSON.stringify(userCode)}`);
    if (grant.state !== 'pending' || grant.expiresAt < now()) throw new Error(`homeserver double: ${what}: user code ${userCode} is not pending`);
    return grant;
  }

  const double: HomeserverDouble = {
    url: baseUrl,
    requests,
    usedRefreshTokens,
    issuer: oauth ? issuer() : null,
    authorizationRequests,
    revocations,

    async close() {
      if (closed) return;
      closed = true;
      for (const [timer, resolve] of sleepers) {
        clearTimeout(timer);
        resolve();
      }
      sleepers.clear();
      const done = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      server.closeAllConnections();
      await done;
    },

    count(path: string) {
      return requests.filter((r) => {
        const p = r.path.split('?')[0];
        return p === path || p.endsWith(path);
      }).length;
    },

    inject(route: string, ...newFaults: Fault[]) {
      const m = /^(\*|[A-Za-z]+) (\/\S*)$/.exec(route.trim());
      if (!m) throw new Error(`inject: route must look like 'POST /_matrix/client/v3/refresh', got ${JSON.stringify(route)}`);
      const key = `${m[1].toUpperCase()} ${m[2].split('?')[0]}`;
      const queue = faults.get(key) ?? [];
      queue.push(...newFaults);
      faults.set(key, queue);
    },

    setDateSkewMs(ms: number) {
      dateSkewMs = ms;
    },

    expireAccessTokens() {
      const t = now() - 1;
      for (const at of [...accessTokens.values(), ...masAccessTokens.values()]) at.expiresAt = t;
    },

    expireRefreshTokens() {
      const t = now() - 1;
      for (const rt of [...refreshTokens.values(), ...masRefreshTokens.values()]) rt.expiresAt = t;
    },

    revokeAll() {
      accessTokens.clear();
      refreshTokens.clear();
      displayNames.clear();
      for (const session of masSessions.values()) endMasSession(session.id);
    },

    endSession(deviceId: string) {
      const userIds = new Set([...accessTokens.values(), ...refreshTokens.values()].filter((r) => r.deviceId === deviceId).map((r) => r.userId));
      for (const userId of userIds) deleteDevices(userId, deviceId);
      for (const session of masSessions.values()) if (session.deviceId === deviceId) endMasSession(session.id);
    },

    clients() {
      return [...clients.values()];
    },

    deviceAuthorizations() {
      return [...deviceGrants.values()].map((g) => ({
        userCode: g.userCode,
        deviceCode: g.deviceCode,
        clientId: g.clientId,
        scope: g.scope,
        deviceId: g.deviceId,
        status: g.state !== 'exchanged' && g.expiresAt < now() ? 'expired' : g.state,
        approvedAs: g.approvedAs,
        polls: g.polls,
      }));
    },

    approveDevice(userCode: string, localpart?: string) {
      const grant = pendingDeviceGrant(userCode, 'approveDevice');
      const who = localpart ?? Object.keys(users)[0];
      checkLocalpart(who);
      // MAS shows a user its policy refuses a page that approves nothing: the code stays pending.
      if (extension?.mayGrant?.(grant.scope, who) === false) return;
      grant.state = 'approved';
      grant.approvedAs = who;
    },

    denyDevice(userCode: string) {
      pendingDeviceGrant(userCode, 'denyDevice').state = 'denied';
    },

    expireDeviceCodes() {
      requireOAuth('expireDeviceCodes');
      const t = now() - 1;
      for (const g of deviceGrants.values()) if (g.state !== 'exchanged') g.expiresAt = t;
    },

    sessions() {
      // One entry per live login: the newest access token of each refresh chain (predecessors that
      // Synapse still keeps for a while are left out), plus every non-refreshable access token.
      const out: DoubleSession[] = [];
      for (const at of accessTokens.values()) {
        let refreshToken: string | null = null;
        if (at.refreshTokenId !== null) {
          const rt = refreshTokens.get(at.refreshTokenId);
          if (!rt || rt.nextId !== null) continue;
          refreshToken = rt.token;
        }
        const displayName = displayNames.get(`${at.userId}|${at.deviceId}`) ?? null;
        out.push({ deviceId: at.deviceId, userId: at.userId, accessToken: at.token, refreshToken, expiresAt: at.expiresAt, displayName });
      }
      // MAS sessions: the newest access token and the live refresh token of each active session.
      for (const session of masSessions.values()) {
        if (!session.active) continue;
        const newest = <T extends { sessionId: number; seq: number }>(rows: Iterable<T>, live: (r: T) => boolean) =>
          [...rows].filter((r) => r.sessionId === session.id && live(r)).sort((a, b) => b.seq - a.seq)[0];
        const at = newest(masAccessTokens.values(), (r) => !r.revoked);
        if (!at) continue;
        const rt = newest(masRefreshTokens.values(), (r) => !r.revoked && !r.consumed);
        const { deviceId, userId, displayName, clientId, scope } = session;
        out.push({ deviceId, userId, accessToken: at.token, refreshToken: rt?.token ?? null, expiresAt: at.expiresAt, displayName, clientId, scope });
      }
      return out;
    },

    accessTokenStatus(token: string) {
      const at = accessTokens.get(token);
      if (at) return expired(at.expiresAt) ? 'expired' : 'valid';
      const mat = masAccessTokens.get(token);
      if (!mat || mat.revoked || !masSessions.get(mat.sessionId)?.active) return 'unknown';
      return expired(mat.expiresAt) ? 'expired' : 'valid';
    },
    ...devicesControls, // DEVICES BLOCK
  };
  return double;
}

// =============================================================================================
// DEVICES BLOCK (types) — see the devices block inside startHomeserverDouble for the rules.

/** A device as `GET /devices` answers it. */
export interface DoubleDevice {
  device_id: string;
  display_name: string | null;
  last_seen_ip: string | null;
  last_seen_ts: number | null;
  user_id: string;
}

/** One legacy `POST /delete_devices` request and what became of it. */
export interface DeviceDeletionAttempt {
  devices: string[];
  /** The `auth` object as sent (undefined: none). */
  auth: unknown;
  outcome: 'challenged' | 'wrong_password' | 'rejected' | 'deleted';
}

export interface DevicesControls {
  /** Sets when the device was last seen (ms since epoch; null: never) and from which IP (default 127.0.0.1). Throws for no live device. */
  setDeviceLastSeen(deviceId: string, ts: number | null, ip?: string): void;
  /** `GET /devices` of a user, without a request (so nothing is "seen"). */
  listDevices(userId: string): DoubleDevice[];
  /** Every legacy `POST /delete_devices`, in order. */
  deviceDeletions: DeviceDeletionAttempt[];
}

// Declaration merging: the double's handle carries the devices controls.
export interface HomeserverDouble extends DevicesControls {}
// END OF DEVICES BLOCK (types)
