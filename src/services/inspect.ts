import { MxsError, usageError } from '../errors.js';
import { whoami } from '../matrix/client.js';
import { resolveHomeserver } from '../matrix/discovery.js';
import { isRefreshKind, tokenFingerprint, tokenFormat, type TokenFormat } from '../matrix/token-formats.js';
import type { Deps } from './deps.js';
import { isTokenRefusal } from './replay.js';
import { loadSession } from './session.js';

export type TokenSource = 'stdin' | 'access' | 'refresh';

export interface GivenToken {
  source: TokenSource;
  token: string;
}

/** What the server said about a token; absent without --online, null where it was not asked. */
export interface TokenOwner {
  userId: string | null;
  deviceId: string | null;
  /** null: not asked (a refresh token or a proxy token is never sent to whoami). */
  valid: boolean | null;
}

export type TokenReport = { source: TokenSource } & TokenFormat & { fingerprint: string } & Partial<TokenOwner>;

export interface InspectReport {
  tokens: TokenReport[];
  /** The homeserver asked (--online), for a person's text; not part of the --json shape. */
  asked: string | null;
}

/** Where --online asks: a base URL (a stored session's) or a server name to resolve (--server). */
export type Online = { homeserver: string } | { server: string; insecure: boolean };

const MAX_TOKEN = 16 * 1024;

/**
 * The one token standard input held, or a usage error that never quotes it: the input may be a
 * secret, and even a malformed one (a pasted line of a config file) must not be shown.
 */
export function tokenFromInput(text: string): string {
  const lines = text.replace(/(\r?\n)+$/, '').split(/\r?\n/);
  if (lines.length > 1) {
    throw usageError(`Standard input holds ${lines.length} lines; mxs inspect reads one token.`, "Pipe the token alone, e.g.: printf '%s\\n' \"$TOKEN\" | mxs inspect");
  }
  const token = lines[0] ?? '';
  if (token === '') throw noToken();
  const what = token.length > MAX_TOKEN
    ? `is longer than ${MAX_TOKEN} characters`
    : /[\x00-\x1f\x7f]/.test(token)
      ? 'contains control characters'
      : /\s/.test(token)
        ? 'contains spaces'
        : /[^\x21-\x7e]/.test(token)
          ? 'contains non-ASCII characters'
          : null;
  if (what) throw usageError(`The text on standard input ${what}, so it is not a token; it is not shown here.`, "Pipe the token alone, e.g.: printf '%s\\n' \"$TOKEN\" | mxs inspect");
  return token;
}

export function noToken(): MxsError {
  return usageError('Standard input held no token.', "Pipe one in, e.g.: printf '%s\\n' \"$TOKEN\" | mxs inspect (or mxs inspect --stored for the profile's own)");
}

/** The profile's stored access and refresh tokens (a keychain read; nothing is refreshed). */
export async function storedTokens(profile: string, deps: Deps): Promise<{ tokens: GivenToken[]; homeserver: string }> {
  const { record, secret } = await loadSession(profile, deps);
  const tokens: GivenToken[] = [{ source: 'access', token: secret.accessToken }];
  if (secret.refreshToken !== null) tokens.push({ source: 'refresh', token: secret.refreshToken });
  return { tokens, homeserver: record.homeserver };
}

/** `inspect`: what each token is, from the token alone; with `online`, whom the homeserver says it belongs to. */
export async function inspectService(given: GivenToken[], online: Online | null, deps: Deps): Promise<InspectReport> {
  for (const { token } of given) deps.rememberSecret(token);
  const tokens: TokenReport[] = given.map(({ source, token }) => ({ source, ...tokenFormat(token), fingerprint: tokenFingerprint(token) }));
  if (!online) return { tokens, asked: null };
  const homeserver = 'homeserver' in online ? online.homeserver : await resolveHomeserver(online.server, online.insecure, deps.http);
  for (const [i, report] of tokens.entries()) Object.assign(report, await owner(homeserver, given[i]!.token, report, deps));
  return { tokens, asked: homeserver };
}

async function owner(homeserver: string, token: string, format: TokenReport, deps: Deps): Promise<TokenOwner> {
  // A refresh token (stored as one, or by its format) is checked only by using it, which would rotate
  // it; a proxy token is only good at its proxy and must never reach a homeserver.
  if (format.source === 'refresh' || isRefreshKind(format.kind) || format.kind === 'mxs_proxy') return { userId: null, deviceId: null, valid: null };
  try {
    const who = await whoami(homeserver, token, deps.http);
    return { userId: who.userId, deviceId: who.deviceId ?? null, valid: true };
  } catch (err) {
    // Unknown, expired, revoked: a finding about the token, not a failure to look at it.
    if (err instanceof MxsError && isTokenRefusal(err.status, err.code)) return { userId: null, deviceId: null, valid: false };
    throw err;
  }
}
