import { Readable } from 'node:stream';
import { MxsError, badResponse, usageError } from '../errors.js';
import { openStream, retryableStatus, type StreamResponse } from '../http/transport.js';
import { matrixErrorFields } from '../matrix/http.js';
import type { Deps } from './deps.js';
import { refusesToken } from './replay.js';
import { refreshWhenBelow, withAccessToken, type LoadedSession } from './session.js';

// `mxs api`: an authenticated request to the session's homeserver, like `gh api`. The token goes only
// to the session's homeserver, in the Authorization header; the body streams both ways.

export interface ApiField {
  key: string;
  value: string | number | boolean | null;
}

export interface ApiInput {
  profile: string;
  method: string;
  path: string;
  fields: ApiField[];
  headers: [string, string][];
  /** A body sent as is: a replayable buffer, or a stream factory (`--input FILE|-`). */
  input?: { body: Buffer | (() => NodeJS.ReadableStream); replayable: boolean; length?: number };
}

export interface ApiResponse {
  /** The URL requested (on the session's homeserver). */
  url: string;
  status: number;
  statusText: string;
  headers: Record<string, string | string[] | undefined>;
  body: StreamResponse['body'];
}

const CLIENT_V3 = '/_matrix/client/v3/';
const MIN_VALID_MS = 60_000;
const OWNED_HEADERS = new Set(['authorization', 'host', 'content-length', 'transfer-encoding', 'connection', 'upgrade', 'te', 'keep-alive', 'proxy-authorization', 'trailer']);

/** Checks PATH and builds the full URL on the session's homeserver (contract: `api`). */
export function resolveApiPath(path: string, session: Pick<LoadedSession['record'], 'homeserver' | 'userId' | 'deviceId'>): URL {
  if (/^[a-z][a-z0-9+.-]*:/i.test(path) || path.startsWith('//')) {
    throw usageError('mxs api takes a path on the session\'s homeserver, not a URL: the token only ever goes there.', 'Give a path such as account/whoami or /_matrix/client/v3/account/whoami.');
  }
  if (/[\x00-\x20\x7f]/.test(path)) throw usageError('The path contains spaces or control characters.', 'Percent-encode them (e.g. %20).');
  const [rawPath, query = ''] = splitOnce(path, '?');
  const segments = rawPath!.split('/');
  if (segments.some((s) => /^(\.|%2e){1,2}$/i.test(s))) throw usageError('The path contains "." or ".." segments.', 'Give the path the server expects, without dot segments.');
  const own = (v: string | null, name: string) => {
    if (v === null) throw usageError(`{${name}} has no value: this session (client credentials) belongs to no user or device.`, `Write the ${name === 'userId' ? 'user ID' : 'device ID'} into the path.`);
    return encodeURIComponent(v);
  };
  const filled = rawPath!.replace(/\{userId\}/g, () => own(session.userId, 'userId')).replace(/\{deviceId\}/g, () => own(session.deviceId, 'deviceId'));
  const absolute = filled.startsWith('/_matrix/') || filled.startsWith('/_synapse/') ? filled : CLIENT_V3 + filled.replace(/^\/+/, '');
  const url = new URL(session.homeserver);
  url.pathname = url.pathname.replace(/\/+$/, '') + absolute;
  url.search = query;
  if (url.origin !== new URL(session.homeserver).origin) throw usageError('The path leads off the session\'s homeserver.', 'Give a path on the homeserver.');
  return url;
}

function splitOnce(s: string, sep: string): [string, string?] {
  const i = s.indexOf(sep);
  return i < 0 ? [s] : [s.slice(0, i), s.slice(i + 1)];
}

/** `-H 'Name: value'`: a header mxs does not own, without CR/LF. */
export function parseHeader(raw: string): [string, string] {
  const i = raw.indexOf(':');
  const name = i < 0 ? '' : raw.slice(0, i).trim();
  const value = i < 0 ? '' : raw.slice(i + 1).trim();
  if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) throw usageError(`Invalid header "${raw.slice(0, 60)}": expected 'Name: value'.`, "For example: -H 'Content-Type: image/png'");
  if (/[\x00-\x08\x0a-\x1f\x7f]/.test(value)) throw usageError(`The value of header ${name} contains control characters (CR/LF are never sent).`, 'Give a value on one line.');
  if (OWNED_HEADERS.has(name.toLowerCase())) throw usageError(`mxs sets the ${name} header itself.`, name.toLowerCase() === 'authorization' ? 'The session\'s token is sent for you.' : 'Leave it out.');
  return [name, value];
}

/** `-f key=value` (string) and `-F key=value` (typed: numbers, true, false, null; @file is read by the command). */
export function parseField(raw: string): { key: string; value: string } {
  const i = raw.indexOf('=');
  if (i <= 0) throw usageError(`Field "${raw.slice(0, 60)}" has no key=value.`, 'For example: -f name=value, or -F limit=10');
  return { key: raw.slice(0, i), value: raw.slice(i + 1) };
}

export function typedValue(value: string): string | number | boolean | null {
  if (value === 'true') return true;
  if (value === 'false') return false;
  if (value === 'null') return null;
  if (/^-?(0|[1-9]\d{0,15})$/.test(value)) return Number(value);
  return value;
}

export function defaultMethod(input: Pick<ApiInput, 'fields' | 'input'>): string {
  return input.fields.length > 0 || input.input ? 'POST' : 'GET';
}

/** Sends the request with a fresh token; a 401 M_UNKNOWN_TOKEN refreshes once and retries once (when the body can be sent again). */
export async function apiRequest(input: ApiInput, deps: Deps): Promise<ApiResponse> {
  const method = input.method.toUpperCase();
  const inQuery = method === 'GET' || method === 'DELETE' || method === 'HEAD' || input.input !== undefined;
  let attempts = 0;
  const { value } = await withAccessToken(input.profile, deps, refreshWhenBelow(MIN_VALID_MS), async (s) => {
    attempts++;
    if (attempts > 1 && input.input && !input.input.replayable) {
      throw new MxsError({ code: 'M_UNKNOWN_TOKEN', message: 'The server refused the access token and the body from standard input cannot be sent again.', hint: 'Retry the command (the token has been refreshed).', kind: 'auth', status: 401 });
    }
    const url = resolveApiPath(input.path, s.record);
    const headers: Record<string, string> = { accept: 'application/json' };
    let body: string | Buffer | (() => NodeJS.ReadableStream) | undefined;
    if (inQuery) {
      for (const f of input.fields) url.searchParams.append(f.key, f.value === null ? 'null' : String(f.value));
    } else if (input.fields.length > 0) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(Object.fromEntries(input.fields.map((f) => [f.key, f.value])));
    }
    if (input.input) {
      headers['content-type'] = 'application/json';
      body = input.input.body;
      if (input.input.length !== undefined) headers['content-length'] = String(input.input.length);
    }
    for (const [k, v] of input.headers) headers[k.toLowerCase()] = v;
    const retry = (method === 'GET' || method === 'PUT' || method === 'DELETE' || method === 'HEAD') && (!input.input || input.input.replayable);
    const res = await openStream(deps.http, { method, url: url.toString(), accessToken: s.secret.accessToken, headers, body, retry });
    if (res.status === 401) {
      // Read the (small) error to see whether the token died; either way the caller gets the answer.
      const text = await res.body.text();
      if (refusesToken(res.status, text)) throw new MxsError({ code: 'M_UNKNOWN_TOKEN', message: `${url.host}: the access token was refused (HTTP 401 M_UNKNOWN_TOKEN).`, kind: 'auth', status: 401 });
      return { ...res, url: url.toString(), body: replay(text) };
    }
    return { ...res, url: url.toString() };
  });
  return value;
}

/** A body already read, handed on as a stream again. */
function replay(text: string): StreamResponse['body'] {
  const r = Readable.from([Buffer.from(text)]) as unknown as StreamResponse['body'];
  r.text = async () => text;
  return r;
}

/** The error an HTTP error answer becomes: 4xx → exit 7 (the body was printed), 5xx and 429 (after retries) → exit 3. */
export function httpError(status: number, text: string | undefined, host: string): MxsError {
  // Not JSON (a proxy's page): the body on stdout says it all.
  const { errcode, serverMessage } = matrixErrorFields(text);
  const server = retryableStatus(status);
  return new MxsError({
    code: errcode ?? (server ? 'network' : 'http_error'),
    message: `${host} answered HTTP ${status}${errcode ? ` ${errcode}` : ''}${serverMessage ? `: ${serverMessage}` : ''}.`,
    hint: server ? 'Retry later; --verbose shows the exchange.' : 'The response body is on stdout.',
    kind: server ? 'network' : 'http',
    status,
    detail: serverMessage,
    retryable: server,
  });
}

/** `--paginate`: the token for the next page and the query parameter it goes back in. */
export function nextPage(path: string, page: unknown): { param: string; token: string } | undefined {
  if (typeof page !== 'object' || page === null) return undefined;
  const p = page as Record<string, unknown>;
  // /messages pages with `end` (omitted on the last page), the other listings with next_batch/next_token.
  const messages = endsWithSegment(path, 'messages');
  const token = typeof p.next_batch === 'string' ? p.next_batch : typeof p.next_token === 'string' ? p.next_token : messages && typeof p.end === 'string' ? p.end : undefined;
  if (!token) return undefined;
  return { param: endsWithSegment(path, 'publicRooms') ? 'since' : 'from', token };
}

/** Whether PATH (as typed: relative or not, with a query or not) names an endpoint whose last segment is `segment`. */
function endsWithSegment(path: string, segment: string): boolean {
  const bare = path.split('?', 1)[0]!.replace(/\/+$/, '');
  return bare === segment || bare.endsWith(`/${segment}`);
}

/** Pages are parsed, so they are bounded (a single page of a Matrix listing is far smaller). */
const MAX_PAGE_BYTES = 64 * 1024 * 1024;
const MAX_PAGES = 10_000;

export async function readCappedText(body: StreamResponse['body'], cap = MAX_PAGE_BYTES): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > cap) {
      body.destroy();
      throw badResponse(`The response is larger than ${Math.round(cap / 1024 / 1024)} MiB; without --json or --paginate it would stream to stdout.`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * `--paginate`: repeats a GET while the answer carries `next_batch` or `next_token`, passing it back as
 * `from` (`since` for /publicRooms). Yields each page's status and text; stops after an error page.
 */
export async function* apiPages(input: ApiInput, deps: Deps): AsyncGenerator<{ status: number; text: string; url: string }> {
  if (input.method.toUpperCase() !== 'GET') throw usageError('--paginate works with GET requests only.', 'Drop -X, fields that force POST, or --paginate.');
  let path = input.path;
  const seen = new Set<string>();
  for (let n = 0; n < MAX_PAGES; n++) {
    const res = await apiRequest({ ...input, path }, deps);
    const text = await readCappedText(res.body);
    yield { status: res.status, text, url: res.url };
    if (res.status < 200 || res.status >= 300) return;
    let page: unknown;
    try {
      page = JSON.parse(text);
    } catch {
      return;
    }
    const next = nextPage(input.path, page);
    if (!next || seen.has(next.token)) return;
    seen.add(next.token);
    const [base, query = ''] = splitOnce(input.path, '?');
    const params = new URLSearchParams(query);
    params.set(next.param, next.token);
    path = `${base}?${params.toString()}`;
  }
}
