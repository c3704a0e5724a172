import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { isIP } from 'node:net';

// What the proxy lets through, as pure functions over what node:http parsed: the request target,
// the credentials a request carries, which paths the proxy answers itself or refuses, and which
// headers are hop-by-hop (RFC 9110 §7.6.1). No I/O here: test/unit/proxy.test.ts pins each rule.

/** A request target the proxy accepts: origin-form, split, with the path as the homeserver will see it. */
export interface Target {
  /** The path exactly as the client sent it (percent-encoding untouched). */
  path: string;
  /** The raw query without `?`, with any `access_token` parameter removed ('' when none is left). */
  query: string;
  /** `access_token` query parameters the client sent (decoded), to be checked like a Bearer token. */
  queryTokens: string[];
  /**
   * The path as a lenient server or a reverse proxy in front of one could read it: percent-decoded,
   * `\` as `/`, repeated slashes merged, no trailing slash, lower case. Used only to decide what the
   * proxy refuses, so that `/_matrix//client/v3/LOGI%4E/` is refused like `/_matrix/client/v3/login`.
   */
  canonical: string;
}

export type TargetProblem = { reason: string };

/**
 * Accepts origin-form targets only (RFC 9112 §3.2.1): absolute-form (`GET http://host/…`, what a
 * forward proxy takes), authority-form and asterisk-form are refused, so the proxy never becomes a
 * way to reach another host. Dot segments are refused in any spelling (`..`, `%2e%2e`, `.%2E`, with
 * `\`): servers and reverse proxies normalise them differently, and the proxy must judge the path
 * the homeserver acts on.
 */
export function parseTarget(raw: string): Target | TargetProblem {
  if (!raw.startsWith('/')) return { reason: 'the request target must be a path (origin-form), not a URL' };
  if (/[\x00-\x20\x7f#]/.test(raw)) return { reason: 'the request target contains spaces, control characters or a fragment' };
  const q = raw.indexOf('?');
  const path = q < 0 ? raw : raw.slice(0, q);
  const rawQuery = q < 0 ? '' : raw.slice(q + 1);
  let decoded: string;
  try {
    decoded = decodeURIComponent(path);
  } catch {
    return { reason: 'the path has malformed percent-encoding' };
  }
  if (/[\x00-\x1f\x7f]/.test(decoded)) return { reason: 'the path encodes control characters' };
  const segments = decoded.replace(/\\/g, '/').split('/');
  if (segments.some((s) => s === '.' || s === '..')) return { reason: 'the path contains "." or ".." segments' };
  const canonical = ('/' + segments.filter((s) => s !== '').join('/')).toLowerCase();
  const { query, tokens } = splitAccessToken(rawQuery);
  if (tokens === null) return { reason: 'the access_token query parameter has malformed percent-encoding' };
  return { path, query, queryTokens: tokens, canonical };
}

export function isTargetProblem(t: Target | TargetProblem): t is TargetProblem {
  return 'reason' in t;
}

/**
 * Takes `access_token` parameters out of a raw query, leaving every other parameter byte for byte as
 * sent (re-serialising with URLSearchParams would re-encode them). The Matrix spec deprecated the
 * parameter (v1.11) but old clients still send it: it is a credential like `Authorization`. Synapse
 * (Twisted) splits a query on `;` as well as `&`, so both separate parameters here; a kept parameter
 * keeps the separator that stood before it.
 */
function splitAccessToken(rawQuery: string): { query: string; tokens: string[] | null } {
  if (rawQuery === '') return { query: '', tokens: [] };
  let query = '';
  let kept = false;
  const tokens: string[] = [];
  // With the separators captured: parts at even indexes, the separator before part i at i - 1.
  const pieces = rawQuery.split(/([&;])/);
  for (let i = 0; i < pieces.length; i += 2) {
    const separator = i === 0 ? '' : pieces[i - 1]!;
    const part = pieces[i]!;
    const eq = part.indexOf('=');
    const rawKey = eq < 0 ? part : part.slice(0, eq);
    let key: string;
    try {
      key = decodeURIComponent(rawKey.replace(/\+/g, ' '));
    } catch {
      key = rawKey; // not ours to judge: passed on as sent
    }
    if (key !== 'access_token') {
      query += kept ? separator + part : part;
      kept = true;
      continue;
    }
    try {
      tokens.push(decodeURIComponent((eq < 0 ? '' : part.slice(eq + 1)).replace(/\+/g, ' ')));
    } catch {
      return { query: '', tokens: null };
    }
  }
  return { query, tokens };
}

// ---------------------------------------------------------------------------------------------
// Host

/**
 * Which `Host` headers the proxy answers, against DNS rebinding: a web page whose name the attacker
 * rebinds to 127.0.0.1 reaches the proxy with that name as its Host. Accepted: the address listened on
 * with its port, and `localhost` with the port; on a wildcard address (`--insecure` on 0.0.0.0 or ::),
 * any IP literal with the port, since an IP literal cannot be rebound. On a Unix socket, any Host: no
 * browser can reach a socket, and clients send what they like there (curl `localhost`, others the
 * encoded path). Before the proxy knows its URL, nothing.
 */
export function hostGuard(publicUrl: string): (host: string | undefined) => boolean {
  if (publicUrl.startsWith('http+unix:')) return () => true;
  if (publicUrl === '') return () => false;
  const own = hostAndPort(new URL(publicUrl).host);
  if (!own) return () => false;
  const wildcard = own.hostname === '0.0.0.0' || own.hostname === '[::]';
  return (host) => {
    const h = host === undefined ? null : hostAndPort(host);
    if (!h || h.port !== own.port) return false;
    return h.hostname === own.hostname || h.hostname === 'localhost' || (wildcard && h.ip);
  };
}

/** A Host header's name (as WHATWG URL normalises it: lower case, IPv6 shortest, `[::1]`) and port (80 when absent). */
function hostAndPort(host: string): { hostname: string; port: number; ip: boolean } | null {
  const m = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(\d{1,5}))?$/.exec(host);
  if (!m) return null;
  let hostname: string;
  try {
    hostname = new URL(`http://${m[1]}/`).hostname;
  } catch {
    return null;
  }
  return { hostname, port: m[2] === undefined ? 80 : Number(m[2]), ip: isIP(hostname.replace(/^\[|\]$/g, '')) !== 0 };
}

// ---------------------------------------------------------------------------------------------
// Credentials

export type Credential =
  /** No Authorization header and no access_token parameter: forwarded without a token. */
  | { kind: 'none' }
  /** The proxy token, everywhere a token was given. */
  | { kind: 'proxy' }
  /** Anything else: answered 401 and never forwarded (the real access token included). */
  | { kind: 'other' };

/** The proxy token, held as a digest: comparisons hash the candidate too, so they take equal time whatever its length. */
export class ProxyToken {
  private readonly digest: Buffer;

  constructor(token: string) {
    this.digest = sha256(token);
  }

  matches(candidate: string): boolean {
    // timingSafeEqual needs equal lengths: comparing digests gives that without leaking the token's length.
    return timingSafeEqual(sha256(candidate), this.digest);
  }

  /**
   * What a request carries. Every Authorization header (node keeps only the first one in
   * `req.headers`, so the distinct list is read) and every access_token parameter must be the proxy
   * token; a scheme other than Bearer is "another token".
   */
  credential(headers: IncomingHttpHeaders, headersDistinct: Record<string, string[] | undefined>, queryTokens: string[]): Credential {
    const authorization = headersDistinct.authorization ?? (headers.authorization === undefined ? [] : [headers.authorization]);
    const given = [...authorization.map(bearerOf), ...queryTokens];
    if (given.length === 0) return { kind: 'none' };
    // Check every one (no early exit), so the answer takes as long whichever is wrong.
    let all = true;
    for (const t of given) all = (t !== null && this.matches(t)) && all;
    return all ? { kind: 'proxy' } : { kind: 'other' };
  }
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

/** `Bearer TOKEN` (scheme case-insensitive, RFC 9110 §11.1); null for any other shape. */
function bearerOf(value: string): string | null {
  const m = /^Bearer +([^\s]+) *$/i.exec(value);
  return m ? m[1]! : null;
}

// ---------------------------------------------------------------------------------------------
// What the proxy answers itself

export type Route =
  | { kind: 'well-known' }
  | { kind: 'health' }
  /** Under /_mxs/ but not a known endpoint: 404, never forwarded. */
  | { kind: 'mxs-unknown' }
  /** The session's own endpoints: the proxy owns the session (403 M_FORBIDDEN). */
  | { kind: 'session-endpoint' }
  /** TRACE/TRACK echo the request (with the real Authorization header) back to the client. */
  | { kind: 'method-refused' }
  | { kind: 'forward' };

/**
 * Client-server API endpoints that create, end or refresh sessions, under every version and
 * unstable prefix (`r0`, `v1`, `v3`, `api/v1`, `unstable`, `unstable/org.matrix.msc2918`,
 * `unstable/org.matrix.msc2918.refresh_token`…): login (and what hangs below it, e.g. MSC3882's
 * `login/get_token`, which would mint a second session), logout, logout/all, refresh and r0's
 * `tokenrefresh`. `GET /login` (the list of flows) stays open: it is public and clients read it.
 */
const SESSION_ENDPOINT = /^\/_matrix\/client\/(?:[^/]+\/){1,2}(?:(login)(?:\/.*)?|logout(?:\/all)?|refresh|tokenrefresh)$/;

/** Synapse's admin API logging in as another user (`POST /_synapse/admin/v1/users/{userId}/login`): it mints a session. */
const ADMIN_LOGIN_AS = /^\/_synapse\/admin\/[^/]+\/users\/.+\/login$/;

export interface RouteContext {
  /** Canonical paths (see Target.canonical) of the session's OAuth endpoints on the homeserver's own origin. */
  oauthPaths: Set<string>;
}

export function route(method: string, canonical: string, ctx: RouteContext): Route {
  if (method === 'TRACE' || method === 'TRACK') return { kind: 'method-refused' };
  if (canonical === '/.well-known/matrix/client') return method === 'GET' || method === 'HEAD' ? { kind: 'well-known' } : { kind: 'forward' };
  if (canonical === '/_mxs' || canonical.startsWith('/_mxs/')) return canonical === '/_mxs/health' && (method === 'GET' || method === 'HEAD') ? { kind: 'health' } : { kind: 'mxs-unknown' };
  const m = SESSION_ENDPOINT.exec(canonical);
  if (m) return m[1] === 'login' && (method === 'GET' || method === 'HEAD') && canonical.endsWith('/login') ? { kind: 'forward' } : { kind: 'session-endpoint' };
  if (ADMIN_LOGIN_AS.test(canonical)) return { kind: 'session-endpoint' };
  // OAuth 2.0 endpoints served from the homeserver's own origin: the Matrix Authentication Service
  // mounts them under /oauth2/ (and the session's own token/revocation endpoints wherever they are).
  if (canonical === '/oauth2' || canonical.startsWith('/oauth2/') || ctx.oauthPaths.has(canonical)) return { kind: 'session-endpoint' };
  return { kind: 'forward' };
}

/** The canonical form of a URL's path, for RouteContext.oauthPaths. */
export function canonicalOf(path: string): string | null {
  const t = parseTarget(path);
  return isTargetProblem(t) ? null : t.canonical;
}

// ---------------------------------------------------------------------------------------------
// Headers

/** Hop-by-hop headers (RFC 9110 §7.6.1), plus those the proxy sets itself on the way up. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'http2-settings']);
const SET_BY_PROXY_UP = new Set(['host', 'authorization', 'content-length', 'expect']);

function connectionNamed(values: string[] | undefined): Set<string> {
  const named = new Set<string>();
  for (const v of values ?? []) for (const t of v.split(',')) if (t.trim() !== '') named.add(t.trim().toLowerCase());
  return named;
}

const isProxyHeader = (name: string) => name.startsWith('proxy-');

/**
 * The client's headers as they go to the homeserver: from the raw list (duplicates and order kept),
 * without hop-by-hop ones, those the Connection header names, Proxy-*, Host (undici sets the
 * homeserver's), Authorization (the proxy sets the session's), Content-Length (set from the body
 * actually sent) and Expect (undici does not do 100-continue; node:http already answered it).
 */
export function upstreamHeaders(rawHeaders: string[]): string[] {
  const named = connectionNamed(valuesOf(rawHeaders, 'connection'));
  const out: string[] = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!.toLowerCase();
    if (HOP_BY_HOP.has(name) || SET_BY_PROXY_UP.has(name) || isProxyHeader(name) || named.has(name)) continue;
    out.push(rawHeaders[i]!, rawHeaders[i + 1]!);
  }
  return out;
}

/** The homeserver's response headers as they go to the client: the same hop-by-hop rules (Content-Length stays). */
export function downstreamHeaders(headers: Record<string, string | string[] | undefined>): Record<string, string | string[]> {
  const conn = headers.connection;
  const named = connectionNamed(conn === undefined ? undefined : Array.isArray(conn) ? conn : [conn]);
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower) || isProxyHeader(lower) || named.has(lower)) continue;
    out[lower] = value;
  }
  return out;
}

function valuesOf(rawHeaders: string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) if (rawHeaders[i]!.toLowerCase() === name) out.push(rawHeaders[i + 1]!);
  return out;
}

/**
 * How long the homeserver may take to start answering: --timeout, plus the long-poll the client
 * asked for (`/sync?timeout=30000`, `/events?timeout=…`), so a 30 s /sync is not cut at 30 s.
 */
export function headersTimeoutFor(query: string, timeoutMs: number): number {
  const m = /(?:^|[&;])timeout=(\d{1,9})(?:[&;]|$)/.exec(query);
  const longPoll = m ? Math.min(Number(m[1]), 3_600_000) : 0;
  return timeoutMs + longPoll;
}
