/**
 * An in-process Matrix homeserver double for tests: plain `node:http` on 127.0.0.1, no dependencies.
 *
 * It follows what Synapse does (see /work/shared/MATRIX-NOTES.md), not only what the spec says:
 * - `POST /login` (password and `m.login.token`), `GET /login`, `GET /versions`, `/.well-known` (404).
 * - Refresh (`/v3/refresh`, `/r0/refresh`, `/v1/refresh`, `/unstable/org.matrix.msc2918/refresh` and
 *   `/unstable/org.matrix.msc2918.refresh_token/refresh`, as enabled by `refreshPaths`) with Synapse's
 *   rotation rules, from `AuthHandler.refresh_token` (synapse/handlers/auth.py) and
 *   `RegistrationWorkerStore.replace_refresh_token` (synapse/storage/databases/main/registration.py):
 *   * refreshing RTn creates RTn+1/ATn+1 and records RTn+1 as RTn's successor;
 *   * refreshing RTn again while it is still valid deletes the earlier successor (and its access
 *     token) and answers 200 again: two racing refreshes both "win", the first winner's tokens die;
 *   * RTn stops working (403 M_FORBIDDEN "refresh token isn't valid anymore") once ATn+1 has been
 *     used on any authenticated request (an expired ATn+1 that is refused does not count);
 *   * refreshing RTn+1 deletes RTn and ATn (Synapse keeps only the last two refresh tokens): RTn then
 *     answers 401 M_UNKNOWN_TOKEN "refresh token does not exist", not 403. So the old access token ATn
 *     keeps working until it expires or RTn+1 is refreshed. Set `revokeOldAccessTokenOnRefresh` to
 *     delete ATn as soon as RTn is refreshed (the spec allows servers to do that).
 *   These rules and the error texts were checked against a real Synapse 1.163.2. (One Synapse quirk is
 *   not copied: its access-token cache keeps a deleted ATn working if it had been used before.)
 * - Authenticated endpoints: `GET /account/whoami`, `POST /logout`, `POST /logout/all` (the last two
 *   accept an expired access token, as Synapse does). `POST /r0/tokenrefresh` answers 403.
 * - Every response has `Date` (skewable) and `Content-Type: application/json`; unknown paths answer
 *   404 M_UNRECOGNIZED, a known path with the wrong method 405 M_UNRECOGNIZED.
 *
 * Faults: `inject('POST /_matrix/client/v3/refresh', fault1, fault2)` queues faults for a route
 * (method + path without query; method `*` matches any method). Each matching request consumes one.
 *
 * IMPORTANT for users: the double runs in the test's own event loop. Spawn the CLI with the async
 * `child_process.spawn` / `execFile` (or `util.promisify(execFile)`), never `spawnSync`/`execFileSync`/
 * `execSync`: a synchronous spawn blocks this process's event loop, so the double could not answer and
 * the CLI would time out. Always `await double.close()` (e.g. in `afterEach`); it destroys open
 * sockets, including ones held by `delayMs` faults, so jest does not hang.
 */
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { randomInt } from 'node:crypto';
import zlib from 'node:zlib';

export interface DoubleOptions {
  /** Lifetime of refreshable access tokens (Synapse `refreshable_access_token_lifetime`). Default 60_000; null = refresh tokens disabled, tokens never expire. */
  accessTokenLifetimeMs?: number | null;
  /** Lifetime of refresh tokens (Synapse `refresh_token_lifetime`). Default null (never expire). */
  refreshTokenLifetimeMs?: number | null;
  /** Lifetime of access tokens issued without a refresh token (Synapse `nonrefreshable_access_token_lifetime`). Default null. */
  nonRefreshableAccessTokenLifetimeMs?: number | null;
  /** Whole session lifetime, across refreshes (Synapse `session_lifetime`). Default null. */
  sessionLifetimeMs?: number | null;
  /** Delete ATn as soon as RTn is refreshed, instead of Synapse's lazier cleanup. Default false. */
  revokeOldAccessTokenOnRefresh?: boolean;
  /** localpart -> password. Default `{alice: 'alice-pw'}`. */
  users?: Record<string, string>;
  /** Default 'localhost'. */
  serverName?: string;
  /** Which refresh endpoints exist. Default ['v3'] ('v3' also enables '/r0/refresh'). */
  refreshPaths?: ('v3' | 'v1' | 'unstable')[];
  /** Offer and accept m.login.password. Default true. */
  passwordLogin?: boolean;
  /** m.login.token value -> localpart; each is single use. */
  loginTokens?: Record<string, string>;
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
  /** The device's initial_device_display_name, if given. */
  displayName: string | null;
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
  usedRefreshTokens: string[];
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

function makeToken(prefix: 'syt' | 'syr', localpart: string): string {
  const b64 = Buffer.from(localpart, 'utf8').toString('base64').replace(/=+$/, '');
  const base = `${prefix}_${b64}_${randomLetters(20)}`;
  return `${base}_${base62(zlib.crc32(base), 6)}`;
}

/** Synapse's `_verify_refresh_token`: shape and checksum only. */
function refreshTokenWellFormed(token: string): boolean {
  const parts = token.split('_');
  if (parts.length !== 4 || parts[0] !== 'syr') return false;
  const base = parts.slice(0, 3).join('_');
  return parts[3] === base62(zlib.crc32(base), 6);
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
  sessionExpiresAt: number | null;
  nextId: number | null;
}

interface Answer {
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

const ok = (json: unknown): Answer => ({ status: 200, json });

type Handler = (ctx: RequestContext) => Answer;

interface RequestContext {
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
  const refreshTokenLifetimeMs = opts.refreshTokenLifetimeMs ?? null;
  const nonRefreshableLifetimeMs = opts.nonRefreshableAccessTokenLifetimeMs ?? null;
  const sessionLifetimeMs = opts.sessionLifetimeMs ?? null;
  const revokeOldAccessTokenOnRefresh = opts.revokeOldAccessTokenOnRefresh ?? false;
  const users = opts.users ?? { alice: 'alice-pw' };
  const serverName = opts.serverName ?? 'localhost';
  const refreshPaths = new Set(opts.refreshPaths ?? ['v3']);
  const passwordLogin = opts.passwordLogin ?? true;
  const loginTokens = new Map(Object.entries(opts.loginTokens ?? {}));

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
  const refreshIdByToken = new Map<string, number>();
  const displayNames = new Map<string, string>(); // `${userId}|${deviceId}` -> name
  let nextRefreshId = 1;

  const now = () => Date.now();

  function deleteRefreshToken(id: number): void {
    const row = refreshTokens.get(id);
    if (!row) return;
    refreshTokens.delete(id);
    refreshIdByToken.delete(row.token);
    // ON DELETE CASCADE to access_tokens.refresh_token_id.
    for (const [token, at] of accessTokens) if (at.refreshTokenId === id) accessTokens.delete(token);
  }

  function deleteDevices(userId: string, deviceId: string | null): void {
    for (const [token, at] of accessTokens) {
      if (at.userId === userId && (deviceId === null || at.deviceId === deviceId)) accessTokens.delete(token);
    }
    for (const [id, rt] of refreshTokens) {
      if (rt.userId === userId && (deviceId === null || rt.deviceId === deviceId)) {
        refreshTokens.delete(id);
        refreshIdByToken.delete(rt.token);
      }
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

  function issueRefreshToken(userId: string, deviceId: string, expiresAt: number | null, sessionExpiresAt: number | null): RefreshTokenRow {
    const token = makeToken('syr', localpartOf(userId));
    const row: RefreshTokenRow = { id: nextRefreshId++, token, userId, deviceId, expiresAt, sessionExpiresAt, nextId: null };
    refreshTokens.set(row.id, row);
    refreshIdByToken.set(token, row.id);
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
    if (!allowExpired && row.expiresAt !== null && row.expiresAt < now()) {
      throw new MatrixError(401, 'M_UNKNOWN_TOKEN', 'Access token has expired', { soft_logout: true });
    }
    row.used = true;
    return row;
  }

  // --- handlers ------------------------------------------------------------------------------

  const loginFlows: Handler = () => {
    const flows: { type: string }[] = [];
    if (passwordLogin) flows.push({ type: 'm.login.password' });
    flows.push({ type: 'm.login.token' });
    return ok({ flows });
  };

  function resolveUser(identifierUser: string): string | null {
    let localpart = identifierUser;
    if (identifierUser.startsWith('@')) {
      const colon = identifierUser.indexOf(':');
      if (colon < 0 || identifierUser.slice(colon + 1) !== serverName) return null;
      localpart = identifierUser.slice(1, colon);
    }
    // Synapse looks users up case-insensitively.
    const match = Object.keys(users).find((u) => u.toLowerCase() === localpart.toLowerCase());
    return match ?? null;
  }

  const login: Handler = (ctx) => {
    const body = parseJsonObject(ctx.rawBody);
    const type = body.type;
    if (typeof type !== 'string') throw new MatrixError(400, 'M_INVALID_PARAM', 'Bad parameter: type');
    let localpart: string;
    if (type === 'm.login.password') {
      if (!passwordLogin) throw new MatrixError(400, 'M_UNKNOWN', 'Password login has been disabled.');
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
    const displayKey = `${userId}|${deviceId}`;
    if (typeof body.initial_device_display_name === 'string' && !displayNames.has(displayKey)) {
      displayNames.set(displayKey, body.initial_device_display_name);
    }

    const t = now();
    const sessionExpiresAt = sessionLifetimeMs === null ? null : t + sessionLifetimeMs;
    const capToSession = (v: number | null) =>
      sessionExpiresAt === null ? v : v === null ? sessionExpiresAt : Math.min(v, sessionExpiresAt);
    const wantsRefresh = body.refresh_token === true && accessTokenLifetimeMs !== null;
    const response: Record<string, unknown> = { user_id: userId, device_id: deviceId, home_server: serverName };
    let expiresAt: number | null;
    if (wantsRefresh) {
      const rt = issueRefreshToken(userId, deviceId, capToSession(refreshTokenLifetimeMs === null ? null : t + refreshTokenLifetimeMs), sessionExpiresAt);
      expiresAt = capToSession(t + (accessTokenLifetimeMs as number));
      response.access_token = issueAccessToken(userId, deviceId, expiresAt, rt.id);
      response.refresh_token = rt.token;
    } else {
      expiresAt = capToSession(nonRefreshableLifetimeMs === null ? null : t + nonRefreshableLifetimeMs);
      response.access_token = issueAccessToken(userId, deviceId, expiresAt, null);
    }
    if (expiresAt !== null) response.expires_in_ms = expiresAt - t;
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
    const id = refreshIdByToken.get(token);
    const existing = id === undefined ? undefined : refreshTokens.get(id);
    if (!existing) throw new MatrixError(401, 'M_UNKNOWN_TOKEN', 'refresh token does not exist');

    const next = existing.nextId === null ? undefined : refreshTokens.get(existing.nextId);
    const nextRefreshed = next !== undefined && next.nextId !== null;
    const nextAccessUsed = next !== undefined && [...accessTokens.values()].some((a) => a.refreshTokenId === next.id && a.used);
    if (nextRefreshed || nextAccessUsed) throw new MatrixError(403, 'M_FORBIDDEN', "refresh token isn't valid anymore");

    const t = now();
    if (existing.expiresAt !== null && existing.expiresAt < t) {
      throw new MatrixError(403, 'M_FORBIDDEN', 'The supplied refresh token has expired');
    }
    let accessExpiresAt: number | null = accessTokenLifetimeMs === null ? null : t + accessTokenLifetimeMs;
    let refreshExpiresAt: number | null = refreshTokenLifetimeMs === null ? null : t + refreshTokenLifetimeMs;
    // Famedly's extension: the client may ask for a shorter refresh-token lifetime.
    const asked = body['com.famedly.refresh_token_lifetime_ms'];
    if (typeof asked === 'number' && Number.isFinite(asked) && asked > 0) {
      refreshExpiresAt = refreshExpiresAt === null ? t + asked : Math.min(refreshExpiresAt, t + asked);
    }
    if (existing.sessionExpiresAt !== null) {
      const s = existing.sessionExpiresAt;
      accessExpiresAt = accessExpiresAt === null ? s : Math.min(accessExpiresAt, s);
      refreshExpiresAt = refreshExpiresAt === null ? s : Math.min(refreshExpiresAt, s);
      if (s < t) throw new MatrixError(403, 'M_FORBIDDEN', 'The session has expired and can no longer be refreshed');
    }

    const newRt = issueRefreshToken(existing.userId, existing.deviceId, refreshExpiresAt, existing.sessionExpiresAt);
    const newAt = issueAccessToken(existing.userId, existing.deviceId, accessExpiresAt, newRt.id);
    // replace_refresh_token: set the successor, delete the previous successor (a repeated refresh)
    // and the predecessor (only the last two refresh tokens are kept); deletes cascade to access tokens.
    const oldNextId = existing.nextId;
    existing.nextId = newRt.id;
    if (oldNextId !== null) deleteRefreshToken(oldNextId);
    for (const rt of [...refreshTokens.values()]) if (rt.nextId === existing.id) deleteRefreshToken(rt.id);
    if (revokeOldAccessTokenOnRefresh) {
      for (const [tok, at] of accessTokens) if (at.refreshTokenId === existing.id) accessTokens.delete(tok);
    }

    const response: Record<string, unknown> = { access_token: newAt, refresh_token: newRt.token };
    if (accessExpiresAt !== null) response.expires_in_ms = accessExpiresAt - t;
    return ok(response);
  };

  const whoami: Handler = (ctx) => {
    const row = authenticate(ctx);
    return ok({ user_id: row.userId, device_id: row.deviceId, is_guest: false });
  };

  const logout: Handler = (ctx) => {
    const row = authenticate(ctx, true);
    deleteDevices(row.userId, row.deviceId);
    return ok({});
  };

  const logoutAll: Handler = (ctx) => {
    const row = authenticate(ctx, true);
    deleteDevices(row.userId, null);
    return ok({});
  };

  const client = (versions: string, rest: string) => new RegExp(`^/_matrix/client/(?:${versions})/${rest}$`);
  const routes: Route[] = [
    { pattern: /^\/_matrix\/client\/versions$/, methods: { GET: () => ok({ versions: VERSIONS, unstable_features: {} }) } },
    {
      pattern: /^\/\.well-known\/matrix\/client$/,
      methods: { GET: () => new MatrixError(404, 'M_NOT_FOUND', '.well-known not available').answer() },
    },
    { pattern: client('r0|v3', 'login'), methods: { GET: loginFlows, POST: login } },
    { pattern: client('r0|v3', 'account/whoami'), methods: { GET: whoami } },
    { pattern: client('r0|v3', 'logout'), methods: { POST: logout } },
    { pattern: client('r0|v3', 'logout/all'), methods: { POST: logoutAll } },
    {
      pattern: client('r0|v3', 'tokenrefresh'),
      methods: { POST: () => new MatrixError(403, 'M_FORBIDDEN', 'tokenrefresh is no longer supported.').answer() },
    },
  ];
  if (refreshPaths.has('v3')) routes.push({ pattern: client('r0|v3', 'refresh'), methods: { POST: refresh } });
  if (refreshPaths.has('v1')) routes.push({ pattern: client('v1', 'refresh'), methods: { POST: refresh } });
  if (refreshPaths.has('unstable')) {
    routes.push({
      pattern: client('unstable/org\\.matrix\\.msc2918|unstable/org\\.matrix\\.msc2918\\.refresh_token', 'refresh'),
      methods: { POST: refresh },
    });
  }

  function dispatch(ctx: RequestContext): Answer {
    const route = routes.find((r) => r.pattern.test(ctx.pathname));
    if (!route) return new MatrixError(404, 'M_UNRECOGNIZED', 'Unrecognized request').answer();
    const handler = route.methods[ctx.method];
    if (!handler) return new MatrixError(405, 'M_UNRECOGNIZED', 'Unrecognized request').answer();
    try {
      return handler(ctx);
    } catch (e) {
      if (e instanceof MatrixError) return e.answer();
      return new MatrixError(500, 'M_UNKNOWN', `Internal server error: ${String(e)}`).answer();
    }
  }

  // --- HTTP plumbing -------------------------------------------------------------------------

  function takeFault(method: string, pathname: string): Fault | undefined {
    for (const key of [`${method} ${pathname}`, `* ${pathname}`]) {
      const queue = faults.get(key);
      if (queue && queue.length > 0) {
        const fault = queue.shift();
        if (queue.length === 0) faults.delete(key);
        return fault;
      }
    }
    return undefined;
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

  function send(res: http.ServerResponse, status: number, body: Buffer, contentType: string, headers: Record<string, string> = {}, contentLength = body.length): void {
    if (res.destroyed || res.headersSent) return;
    res.statusCode = status;
    res.setHeader('Date', new Date(now() + dateSkewMs).toUTCString());
    res.setHeader('Content-Type', contentType);
    res.setHeader('Content-Length', String(contentLength));
    for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
    res.end(body);
  }

  function faultAnswer(fault: Fault): { status: number; body: Buffer; contentType: string; headers: Record<string, string> } {
    const headers: Record<string, string> = {};
    let status = fault.status ?? (fault.json !== undefined || fault.body !== undefined ? 200 : 500);
    let body: Buffer;
    let contentType: string;
    if (fault.body !== undefined) {
      body = typeof fault.body === 'string' ? Buffer.from(fault.body, 'utf8') : fault.body;
      contentType = fault.contentType ?? 'text/html; charset=utf-8';
    } else {
      let json = fault.json;
      if (json === undefined) {
        if (status === 429) {
          json = { errcode: 'M_LIMIT_EXCEEDED', error: 'Too Many Requests', retry_after_ms: 1000 };
          headers['Retry-After'] = '1';
        } else if (status >= 400) {
          json = { errcode: 'M_UNKNOWN', error: http.STATUS_CODES[status] ?? 'Error' };
        } else {
          json = {};
        }
      }
      body = Buffer.from(JSON.stringify(json), 'utf8');
      contentType = fault.contentType ?? 'application/json';
    }
    status = Math.trunc(status);
    return { status, body, contentType, headers: { ...headers, ...(fault.headers ?? {}) } };
  }

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const rawBody = Buffer.concat(chunks).toString('utf8');
    const method = (req.method ?? 'GET').toUpperCase();
    const target = req.url ?? '/';
    const url = new URL(target, 'http://127.0.0.1');

    let parsedBody: unknown = undefined;
    if (rawBody !== '') {
      try {
        parsedBody = JSON.parse(rawBody);
      } catch {
        parsedBody = rawBody;
      }
    }
    const record: RecordedRequest = { method, path: target, headers: { ...req.headers }, body: parsedBody, at: now() };
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
    if (fault && (fault.status !== undefined || fault.json !== undefined || fault.body !== undefined)) {
      const a = faultAnswer(fault);
      send(res, a.status, a.body, a.contentType, a.headers);
      return;
    }

    const answer = dispatch({ method, pathname: url.pathname, query: url.searchParams, headers: req.headers, rawBody });
    if (fault?.commitThenReset) {
      req.socket.destroy();
      return;
    }
    const body = Buffer.from(JSON.stringify(answer.json), 'utf8');
    const headers = { ...(answer.headers ?? {}), ...(fault?.headers ?? {}) };
    if (fault?.truncate) {
      const half = body.subarray(0, Math.floor(body.length / 2));
      send(res, answer.status, half, 'application/json', headers);
      return;
    }
    send(res, answer.status, body, fault?.contentType ?? 'application/json', headers);
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

  const double: HomeserverDouble = {
    url: `http://127.0.0.1:${port}`,
    requests,
    usedRefreshTokens,

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
      for (const at of accessTokens.values()) at.expiresAt = t;
    },

    expireRefreshTokens() {
      const t = now() - 1;
      for (const rt of refreshTokens.values()) rt.expiresAt = t;
    },

    revokeAll() {
      accessTokens.clear();
      refreshTokens.clear();
      refreshIdByToken.clear();
      displayNames.clear();
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
        out.push({
          deviceId: at.deviceId,
          userId: at.userId,
          accessToken: at.token,
          refreshToken,
          expiresAt: at.expiresAt,
          displayName: displayNames.get(`${at.userId}|${at.deviceId}`) ?? null,
        });
      }
      return out;
    },

    accessTokenStatus(token: string) {
      const at = accessTokens.get(token);
      if (!at) return 'unknown';
      return at.expiresAt !== null && at.expiresAt < now() ? 'expired' : 'valid';
    },
  };
  return double;
}
