import type { Dispatcher } from 'undici';
import { defaultDispatcher, HANDSHAKE_TIMEOUT_MS, probePort, waitingNotice } from './connect.js';
import { request, undiciCore, type UndiciCore } from './undici.js';
import { MxsError, badResponse, cancelled } from '../errors.js';
import { durationText } from '../duration.js';
import { redactUrl } from '../redact.js';

// The one transport of mxs: any method; JSON, form or raw bodies; bounded in time (connect to last
// byte) and size; never following redirects (a token must never be forwarded to another host);
// retried with backoff and jitter only where the caller says it is safe. It knows no protocol: a
// decoder (Matrix, OAuth) turns a non-2xx answer into an MxsError with the server's fields.

export const MAX_BODY_BYTES = 1024 * 1024;
const MAX_ATTEMPTS = 3;
/** Longest server-requested wait (429 Retry-After) that mxs sits out before giving up. */
const MAX_RETRY_WAIT_MS = 10_000;

export interface HttpDeps {
  timeoutMs: number;
  dispatcher?: Dispatcher;
  now: () => number;
  sleep: (ms: number) => Promise<void>;
  /** `--verbose`: one line per exchange (method, URL, status, time); never headers or bodies. */
  trace?: (line: string) => void;
  /** Called with (server Date - local clock) when a response carries a Date header. */
  onClockSample?: (skewMs: number) => void;
  /** The user cancelled (Ctrl-C): every exchange and retry wait ends at once with the signal's reason. */
  signal?: AbortSignal;
  /**
   * An exchange still unanswered after WAITING_NOTICE_MS: `what` says for what it waits (on a terminal,
   * shown on stderr); the returned function clears it when the exchange ends.
   */
  onWaiting?: (what: string) => () => void;
}


export interface HttpRequest {
  method: string;
  url: string;
  /** Sent as `Authorization: Bearer`, never in the URL. */
  accessToken?: string;
  /** HTTP Basic (an OAuth client's `client_secret_basic`, RFC 6749 §2.3.1: each part form-encoded first). */
  basicAuth?: { user: string; password: string };
  /** A JSON body. */
  json?: unknown;
  /** An application/x-www-form-urlencoded body (OAuth). */
  form?: Record<string, string>;
  /** Safe to repeat on network errors, 5xx and 429. Default true. */
  retry?: boolean;
}

export interface HttpResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  contentType: string | undefined;
  text: string;
  /** The body parsed, when it is a JSON object with a JSON content type. */
  json: Record<string, unknown> | undefined;
  /** When the successful attempt was sent: the base of any expiry it reports. */
  sentAt: number;
  host: string;
}

/**
 * Turns a non-2xx answer into the protocol's error, with `status`, `retryable` (retryableStatus) and,
 * for 429, `retryAfterMs`.
 */
export type ErrorDecoder = (res: HttpResponse, now: number) => MxsError;

/** Answers that the same request may get past later: server trouble and rate limiting. */
export function retryableStatus(status: number): boolean {
  return status >= 500 || status === 429;
}

/**
 * The one retry policy, for `send` and `openStream` alike: a request is sent again only when its
 * caller says that is safe (every GET, PUT and DELETE; no POST that is not idempotent) and the failure
 * says retrying may help (`retryable`: network trouble but TLS, 5xx, 429), at most MAX_ATTEMPTS times
 * in all. The wait is the server's (429) or a jittered backoff; a server that asks for longer than
 * MAX_RETRY_WAIT_MS is not waited for, so its 429 stands (exit 3). The wait, or undefined to give up.
 */
export function retryWait(failure: { retryable: boolean; retryAfterMs?: number }, attempt: number, allowed: boolean): number | undefined {
  if (!allowed || !failure.retryable || attempt >= MAX_ATTEMPTS) return undefined;
  const wait = failure.retryAfterMs ?? backoff(attempt);
  return wait > MAX_RETRY_WAIT_MS ? undefined : wait;
}

export async function send(deps: HttpDeps, req: HttpRequest, decode: ErrorDecoder): Promise<HttpResponse> {
  const undici = undiciCore();
  for (let attempt = 1; ; attempt++) {
    let failure: MxsError;
    try {
      const res = await exchange(deps, req, undici);
      if (res.status >= 200 && res.status < 300) return res;
      failure = decode(res, deps.now());
    } catch (err) {
      if (!(err instanceof MxsError)) throw err;
      failure = err;
    }
    const wait = retryWait(failure, attempt, req.retry !== false);
    if (wait === undefined) throw failure;
    deps.trace?.(`  retrying in ${Math.round(wait)} ms (${failure.code})`);
    await deps.sleep(wait);
    throwIfCancelled(deps);
  }
}

/** The user's cancellation as the error to end with (a cancelled MxsError, exit 130). */
function throwIfCancelled(deps: HttpDeps): void {
  if (!deps.signal?.aborted) return;
  const reason: unknown = deps.signal.reason;
  throw reason instanceof MxsError ? reason : cancelled();
}

function backoff(attempt: number): number {
  const cap = 250 * 2 ** (attempt - 1);
  return cap / 2 + Math.random() * (cap / 2);
}

async function exchange(deps: HttpDeps, req: HttpRequest, undici: UndiciCore): Promise<HttpResponse> {
  const headers: Record<string, string> = { accept: 'application/json', 'user-agent': 'mxs' };
  if (req.accessToken !== undefined) headers.authorization = `Bearer ${req.accessToken}`;
  if (req.basicAuth !== undefined) {
    const enc = (v: string) => new URLSearchParams({ v }).toString().slice(2);
    headers.authorization = `Basic ${Buffer.from(`${enc(req.basicAuth.user)}:${enc(req.basicAuth.password)}`).toString('base64')}`;
  }
  let payload: string | undefined;
  if (req.json !== undefined) {
    headers['content-type'] = 'application/json';
    payload = JSON.stringify(req.json);
  } else if (req.form !== undefined) {
    headers['content-type'] = 'application/x-www-form-urlencoded';
    payload = new URLSearchParams(req.form).toString();
  }
  const host = hostOf(req.url);
  throwIfCancelled(deps);
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, deps.timeoutMs);
  const sentAt = deps.now();
  let status = 0;
  const waited = waitingNotice(deps, req.url);
  try {
    const res = await request(deps.dispatcher ?? defaultDispatcher(undici, deps.timeoutMs), req.url, {
      method: req.method as Dispatcher.HttpMethod,
      headers,
      body: payload,
      signal: deps.signal ? AbortSignal.any([controller.signal, deps.signal]) : controller.signal,
    });
    status = res.statusCode;
    if (status >= 300 && status < 400) {
      await res.body.dump().catch(() => {});
      throw redirectRefused(status, header(res.headers, 'location'), host);
    }
    const text = await readCapped(res.body, host);
    const date = header(res.headers, 'date');
    if (date && deps.onClockSample) {
      const serverTime = Date.parse(date);
      if (!Number.isNaN(serverTime)) deps.onClockSample(serverTime - (sentAt + deps.now()) / 2);
    }
    const contentType = header(res.headers, 'content-type');
    return { status, headers: res.headers, contentType, text, json: parseJsonObject(contentType, text), sentAt, host };
  } catch (err) {
    if (err instanceof MxsError) throw err;
    throwIfCancelled(deps);
    const tls = TLS_CODES.test(errorCode(err));
    const handshake = errorCode(err) === 'UND_ERR_CONNECT_TIMEOUT';
    const port = (timedOut || tls || handshake) && req.url.startsWith('https:') ? await probePort(req.url, Math.min(1000, deps.timeoutMs)) : 'closed';
    if (port === 'http') {
      const u = new URL(req.url);
      // Not retryable: the same request cannot get past a port that does not speak TLS.
      throw new MxsError({
        code: 'network',
        message: `${host} answered in plain HTTP, not HTTPS: this port does not speak TLS.`,
        hint: `Use http://${u.host} (allowed to loopback; elsewhere only with --insecure), or the server's HTTPS port.`,
        kind: 'network',
        detail: 'the port does not speak TLS',
        cause: err,
      });
    }
    if (handshake && port === 'open') {
      const u = new URL(req.url);
      // Not retryable: a port that took the connection and never answered the TLS greeting does so again.
      throw new MxsError({
        code: 'network',
        message: `The TLS handshake with ${host} did not finish within ${durationText(Math.min(deps.timeoutMs, HANDSHAKE_TIMEOUT_MS))}.`,
        hint: `Check that the URL names the server's HTTPS port; if that port serves plain HTTP, use http://${u.host} (allowed to loopback; elsewhere only with --insecure).`,
        kind: 'network',
        detail: 'the TLS handshake did not finish',
        cause: err,
      });
    }
    if (timedOut) {
      throw new MxsError({
        code: 'timeout',
        message: `${host} did not answer within ${durationText(deps.timeoutMs)}.`,
        hint: 'Check the network and the server, or allow more time with --timeout.',
        kind: 'network',
        cause: err,
      });
    }
    throw networkError(err, host);
  } finally {
    clearTimeout(timer);
    waited();
    deps.trace?.(`${req.method} ${redactUrl(req.url)} → ${status || 'no answer'} (${deps.now() - sentAt} ms)`);
  }
}

const TLS_CODES = /CERT|SSL|TLS|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/;

/** The code of a Node or undici error (`ECONNREFUSED`, `UND_ERR_SOCKET`...), or of its cause; '' when none. */
export function errorCode(err: unknown): string {
  const e = err as NodeJS.ErrnoException & { cause?: NodeJS.ErrnoException };
  return e?.code ?? e?.cause?.code ?? '';
}

function networkError(err: unknown, host: string): MxsError {
  const e = err as NodeJS.ErrnoException & { cause?: NodeJS.ErrnoException };
  const code = errorCode(err);
  const detail = (e.cause?.message ?? e.message ?? String(err)).split('\n')[0];
  if (TLS_CODES.test(code)) {
    const untrusted = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ALTNAME/.test(code);
    // Never retried: a certificate or handshake that failed once fails the same way again.
    return new MxsError({
      code: 'network',
      message: `TLS failure talking to ${host}: ${detail}.`,
      hint: untrusted
        ? 'The server certificate is not trusted for that name; check the URL (mxs never disables certificate checks).'
        : 'The TLS handshake failed; check that the URL names the server\'s HTTPS port.',
      kind: 'network',
      detail,
      cause: err,
    });
  }
  return new MxsError({
    code: 'network',
    message: `Cannot reach ${host}: ${detail}${code && !detail?.includes(code) ? ` (${code})` : ''}.`,
    hint: 'Check the network connection and the server URL, then retry.',
    kind: 'network',
    detail,
    retryable: true,
    cause: err,
  });
}

function redirectRefused(status: number, location: string | undefined, host: string): MxsError {
  let to = 'elsewhere';
  try {
    if (location) to = new URL(location, `https://${host}`).host;
  } catch {
    // a malformed Location is still a redirect mxs refuses
  }
  return badResponse(`${host} redirected the request to ${to} (HTTP ${status}); mxs does not follow redirects with credentials.`);
}

async function readCapped(body: AsyncIterable<Buffer> & { destroy?: () => void }, host: string): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) {
      body.destroy?.();
      throw badResponse(`${host} sent a response larger than ${MAX_BODY_BYTES / 1024} KiB; refusing it.`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function parseJsonObject(contentType: string | undefined, text: string): Record<string, unknown> | undefined {
  if (!/^application\/([a-z.+-]*\+)?json\b/i.test(contentType ?? '')) return undefined;
  try {
    const parsed: unknown = JSON.parse(text);
    return typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed) ? (parsed as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

export function header(headers: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

export function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return 'the server';
  }
}

/** The body of a 2xx answer as a JSON object, or the error that says it is not one. */
export function jsonBody(res: HttpResponse, what: string): Record<string, unknown> {
  if (res.json !== undefined) return res.json;
  if (!/json/i.test(res.contentType ?? '')) {
    throw badResponse(`${res.host} answered HTTP ${res.status} with ${res.contentType ?? 'no content type'} instead of JSON; is it ${what}?`);
  }
  throw badResponse(`${res.host} answered HTTP ${res.status} with malformed JSON (truncated or not an object).`);
}

/** 429: the wait the server asked for (Matrix `retry_after_ms`, else `Retry-After` seconds or date). */
export function retryAfterMs(res: Pick<HttpResponse, 'headers'> & { json?: Record<string, unknown> }, now: number): number | undefined {
  const ms = res.json?.retry_after_ms;
  if (typeof ms === 'number' && Number.isFinite(ms) && ms >= 0) return ms;
  const retryAfter = header(res.headers, 'retry-after');
  if (retryAfter === undefined) return undefined;
  const secs = Number(retryAfter);
  if (Number.isFinite(secs) && secs >= 0) return secs * 1000;
  const at = Date.parse(retryAfter);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** One line of server text, bounded; escaping for the terminal happens at output. */
export function serverLine(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v.split('\n')[0]!.slice(0, 200) : undefined;
}

// ---------------------------------------------------------------------------------------------
// Streaming exchanges (`mxs api`): the body is not read here, so a 100 MiB download never sits in
// memory. --timeout bounds the connect phase, the wait for the headers, and each silence in the body.

export interface StreamRequest {
  method: string;
  url: string;
  accessToken?: string;
  headers?: Record<string, string>;
  /** A replayable body (string or Buffer), or a factory for a fresh stream per attempt. */
  body?: string | Buffer | (() => NodeJS.ReadableStream);
  /** Safe to repeat on network errors, 5xx and 429. */
  retry: boolean;
}

export interface StreamResponse {
  status: number;
  statusText: string;
  headers: Record<string, string | string[] | undefined>;
  body: NodeJS.ReadableStream & { destroy(): void; text(): Promise<string> };
  sentAt: number;
}

export async function openStream(deps: HttpDeps, req: StreamRequest): Promise<StreamResponse> {
  const undici = undiciCore();
  const host = hostOf(req.url);
  for (let attempt = 1; ; attempt++) {
    throwIfCancelled(deps);
    const sentAt = deps.now();
    let status = 0;
    try {
      const res = await request(deps.dispatcher ?? defaultDispatcher(undici, deps.timeoutMs), req.url, {
        method: req.method as Dispatcher.HttpMethod,
        headers: { 'user-agent': 'mxs', ...req.headers, ...(req.accessToken !== undefined ? { authorization: `Bearer ${req.accessToken}` } : {}) },
        body: typeof req.body === 'function' ? (req.body() as unknown as import('node:stream').Readable) : req.body,
        headersTimeout: deps.timeoutMs,
        bodyTimeout: deps.timeoutMs,
        ...(deps.signal && { signal: deps.signal }),
      });
      status = res.statusCode;
      // The body is the caller's, so only the headers speak for a retry (Retry-After on a 429).
      const failure = { retryable: retryableStatus(status), retryAfterMs: status === 429 ? retryAfterMs(res, deps.now()) : undefined };
      const wait = retryWait(failure, attempt, req.retry);
      if (wait === undefined) {
        return { status, statusText: STATUS_TEXT[status] ?? '', headers: res.headers, body: res.body as unknown as StreamResponse['body'], sentAt };
      }
      await res.body.dump();
      deps.trace?.(`  retrying in ${Math.round(wait)} ms (HTTP ${status})`);
      await deps.sleep(wait);
    } catch (err) {
      throwIfCancelled(deps);
      const e = timeoutOrNetwork(err, host, deps.timeoutMs);
      const wait = retryWait(e, attempt, req.retry);
      if (wait === undefined) throw e;
      deps.trace?.(`  retrying in ${Math.round(wait)} ms (${e.code})`);
      await deps.sleep(wait);
    } finally {
      deps.trace?.(`${req.method} ${redactUrl(req.url)} → ${status || 'no answer'} (${deps.now() - sentAt} ms)`);
    }
  }
}

function timeoutOrNetwork(err: unknown, host: string, timeoutMs: number): MxsError {
  if (err instanceof MxsError) return err;
  const code = errorCode(err);
  if (/TIMEOUT/.test(code)) {
    return new MxsError({ code: 'timeout', message: `${host} went silent for ${durationText(timeoutMs)}.`, hint: 'Check the network and the server, or allow more time with --timeout.', kind: 'network', cause: err });
  }
  return networkError(err, host);
}

const STATUS_TEXT: Record<number, string> = { 200: 'OK', 201: 'Created', 204: 'No Content', 302: 'Found', 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 405: 'Method Not Allowed', 409: 'Conflict', 413: 'Payload Too Large', 429: 'Too Many Requests', 500: 'Internal Server Error', 502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout' };
