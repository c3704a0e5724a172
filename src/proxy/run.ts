import { randomBytes } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';
import type { Dispatcher } from 'undici';
import { undiciCore } from '../http/undici.js';
import { asMxsError, loginHint, MxsError, usageError } from '../errors.js';
import type { Deps } from '../services/deps.js';
import { RefreshUnavailable, SessionEnded, SessionKeeper } from '../services/keeper.js';
import { loadSession, refreshWhenExpired } from '../services/session.js';
import { writeFileAtomic } from '../store/atomic.js';
import { listenOn, removeSocket, urlOf, type ListenSpec } from './listen.js';
import { canonicalOf, ProxyToken } from './rules.js';
import { ProxyServer, type RequestLogEntry } from './server.js';

// `mxs proxy`: a local reverse proxy that lets unmodified clients and bots use the session. They
// get a stand-in token (the proxy token); every request carrying it goes to the homeserver with the
// session's current access token, which the session keeper refreshes on demand, ahead of expiry.

/** Like `token` and `api`: refresh when less than 60 s is left, capped at half the token's lifetime. */
const MIN_VALID_MS = 60_000;

export interface ProxyRequest {
  profile: string;
  listen: ListenSpec;
  proxyToken: string;
  /** Where to write the proxy token (0600), or null. */
  tokenFile: string | null;
  /** How long in-flight requests may take to finish after a stop signal. */
  drainMs: number;
  /** The homeserver connection pool; by default one undici Pool for the session's origin. */
  upstream?: Dispatcher;
}

/** The `--json` start line (contract): no token in it. */
export interface ProxyStartInfo {
  profile: string;
  url: string;
  userId: string | null;
  deviceId: string | null;
  tokenFile: string | null;
}

export interface ProxyHooks {
  onStart(info: ProxyStartInfo & { homeserver: string; expiresAt: string | null }): void;
  /** One call per finished request (the command prints the log line unless --quiet). */
  onRequest?(entry: RequestLogEntry): void;
  /** Subscribes to stop signals (SIGINT, SIGTERM); returns the unsubscribe. A second signal cuts the drain short. */
  onStopSignal(stop: (signal: string) => void): () => void;
  notice(message: string): void;
}

export interface ProxyResult {
  signal: string;
  /** In-flight requests still running when the drain time was up, and cut. */
  cut: number;
  refreshes: number;
}

/** A random proxy token: 256 bits, URL- and header-safe. */
export function newProxyToken(): string {
  return `mxp_${randomBytes(32).toString('base64url')}`;
}

/** MXS_PROXY_TOKEN: it goes in an `Authorization: Bearer` header, and a short one would be guessable. */
export function checkProxyToken(token: string): string {
  if (!/^[\x21-\x7e]+$/.test(token)) throw usageError('MXS_PROXY_TOKEN must be printable ASCII without spaces.', 'Generate one, e.g.: openssl rand -hex 32');
  if (token.length < 16) throw usageError('MXS_PROXY_TOKEN is too short: it must be at least 16 characters.', 'Generate one, e.g.: openssl rand -hex 32');
  return token;
}

/**
 * Runs the proxy until a stop signal (resolves once in-flight requests finished or were cut at
 * `drainMs`) or until the session ends (rejects with that auth error, exit 4, after the same drain).
 */
export async function runProxy(req: ProxyRequest, deps: Deps, hooks: ProxyHooks): Promise<ProxyResult> {
  const session = await loadSession(req.profile, deps);
  if (session.secret.accessToken === req.proxyToken) throw usageError('MXS_PROXY_TOKEN is the session\'s own access token.', 'Give the proxy a token of its own, e.g.: openssl rand -hex 32');
  const tokens = new SessionKeeper(deps, { profile: req.profile, holder: 'proxy', minValidMs: MIN_VALID_MS, first: session, notice: hooks.notice });
  try {
    // Expired already: find out now whether the session can go on (exit 4 before listening); one that
    // cannot be refreshed for now (the keeper says so) starts anyway, and requests retry.
    if (refreshWhenExpired(session.secret, deps.now())) await tokens.current();
  } catch (err) {
    if (err instanceof SessionEnded) throw endedError(err.reason, req.profile, session.record.homeserver);
    if (!(err instanceof RefreshUnavailable)) throw err;
  }
  const { record } = tokens;
  const upstream = req.upstream ?? (await homeserverPool(record.homeserver, deps.http.timeoutMs));
  const server = new ProxyServer({
    homeserver: record.homeserver,
    proxyToken: new ProxyToken(req.proxyToken),
    tokens,
    upstream,
    timeoutMs: deps.http.timeoutMs,
    routes: { oauthPaths: oauthPathsOf(record) },
    now: deps.now,
    log: (entry) => hooks.onRequest?.(entry),
  });

  let stopSignal: (signal: string) => void = () => {};
  const stopped = new Promise<string>((resolve) => (stopSignal = resolve));
  let cutNow: () => void = () => {};
  const unsubscribe = hooks.onStopSignal((signal) => {
    stopSignal(signal);
    if (draining) cutNow();
  });
  let draining = false;
  let tokenFileWritten = false;
  const ended = new Promise<MxsError>((resolve) => tokens.onEnd(resolve));
  try {
    const port = await listenOn(server.server, req.listen);
    const url = urlOf(req.listen, port);
    server.setPublicUrl(url);
    if (req.tokenFile !== null) {
      await writeTokenFile(req.tokenFile, req.proxyToken);
      tokenFileWritten = true;
    }
    hooks.onStart({ profile: req.profile, url, userId: record.userId, deviceId: record.deviceId, tokenFile: req.tokenFile, homeserver: record.homeserver, expiresAt: tokens.health().expiresAt });

    const outcome = await Promise.race([stopped.then((signal) => ({ signal })), ended.then((reason) => ({ reason }))]);
    draining = true;
    const cutEarly = new Promise<void>((resolve) => (cutNow = resolve));
    if ('reason' in outcome) hooks.notice(`the session has ended; answering 401 and stopping. ${outcome.reason.message}`);
    const cut = await server.drain(req.drainMs, cutEarly);
    if ('reason' in outcome) throw endedError(outcome.reason, record.profile, record.homeserver);
    return { signal: outcome.signal, cut, refreshes: tokens.refreshes };
  } finally {
    unsubscribe();
    if (server.server.listening) await server.drain(0);
    await tokens.settled();
    if (!req.upstream) await upstream.destroy().catch(() => {});
    if (req.listen.kind === 'socket') await removeSocket(req.listen.path);
    if (tokenFileWritten && req.tokenFile !== null) await removeTokenFile(req.tokenFile, req.proxyToken);
  }
}

function endedError(reason: MxsError, profile: string, homeserver: string): MxsError {
  return reason.with({ kind: 'auth', hint: reason.hint ?? loginHint(profile, homeserver) });
}

/** One undici Pool for the homeserver's origin: kept-alive connections, as many as requests in flight. */
async function homeserverPool(homeserver: string, timeoutMs: number): Promise<Dispatcher> {
  const { Pool } = undiciCore();
  return new Pool(new URL(homeserver).origin, { connect: { timeout: timeoutMs }, keepAliveTimeout: 30_000, keepAliveMaxTimeout: 600_000 });
}

/** The session's own OAuth endpoints, when they are served from the homeserver's origin (RouteContext). */
function oauthPathsOf(record: { homeserver: string; auth: { type: string } & Partial<Record<'tokenEndpoint' | 'revocationEndpoint', string>> }): Set<string> {
  const paths = new Set<string>();
  if (record.auth.type !== 'oauth') return paths;
  const origin = new URL(record.homeserver).origin;
  for (const endpoint of [record.auth.tokenEndpoint, record.auth.revocationEndpoint]) {
    if (!endpoint) continue;
    const u = new URL(endpoint);
    const canonical = u.origin === origin ? canonicalOf(u.pathname) : null;
    if (canonical) paths.add(canonical);
  }
  return paths;
}

/**
 * The token file: 0600 from creation, replaced atomically, so a bot never reads half a token. Missing
 * directories are created 0700; an existing one is the user's and is left as it is.
 */
async function writeTokenFile(path: string, token: string): Promise<void> {
  try {
    await writeFileAtomic(path, token);
  } catch (err) {
    const e = asMxsError(err);
    throw e.with({ message: `Cannot write the --token-file ${path}: ${e.message.replace(/[.\s]+$/, '')}.`, hint: 'Give a path in a directory you can write.' });
  }
}

/** At exit the proxy token is dead: remove the file, unless something else has been written there since. */
async function removeTokenFile(path: string, token: string): Promise<void> {
  const content = await readFile(path, 'utf8').catch(() => null);
  if (content === token) await rm(path, { force: true }).catch(() => {});
}

