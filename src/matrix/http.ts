import { MxsError } from '../errors.js';
import { jsonBody, retryableStatus, retryAfterMs, send, serverLine, type HttpDeps, type HttpResponse } from '../http/transport.js';

export type { HttpDeps } from '../http/transport.js';
export { MAX_BODY_BYTES } from '../http/transport.js';

// Matrix client-server API calls over the one transport, and the decoder of Matrix errors
// (`{errcode, error}`, spec §2 "Standard error response"). Exit codes and hints are not decided
// here: the error says what happened (kind, errcode, status, the server's words).

export interface JsonRequest {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  url: string;
  accessToken?: string;
  body?: unknown;
  /** Safe to repeat on network errors, 5xx and 429 (true for every Matrix call mxs makes but login). */
  retry?: boolean;
}

export interface JsonResponse {
  status: number;
  body: Record<string, unknown>;
  /** When the successful attempt was sent: the base of any expiry it reports. */
  sentAt: number;
}

export async function requestJson(deps: HttpDeps, req: JsonRequest): Promise<JsonResponse> {
  const res = await send(deps, { method: req.method, url: req.url, accessToken: req.accessToken, json: req.body, retry: req.retry }, decodeMatrixError);
  return { status: res.status, body: jsonBody(res, 'a Matrix homeserver'), sentAt: res.sentAt };
}

/**
 * The fields of a Matrix error body (`{errcode, error}`), parsed or as received (text or bytes, which
 * need not be JSON at all: a proxy's HTML page has neither).
 */
export function matrixErrorFields(body: Record<string, unknown> | string | Buffer | undefined): { errcode?: string; serverMessage?: string } {
  let json: unknown = body;
  if (typeof body === 'string' || Buffer.isBuffer(body)) {
    try {
      json = JSON.parse(body.toString('utf8'));
    } catch {
      return {};
    }
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) return {};
  const j = json as Record<string, unknown>;
  return { errcode: typeof j.errcode === 'string' ? j.errcode : undefined, serverMessage: serverLine(j.error) };
}

/** The Matrix `errcode` of an error body, when it has one. */
export function errcodeOf(body: Record<string, unknown> | string | Buffer | undefined): string | undefined {
  return matrixErrorFields(body).errcode;
}

/** A non-2xx Matrix answer as one MxsError with the server's fields. */
export function decodeMatrixError(res: HttpResponse, now: number): MxsError {
  const { status, json, host } = res;
  const { errcode, serverMessage } = matrixErrorFields(json);
  const retryAfter = status === 429 ? retryAfterMs(res, now) : undefined;
  // Only a Matrix answer (with an errcode) can end a session: a proxy's or captive portal's
  // 401/403 page is network trouble, never a reason to log out (element-web #27914).
  const auth = (status === 401 || status === 403) && errcode !== undefined;
  const what = serverMessage ?? (status >= 500 ? 'server error' : 'request failed');
  return new MxsError({
    code: errcode ?? (status === 429 ? 'M_LIMIT_EXCEEDED' : 'bad_response'),
    message: `${host}: ${what} (HTTP ${status}${errcode ? ` ${errcode}` : ''}).`,
    hint:
      status === 429
        ? `The server is rate-limiting; retry${retryAfter !== undefined ? ` in ${Math.ceil(retryAfter / 1000)}s` : ' later'}.`
        : auth
          ? undefined
          : 'Retry later; --verbose shows the exchange.',
    kind: auth ? 'auth' : 'network',
    status,
    detail: serverMessage,
    retryable: retryableStatus(status),
    retryAfterMs: retryAfter,
  });
}
