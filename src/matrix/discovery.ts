import { MxsError, Exit, usageError } from '../errors.js';
import { isLoopbackHost } from '../http/loopback.js';
import { requestJson, type HttpDeps } from './http.js';

// Client-server API §3.2 "Server Discovery": a server name resolves through
// https://<name>/.well-known/matrix/client; the result is validated with /versions.

/** The server as typed, for messages: never its user:password@ part. */
export function withoutUserinfo(raw: string): string {
  return raw.replace(/^([a-z][a-z0-9+.-]*:\/\/)?[^@/?#]*@/i, '$1');
}

/** Enforces the contract's rule: http:// only to loopback unless --insecure. Returns the normalised base URL. */
export function checkBaseUrl(raw: string, insecure: boolean): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw usageError(`"${withoutUserinfo(raw)}" is not a valid URL.`, 'Give a server name (example.org) or a URL (https://matrix.example.org).');
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw usageError(`Unsupported URL scheme "${url.protocol}" in ${withoutUserinfo(raw)}.`, 'Use an https:// URL.');
  }
  if (url.username || url.password) throw usageError('Credentials in the server URL are not accepted (and were not sent anywhere).', 'Give the URL without user:password@.');
  if (url.protocol === 'http:' && !insecure && !isLoopbackHost(url.hostname)) {
    throw usageError(
      `Refusing plain http:// to ${url.host}: tokens would cross the network unencrypted.`,
      'Use https://, or pass --insecure if you really mean it.',
    );
  }
  url.search = '';
  url.hash = '';
  return url.toString().replace(/\/+$/, '');
}

export function looksLikeUrl(server: string): boolean {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(server);
}

export async function resolveHomeserver(server: string, insecure: boolean, deps: HttpDeps): Promise<string> {
  const input = server.trim();
  if (input === '') throw usageError('No server given.', 'Run: mxs login example.org');
  let baseUrl: string;
  if (looksLikeUrl(input)) {
    baseUrl = checkBaseUrl(input, insecure);
  } else {
    if (!/^[A-Za-z0-9.-]+(:\d{1,5})?$/.test(input) && !/^\[[0-9a-fA-F:.]+\](:\d{1,5})?$/.test(input)) {
      if (input.includes('@')) throw usageError('Credentials in the server name are not accepted (and were not sent anywhere).', 'Give the server without user:password@.');
      throw usageError(`"${input}" is neither a server name nor a URL.`, 'Give a server name (example.org) or a URL (https://matrix.example.org).');
    }
    baseUrl = await wellKnown(input, insecure, deps);
  }
  await confirmMatrix(baseUrl, deps);
  return baseUrl;
}

async function wellKnown(serverName: string, insecure: boolean, deps: HttpDeps): Promise<string> {
  const url = `https://${serverName}/.well-known/matrix/client`;
  try {
    const { body } = await requestJson(deps, { method: 'GET', url });
    const hs = body['m.homeserver'] as { base_url?: unknown } | undefined;
    if (typeof hs !== 'object' || hs === null || typeof hs.base_url !== 'string' || hs.base_url === '') {
      throw new MxsError({
        code: 'bad_response',
        message: `${url} has no valid "m.homeserver.base_url".`,
        hint: `Fix the server's .well-known file, or give the homeserver URL directly: mxs login https://matrix.${serverName}`,
        exitCode: Exit.network,
      });
    }
    return checkBaseUrl(hs.base_url, insecure);
  } catch (err) {
    const e = err as MxsError;
    // §3.2: a 404 (no .well-known) means "use the server name itself".
    if (e.status === 404) return `https://${serverName}`;
    if (e.code === 'bad_response' && !e.message.includes('m.homeserver')) {
      throw e.with({
        message: `The .well-known file of ${serverName} is malformed: ${e.message}`,
        hint: `Fix ${url}, or give the homeserver URL directly (mxs login https://…).`,
      });
    }
    throw e;
  }
}

async function confirmMatrix(baseUrl: string, deps: HttpDeps): Promise<void> {
  const notMatrix = (why: string) =>
    new MxsError({
      code: 'bad_response',
      message: `${baseUrl} does not look like a Matrix homeserver (${why}).`,
      hint: 'Check the server name or URL.',
      exitCode: Exit.network,
    });
  let body: Record<string, unknown>;
  try {
    ({ body } = await requestJson(deps, { method: 'GET', url: `${baseUrl}/_matrix/client/versions` }));
  } catch (err) {
    const e = err as MxsError;
    if (e.code === 'network' || e.code === 'timeout') throw e;
    throw notMatrix(e.status ? `/versions answered HTTP ${e.status}` : e.message);
  }
  if (!Array.isArray(body.versions) || !body.versions.every((v) => typeof v === 'string')) {
    throw notMatrix('/_matrix/client/versions has no "versions" list');
  }
}
