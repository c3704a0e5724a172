import { formatDuration } from '../duration.js';
import type { LoginResult } from '../services/login.js';
import type { StatusReport } from '../services/status.js';
import type { RefreshResult } from '../services/tokens.js';
import type { WhoamiReport } from '../services/whoami.js';
import { printable } from '../printable.js';
import { profileFlag, type HintView } from './hints.js';
import type { Colors } from './output.js';

/** Below this share of its lifetime, a countdown turns yellow. */
const WARN_FRACTION = 0.2;

export function clockTime(iso: string): string {
  return `${new Date(iso).toISOString().slice(11, 19)} UTC`;
}

/** `expires in 4m 12s (21:03:12 UTC)`: green, yellow under 20% of the lifetime, red when expired. */
export function countdown(issuedAt: string | null, expiresAt: string | null, now: number, c: Colors): string {
  if (expiresAt === null) return c.green('does not expire');
  const left = Date.parse(expiresAt) - now;
  // Whole seconds, so a countdown never switches units below one second (1s, then 1s, not 466ms).
  if (left <= 0) return c.red(`expired ${formatDuration(Math.max(1000, Math.floor(-left / 1000) * 1000))} ago (${clockTime(expiresAt)})`);
  const lifetime = issuedAt ? Date.parse(expiresAt) - Date.parse(issuedAt) : 0;
  const text = `expires in ${formatDuration(Math.ceil(left / 1000) * 1000)} (${clockTime(expiresAt)})`;
  return lifetime > 0 && left < lifetime * WARN_FRACTION ? c.yellow(text) : c.green(text);
}

export function skewLine(skewMs: number | null): string[] {
  if (skewMs === null) return [];
  const dir = skewMs > 0 ? 'behind' : 'ahead of';
  return [`Clock:     this machine's clock is ${formatDuration(skewMs)} ${dir} the server's; expiry times are computed locally.`];
}

/**
 * `status --short`, for shell prompts: `@alice:example.org 4m12s`, `@alice:example.org expired`, the user
 * alone when the token never expires; null (print nothing at all) when not logged in.
 */
export function shortStatusLine(r: StatusReport, now: number, c: Colors): string | null {
  const s = r.status;
  if (!s.loggedIn) return null;
  const user = printable(s.userId!);
  if (s.expiresAt === null) return user;
  if (s.expired) return `${user} ${c.red('expired')}`;
  const left = Date.parse(s.expiresAt) - now;
  const text = formatDuration(Math.ceil(left / 1000) * 1000).replace(' ', '');
  const lifetime = s.issuedAt ? Date.parse(s.expiresAt) - Date.parse(s.issuedAt) : 0;
  return `${user} ${lifetime > 0 && left < lifetime * WARN_FRACTION ? c.yellow(text) : c.green(text)}`;
}

/** The lines of `mxs status`; the commands it suggests name --profile as hints do (view). */
export function statusLines(r: StatusReport, now: number, c: Colors, view: HintView): string[] {
  const s = r.status;
  if (!s.loggedIn) return [`Profile:   ${s.profile}`, `Session:   ${c.red('not logged in')}`];
  return [
    `Profile:   ${s.profile}`,
    s.userId === null ? 'User:      none (client credentials: the client\'s own session)' : `User:      ${printable(s.userId)} (device ${printable(s.deviceId ?? '?')})`,
    `Server:    ${printable(s.homeserver!)}`,
    `Login:     ${s.method === 'oauth' ? `OAuth 2.0 (issuer ${printable(s.issuer ?? '?')})` : s.method === 'client_credentials' ? `OAuth 2.0 client credentials (issuer ${printable(s.issuer ?? '?')})` : s.method === 'token' ? 'login token' : 'password'}`,
    ...(s.scopes ? [`Scopes:    ${s.scopes.map((x) => printable(x)).join(' ')}`] : []),
    ...(r.accountManagementUri ? [`Account:   ${printable(r.accountManagementUri)}`] : []),
    `Token:     ${countdown(s.issuedAt, s.expiresAt, now, c)}`,
    `Refresh:   ${refreshState(s, c, view)}`,
    `Secrets:   ${s.storage === 'keychain' ? 'OS keychain' : 'file (0600)'}`,
    ...skewLine(r.clockSkewMs),
  ];
}

function refreshState(s: StatusReport['status'], c: Colors, view: HintView): string {
  const p = profileFlag(s.profile, view);
  if (s.expiresAt === null) return 'not needed (the token does not expire)';
  if (!s.refreshable) return s.expired ? c.red(`not possible: log in again (mxs login${p})`) : `not possible: log in again when it expires (mxs login${p})`;
  // Nothing refreshes in the background: say which commands do it.
  return s.expired ? c.yellow(`possible: mxs refresh${p} (or mxs token${p}, which refreshes first)`) : `on use: mxs token, whoami and refresh renew it (refresh token stored)`;
}

export function loginLine(r: LoginResult, now: number, c: Colors): string {
  const expiry = countdown(r.expiresAt ? new Date(now).toISOString() : null, r.expiresAt, now, c);
  const who = r.userId === null ? 'as the OAuth client itself (client credentials)' : `as ${printable(r.userId)} (device ${printable(r.deviceId ?? '?')})${r.method === 'oauth' ? ' with OAuth 2.0' : ''}`;
  return `Logged in to ${printable(r.homeserver)} ${who}; token ${expiry}${r.expiresAt && !r.refreshable ? ', no refresh token' : ''}. Secrets in ${r.storage === 'keychain' ? 'the OS keychain' : 'a 0600 file'}.`;
}

export function refreshLine(r: RefreshResult, now: number, c: Colors): string {
  return `Refreshed profile ${r.profile}: token ${countdown(new Date(now).toISOString(), r.expiresAt, now, c)}${r.refreshTokenRotated ? ' (refresh token rotated)' : ''}.`;
}

export function whoamiLines(r: WhoamiReport): string[] {
  const w = r.result;
  return [
    `${printable(w.userId)}${w.deviceId ? ` (device ${printable(w.deviceId)})` : ''}${w.isGuest ? ' [guest]' : ''} on ${printable(w.homeserver)}${w.refreshed ? ' (token refreshed first)' : ''}`,
    ...skewLine(r.clockSkewMs),
  ];
}
