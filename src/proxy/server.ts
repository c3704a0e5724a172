import { EventEmitter } from 'node:events';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Dispatcher } from 'undici';
import type { MxsError } from '../errors.js';
import { errorCode } from '../http/transport.js';
import { RefreshUnavailable, SessionEnded, type SessionKeeper } from '../services/keeper.js';
import { refusesToken, sendWithReplay, type Sent } from '../services/replay.js';
import { downstreamHeaders, headersTimeoutFor, hostGuard, isTargetProblem, parseTarget, route, upstreamHeaders, type ProxyToken, type RouteContext, type Target } from './rules.js';

// The proxy's front: node:http parses what clients send (no hand-written HTTP parsing, and its
// strict parser refuses the request-smuggling shapes: conflicting Content-Length/Transfer-Encoding,
// duplicate Content-Length, obsolete line folding…); undici's pool for the homeserver's origin
// carries each request on, bodies streaming both ways.

/** Request bodies up to this size are kept, so a request can be replayed once after a refresh (contract). */
export const REPLAY_BODY_BYTES = 1024 * 1024;
/** Answers up to this size (by Content-Length) are read whole and sent in one write; larger ones stream. */
const SMALL_BODY_BYTES = 64 * 1024;
/** The most of a 401 answer read to see whether the token died. */
const ERROR_BODY_BYTES = 64 * 1024;
/** Longer than the idle timeout of common client pools (aiohttp 15 s, undici 4 s, Node's agent 5 s): a
 * server that closes an idle connection first races the client's next request on it. */
const KEEP_ALIVE_MS = 75_000;

export interface RequestLogEntry {
  /** When the request arrived (ms since epoch). */
  at: number;
  method: string;
  /** The path as sent, without the query. */
  path: string;
  /** The status sent, or 0 when none was (the client left, or the connection was cut). */
  status: number;
  ms: number;
}

export interface ProxyServerOptions {
  /** The session's homeserver base URL (its path, if any, prefixes every forwarded path). */
  homeserver: string;
  proxyToken: ProxyToken;
  tokens: SessionKeeper;
  /** One pool for the homeserver's origin. */
  upstream: Dispatcher;
  /** --timeout: connect, and each silence of the homeserver (plus the long-poll a client asks for). */
  timeoutMs: number;
  routes: RouteContext;
  now: () => number;
  log: (entry: RequestLogEntry) => void;
}

/**
 * Cancels the homeserver request when its client leaves. undici takes an EventEmitter as a signal; it
 * costs far less per request than an AbortController (whose abort() also builds a DOMException).
 */
class Cancel extends EventEmitter {
  aborted = false;
  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    this.emit('abort');
  }
}

interface InFlight {
  res: ServerResponse;
  abort: Cancel;
}

type Body = { kind: 'none' } | { kind: 'buffer'; data: Buffer } | { kind: 'stream'; stream: Readable; length: string | undefined };

/** A request as it goes to the homeserver, but for the token. */
interface Upstream {
  path: string;
  method: string;
  headers: string[];
  body: Body;
  headersTimeout: number;
}

/** The homeserver's answer, to relay: its body (a 401's partly read already), and the token it was sent with. */
interface Answer {
  response: Dispatcher.ResponseData;
  body: Readable;
  token: string | undefined;
}

export class ProxyServer {
  readonly server: http.Server;
  private readonly inFlight = new Set<InFlight>();
  private readonly basePath: string;
  private draining = false;
  private publicUrl = '';
  private hostAllowed = hostGuard('');
  private readonly sockets = new Set<Socket>();

  constructor(private readonly opts: ProxyServerOptions) {
    this.basePath = new URL(opts.homeserver).pathname.replace(/\/+$/, '');
    this.server = http.createServer({ requestTimeout: 0, headersTimeout: 60_000 }, (req, res) => {
      void this.handle(req, res);
    });
    this.server.keepAliveTimeout = KEEP_ALIVE_MS;
    this.server.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    // Malformed requests (smuggling shapes included) never reach handle(): answer 400 and close.
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
      if (socket.writable && !(err.code === 'ECONNRESET' || err.code === 'HPE_INVALID_EOF_STATE')) {
        const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
        socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      }
      socket.destroy();
    });
    // CONNECT tunnels and protocol upgrades are not the Matrix API: refused, nothing forwarded.
    const refuse = (_req: IncomingMessage, socket: Socket) => {
      socket.end('HTTP/1.1 501 Not Implemented\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      socket.destroy();
    };
    this.server.on('connect', refuse);
    this.server.on('upgrade', refuse);
    opts.tokens.onEnd((reason) => this.sessionEnded(reason));
  }

  /** The base URL clients are given (also served at /.well-known/matrix/client). */
  setPublicUrl(url: string): void {
    this.publicUrl = url;
    this.hostAllowed = hostGuard(url);
  }

  get active(): number {
    return this.inFlight.size;
  }

  /**
   * Stops accepting; in-flight requests may finish within `drainMs`, then what is left is cut.
   * Resolves with the number of requests that had to be cut.
   */
  async drain(drainMs: number, cutEarly?: Promise<void>): Promise<number> {
    this.draining = true;
    let cut = false;
    void cutEarly?.then(() => (cut = true));
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    for (const f of this.inFlight) if (!f.res.headersSent) f.res.shouldKeepAlive = false;
    const deadline = Date.now() + drainMs;
    while (this.inFlight.size > 0 && Date.now() < deadline && !cut) {
      await new Promise((r) => setTimeout(r, Math.min(50, Math.max(1, deadline - Date.now()))));
      this.server.closeIdleConnections();
    }
    const left = this.inFlight.size;
    for (const f of this.inFlight) {
      f.abort.abort();
      f.res.destroy();
    }
    for (const s of this.sockets) s.destroy();
    await closed;
    return left;
  }

  /** The session ended: requests not answered yet get 401 now (those already streaming finish or are cut at drain). */
  private sessionEnded(reason: MxsError): void {
    for (const f of this.inFlight) {
      if (f.res.headersSent) continue;
      f.abort.abort();
      sendError(f.res, 401, 'M_UNKNOWN_TOKEN', sessionEndedText(reason), { soft_logout: false });
    }
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const at = this.opts.now();
    const method = req.method ?? 'GET';
    const rawTarget = req.url ?? '/';
    const logPath = rawTarget.split('?')[0]!;
    const flight: InFlight = { res, abort: new Cancel() };
    this.inFlight.add(flight);
    res.on('close', () => {
      this.inFlight.delete(flight);
      if (!res.writableFinished) flight.abort.abort();
      this.opts.log({ at, method, path: logPath, status: res.headersSent ? res.statusCode : 0, ms: this.opts.now() - at });
    });
    try {
      await this.respond(req, res, method, rawTarget, flight.abort);
    } catch (err) {
      if (err instanceof SessionEnded) sendError(res, 401, 'M_UNKNOWN_TOKEN', sessionEndedText(err.reason), { soft_logout: false });
      else if (err instanceof RefreshUnavailable) gatewayError(res, err.reason.code === 'timeout' ? 504 : 502, `mxs proxy could not refresh the access token: ${err.reason.message}`);
      else if (!res.headersSent) sendError(res, 500, 'M_UNKNOWN', 'mxs proxy: internal error.');
      else res.destroy();
    }
  }

  private async respond(req: IncomingMessage, res: ServerResponse, method: string, rawTarget: string, signal: Cancel): Promise<void> {
    if (this.draining) {
      res.shouldKeepAlive = false;
      res.setHeader('Retry-After', '1');
      return sendError(res, 503, 'M_UNKNOWN', 'mxs proxy is shutting down.');
    }
    if (!this.hostAllowed(req.headers.host)) return sendError(res, 421, 'M_FORBIDDEN', `mxs proxy answers only requests addressed to ${this.publicUrl} (or localhost with its port); this one names another host (a guard against DNS rebinding).`);
    const target = parseTarget(rawTarget);
    if (isTargetProblem(target)) return sendError(res, 400, 'M_UNRECOGNIZED', `mxs proxy refused the request: ${target.reason}.`);
    // headersDistinct is built on first access: only when there is an Authorization header to check.
    const distinct = req.headers.authorization === undefined ? {} : (req.headersDistinct as Record<string, string[] | undefined>);
    const credential = this.opts.proxyToken.credential(req.headers, distinct, target.queryTokens);
    if (credential.kind === 'other') {
      // Never forwarded: not even the real access token is accepted from a client.
      return sendError(res, 401, 'M_UNKNOWN_TOKEN', 'Unrecognised access token: this is an mxs proxy; use the proxy token.', { soft_logout: false });
    }
    const authed = credential.kind === 'proxy';
    const r = route(method, target.canonical, this.opts.routes);
    switch (r.kind) {
      case 'well-known':
        return sendJson(res, 200, { 'm.homeserver': { base_url: this.publicUrl } });
      case 'health':
        if (!authed) return sendError(res, 401, 'M_MISSING_TOKEN', 'The health endpoint needs the proxy token.');
        return sendJson(res, 200, this.opts.tokens.health());
      case 'mxs-unknown':
        return sendError(res, 404, 'M_UNRECOGNIZED', 'Unrecognized request.');
      case 'session-endpoint':
        return sendError(res, 403, 'M_FORBIDDEN', 'mxs proxy owns this session: login, logout, refresh and OAuth endpoints are refused. Use mxs on the machine running the proxy.');
      case 'method-refused':
        res.setHeader('Allow', 'GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS');
        return sendError(res, 405, 'M_UNRECOGNIZED', `mxs proxy does not forward ${method} requests.`);
      case 'forward':
        return this.forward(req, res, method, target, authed, signal);
    }
  }

  private async forward(req: IncomingMessage, res: ServerResponse, method: string, target: Target, authed: boolean, signal: Cancel): Promise<void> {
    const body = await readBody(req);
    const upstream: Upstream = {
      path: this.basePath + target.path + (target.query === '' ? '' : `?${target.query}`),
      method,
      headers: upstreamHeaders(req.rawHeaders),
      body,
      headersTimeout: headersTimeoutFor(target.query, this.opts.timeoutMs),
    };
    // Contract: an upstream 401 M_UNKNOWN_TOKEN is refreshed for once and the request replayed once
    // (bodies up to REPLAY_BODY_BYTES are kept for it; a streamed one gets the 401 passed on).
    const { answer } = authed
      ? await sendWithReplay(this.opts.tokens, (token) => this.send(res, upstream, token, signal), body.kind !== 'stream')
      : await this.send(res, upstream, undefined, signal);
    if (answer) await this.relay(res, answer.response, answer.body, answer.token);
  }

  /** One request to the homeserver; null when it was answered here (gateway errors) or the client left. */
  private async send(res: ServerResponse, up: Upstream, token: string | undefined, signal: Cancel): Promise<Sent<Answer | null>> {
    const none = { answer: null, refused: false };
    const replayable = up.body.kind !== 'stream';
    for (let retriedSocket = false; ; retriedSocket = true) {
      if (signal.aborted) return none;
      const headers = token === undefined ? [...up.headers] : [...up.headers, 'authorization', `Bearer ${token}`];
      if (up.body.kind === 'stream' && up.body.length !== undefined) headers.push('content-length', up.body.length);
      let response: Dispatcher.ResponseData;
      try {
        response = await this.opts.upstream.request({
          path: up.path,
          method: up.method as Dispatcher.HttpMethod,
          headers,
          body: up.body.kind === 'none' ? null : up.body.kind === 'buffer' ? up.body.data : up.body.stream,
          signal,
          headersTimeout: up.headersTimeout,
          bodyTimeout: this.opts.timeoutMs,
        });
      } catch (err) {
        if (signal.aborted) return none;
        const code = errorCode(err);
        // A kept-alive connection the homeserver had closed: nothing reached it; send once more.
        if (!retriedSocket && replayable && (code === 'UND_ERR_SOCKET' || code === 'ECONNRESET')) continue;
        if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_CONNECT_TIMEOUT') gatewayError(res, 504, `The homeserver did not answer within ${Math.round(up.headersTimeout / 1000)} s.`);
        else gatewayError(res, 502, `mxs proxy cannot reach the homeserver (${code || 'network error'}).`);
        return none;
      }
      if (response.statusCode !== 401 || token === undefined) return { answer: { response, body: response.body, token }, refused: false };
      // Read the (small) error to see whether the token died; either way the answer can still be relayed.
      const head = await takeUpTo(response.body, ERROR_BODY_BYTES);
      const refused = head.complete && refusesToken(401, Buffer.concat(head.chunks));
      return { answer: { response, body: Readable.from(rest(head)), token }, refused };
    }
  }

  private async relay(res: ServerResponse, upstream: Dispatcher.ResponseData, body: Readable, token: string | undefined): Promise<void> {
    if (res.headersSent || res.destroyed) {
      body.destroy();
      return;
    }
    const headers = downstreamHeaders(upstream.headers);
    if (token !== undefined) {
      // The real token never reaches a client: not even echoed in a header.
      for (const [k, v] of Object.entries(headers)) if ((Array.isArray(v) ? v.join('\n') : v).includes(token)) delete headers[k];
    }
    if (this.draining) res.shouldKeepAlive = false;
    const length = Number(headers['content-length']);
    if (length <= SMALL_BODY_BYTES) {
      // Most Matrix answers are small: read them whole and send headers and body in one write.
      const chunks: Buffer[] = [];
      try {
        for await (const chunk of body) chunks.push(chunk as Buffer);
      } catch {
        return gatewayError(res, 502, 'The homeserver cut its answer short.');
      }
      if (res.destroyed) return;
      res.writeHead(upstream.statusCode, headers);
      res.end(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks));
      return;
    }
    res.writeHead(upstream.statusCode, headers);
    try {
      await pipeline(body, res);
    } catch {
      // The client left, or the homeserver cut the body: both ends are closed by pipeline.
    }
  }
}

// ---------------------------------------------------------------------------------------------

/**
 * The request body: none; in memory when it is at most REPLAY_BODY_BYTES (so it can be replayed); or
 * streamed (what was read so far, then the rest) when larger. node:http has already checked the
 * framing (Content-Length or chunked, never both).
 */
async function readBody(req: IncomingMessage): Promise<Body> {
  const length = req.headers['content-length'];
  const chunked = req.headers['transfer-encoding'] !== undefined;
  if (length === undefined && !chunked) return { kind: 'none' };
  if (length !== undefined && Number(length) > REPLAY_BODY_BYTES) return { kind: 'stream', stream: req, length };
  const head = await takeUpTo(req, REPLAY_BODY_BYTES);
  if (head.complete) return { kind: 'buffer', data: Buffer.concat(head.chunks) };
  return { kind: 'stream', stream: Readable.from(rest(head)), length };
}

interface Head {
  chunks: Buffer[];
  complete: boolean;
  iterator: AsyncIterator<Buffer>;
}

/** Reads up to `limit` bytes (it may overshoot by one chunk) without ending the stream. */
async function takeUpTo(stream: AsyncIterable<Buffer>, limit: number): Promise<Head> {
  const iterator = stream[Symbol.asyncIterator]();
  const chunks: Buffer[] = [];
  let size = 0;
  while (size <= limit) {
    const next = await iterator.next();
    if (next.done) return { chunks, complete: true, iterator };
    chunks.push(next.value);
    size += next.value.length;
  }
  return { chunks, complete: false, iterator };
}

async function* rest(head: Head): AsyncGenerator<Buffer> {
  yield* head.chunks;
  if (head.complete) return;
  for (;;) {
    const next = await head.iterator.next();
    if (next.done) return;
    yield next.value;
  }
}

function sendJson(res: ServerResponse, status: number, value: unknown): void {
  if (res.headersSent || res.destroyed) return;
  const body = Buffer.from(JSON.stringify(value));
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': String(body.length), 'cache-control': 'no-store' });
  res.end(body);
}

function sendError(res: ServerResponse, status: number, errcode: string, error: string, extra: Record<string, unknown> = {}): void {
  sendJson(res, status, { errcode, error, ...extra });
}

function gatewayError(res: ServerResponse, status: 502 | 504, error: string): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  sendError(res, status, 'M_UNKNOWN', error);
}

function sessionEndedText(reason: MxsError): string {
  return `The session behind this mxs proxy has ended: ${reason.message.replace(/\s+$/, '')}`;
}
