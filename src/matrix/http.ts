import type { Dispatcher } from 'undici';
import { MxsError, Exit, badResponse } from '../errors.js';
import { redactUrl } from '../redact.js';

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
}

export interface JsonRequest {
  method: 'GET' | 'POST';
  url: string;
  accessToken?: string;
  body?: unknown;
  /** Safe to repeat on network errors, 5xx and 429 (true for every Matrix call mxs makes). */
  retry?: boolean;
}

export interface JsonResponse {
  status: number;
  body: Record<string, unknown>;
  /** When the successful attempt was sent: the base of any expiry it reports. */
  sentAt: number;
}

const TLS_CODES = /CERT|SSL|TLS|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/;

/**
 * One Matrix JSON exchange over undici: bounded in time and size, never following redirects
 * (a token must never be forwarded to another host), retried with backoff and jitter only where
 * that is safe. Every failure becomes an MxsError here.
 */
export async function requestJson(deps: HttpDeps, req: JsonRequest): Promise<JsonResponse> {
  const { request } = await import('undici');
  for (let attempt = 1; ; attempt++) {
    try {
      return await exchange(deps, req, request);
    } catch (err) {
      const e = err as MxsError;
      const retryable = req.retry !== false && isRetryable(e) && attempt < MAX_ATTEMPTS;
      if (!retryable) throw e;
      const wait = e.retryAfterMs ?? backoff(attempt);
      if (wait > MAX_RETRY_WAIT_MS) throw e;
      deps.trace?.(`  retrying in ${Math.round(wait)} ms (${e.code})`);
      await deps.sleep(wait);
    }
  }
}

function isRetryable(e: MxsError): boolean {
  if (e.code === 'network') return true;
  if (e.status === 429) return true;
  return e.status !== undefined && e.status >= 500;
}

function backoff(attempt: number): number {
  const cap = 250 * 2 ** (attempt - 1);
  return cap / 2 + Math.random() * (cap / 2);
}

async function exchange(deps: HttpDeps, req: JsonRequest, request: typeof import('undici').request): Promise<JsonResponse> {
  const headers: Record<string, string> = { accept: 'application/json', 'user-agent': 'mxs' };
  if (req.accessToken !== undefined) headers.authorization = `Bearer ${req.accessToken}`;
  let payload: string | undefined;
  if (req.body !== undefined) {
    headers['content-type'] = 'application/json';
    payload = JSON.stringify(req.body);
  }
  const host = safeHost(req.url);
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, deps.timeoutMs);
  const sentAt = deps.now();
  let status = 0;
  try {
    const res = await request(req.url, {
      method: req.method,
      headers,
      body: payload,
      signal: controller.signal,
      dispatcher: deps.dispatcher,
    });
    status = res.statusCode;
    const text = await readCapped(res.body, host);
    const date = header(res.headers, 'date');
    if (date && deps.onClockSample) {
      const serverTime = Date.parse(date);
      if (!Number.isNaN(serverTime)) deps.onClockSample(serverTime - (sentAt + deps.now()) / 2);
    }
    return { status, body: interpret(status, header(res.headers, 'content-type'), header(res.headers, 'location'), text, host, header(res.headers, 'retry-after'), deps.now()), sentAt };
  } catch (err) {
    if (err instanceof MxsError) throw err;
    if (timedOut) {
      throw new MxsError({
        code: 'timeout',
        message: `${host} did not answer within ${deps.timeoutMs} ms.`,
        hint: 'Check the network and the server, or allow more time with --timeout.',
        exitCode: Exit.network,
        cause: err,
      });
    }
    throw networkError(err, host);
  } finally {
    clearTimeout(timer);
    deps.trace?.(`${req.method} ${redactUrl(req.url)} → ${status || 'no answer'} (${deps.now() - sentAt} ms)`);
  }
}

function networkError(err: unknown, host: string): MxsError {
  const e = err as NodeJS.ErrnoException & { cause?: NodeJS.ErrnoException };
  const code = e.code ?? e.cause?.code ?? '';
  const detail = (e.cause?.message ?? e.message ?? String(err)).split('\n')[0];
  if (TLS_CODES.test(code)) {
    return new MxsError({
      code: 'network',
      message: `TLS failure talking to ${host}: ${detail}.`,
      hint: 'The server certificate is not trusted for that name; check the URL (mxs never disables certificate checks).',
      exitCode: Exit.network,
      cause: err,
    });
  }
  return new MxsError({
    code: 'network',
    message: `Cannot reach ${host}: ${detail}${code && !detail?.includes(code) ? ` (${code})` : ''}.`,
    hint: 'Check the network connection and the server URL, then retry.',
    exitCode: Exit.network,
    cause: err,
  });
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

function header(headers: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function safeHost(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return 'the server';
  }
}

function parseRetryAfter(body: Record<string, unknown> | undefined, retryAfter: string | undefined, now: number): number | undefined {
  const ms = body?.retry_after_ms;
  if (typeof ms === 'number' && Number.isFinite(ms) && ms >= 0) return ms;
  if (retryAfter === undefined) return undefined;
  const secs = Number(retryAfter);
  if (Number.isFinite(secs) && secs >= 0) return secs * 1000;
  const at = Date.parse(retryAfter);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** Turns a complete HTTP answer into a JSON object, or the one MxsError that describes it. */
function interpret(
  status: number,
  contentType: string | undefined,
  location: string | undefined,
  text: string,
  host: string,
  retryAfter: string | undefined,
  now: number,
): Record<string, unknown> {
  if (status >= 300 && status < 400) {
    let to = 'elsewhere';
    try {
      if (location) to = new URL(location, `https://${host}`).host;
    } catch {
      // a malformed Location is still a redirect mxs refuses
    }
    throw badResponse(`${host} redirected the request to ${to} (HTTP ${status}); mxs does not follow redirects with credentials.`);
  }
  let json: Record<string, unknown> | undefined;
  const isJson = /^application\/([a-z.+-]*\+)?json\b/i.test(contentType ?? '');
  if (isJson) {
    try {
      const parsed: unknown = JSON.parse(text);
      if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) json = parsed as Record<string, unknown>;
    } catch {
      json = undefined;
    }
  }
  if (status >= 200 && status < 300) {
    if (!isJson) throw badResponse(`${host} answered HTTP ${status} with ${contentType ?? 'no content type'} instead of JSON; is it a Matrix homeserver?`);
    if (json === undefined) throw badResponse(`${host} answered HTTP ${status} with malformed JSON (truncated or not an object).`);
    return json;
  }
  const errcode = typeof json?.errcode === 'string' ? json.errcode : undefined;
  const serverMessage = typeof json?.error === 'string' ? json.error.split('\n')[0]!.slice(0, 200) : undefined;
  const retryAfterMs = status === 429 ? parseRetryAfter(json, retryAfter, now) : undefined;
  const code = errcode ?? (status === 429 ? 'M_LIMIT_EXCEEDED' : 'bad_response');
  // Only a Matrix answer (with an errcode) can end a session: a proxy's or captive portal's
  // 401/403 page is network trouble, never a reason to log out (element-web #27914).
  const exitCode = (status === 401 || status === 403) && errcode ? Exit.auth : Exit.network;
  const what = serverMessage ? `${serverMessage}` : status >= 500 ? 'server error' : 'request failed';
  return throwError(new MxsError({
    code,
    message: `${host}: ${what} (HTTP ${status}${errcode ? ` ${errcode}` : ''}).`,
    hint:
      status === 429
        ? `The server is rate-limiting; retry${retryAfterMs !== undefined ? ` in ${Math.ceil(retryAfterMs / 1000)}s` : ' later'}.`
        : exitCode === Exit.auth
          ? 'Log in again: mxs login SERVER'
          : 'Retry later; --verbose shows the exchange.',
    exitCode,
    status,
    softLogout: json?.soft_logout === true,
    retryAfterMs,
  }));
}

function throwError(e: MxsError): never {
  throw e;
}
