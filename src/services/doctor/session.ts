import { loginHint, MxsError, type NextStep } from '../../errors.js';
import { whoami } from '../../matrix/client.js';
import { requestJson } from '../../matrix/http.js';
import type { SessionRecord, SessionSecret } from '../../model.js';
import { printable } from '../../printable.js';
import type { Deps } from '../deps.js';
import { ensureFresh, remainingMs } from '../session.js';
import { failure, failureOf, formatMs, ok, skipped, warning, type Finding } from './types.js';

// The checks that use the session's tokens: the access token is accepted and is this session's
// (token), a refresh token is there to renew it (refresh), and the device still exists (device).
// Read-only: no refresh, no replay after a 401; only --refresh (refreshNow) goes through the
// session core and may rotate the tokens.

const relogin = (r: SessionRecord): NextStep => loginHint(r.profile, r.homeserver);

function timeLeft(secret: SessionSecret, now: number): string {
  const left = remainingMs(secret.expiresAt, now);
  if (left === null) return 'it does not expire';
  return left > 0 ? `${formatMs(left)} left` : `expired ${formatMs(-left)} ago`;
}

/** `token`: /account/whoami accepts the access token, for the stored user and device; time left. */
export async function checkToken(record: SessionRecord, secret: SessionSecret, deps: Pick<Deps, 'http' | 'now'>): Promise<Finding> {
  const left = timeLeft(secret, deps.now());
  const expired = (remainingMs(secret.expiresAt, deps.now()) ?? 1) <= 0;
  let who;
  try {
    who = await whoami(record.homeserver, secret.accessToken, deps.http);
  } catch (err) {
    const e = err as MxsError;
    if (e instanceof MxsError && e.kind === 'auth' && (e.code === 'M_UNKNOWN_TOKEN' || e.status === 401)) {
      if (expired && secret.refreshToken !== null && record.refreshable) {
        return warning('token', `Expired (${left}); the refresh token can renew it.`, { next: 'refresh', profile: record.profile });
      }
      const server = e.detail ? `: ${printable(e.detail, { maxChars: 200 })}` : '';
      return failure('token', 'auth', `The server refused the access token (${e.code}${server}): the session was logged out, or its device deleted.`, relogin(record));
    }
    return failureOf('token', err, 'network', 'Check the network and that the server is up; --verbose shows the exchange.');
  }
  if (who.userId !== record.userId) {
    return failure('token', 'auth', `The access token belongs to ${printable(who.userId, { maxChars: 200 })}, not to the stored ${record.userId}.`, relogin(record));
  }
  if (who.deviceId !== undefined && who.deviceId !== record.deviceId) {
    return failure('token', 'auth', `The access token is for device ${printable(who.deviceId, { maxChars: 100 })}, not the stored ${record.deviceId}.`, relogin(record));
  }
  if (expired) return ok('token', `Accepted for ${record.userId} on device ${record.deviceId}, though it was stored as expired (${left}).`);
  return ok('token', `Accepted for ${record.userId} on device ${record.deviceId}; ${left}.`);
}

/**
 * `refresh`: a refresh token is stored (and the server has not refused it before). For OAuth, the
 * client's registration cannot be checked without a side effect (RFC 7592 needs a registration
 * token mxs does not keep; introspection needs client credentials): the detail says which client.
 */
export function checkRefresh(record: SessionRecord, secret: SessionSecret, now: number): Finding {
  const client = record.auth.type === 'oauth' ? ` (OAuth client ${record.auth.clientId}; its registration is not checkable without side effects)` : '';
  if (secret.refreshToken === null) {
    if (secret.expiresAt === null) return ok('refresh', 'None stored, none needed: the access token does not expire.');
    return warning('refresh', `No refresh token: the session ends when the access token does (${timeLeft(secret, now)}).`, ['Log in again for a refreshable session: ', relogin(record)]);
  }
  if (!record.refreshable) {
    return failure('refresh', 'auth', `Stored, but the server refused it earlier: the session has ended${client}.`, relogin(record));
  }
  return ok('refresh', `Stored${client}.`);
}

/** `--refresh`: one refresh through the session core (under the lock, stored before use), reported as the refresh check. */
export async function refreshNow(record: SessionRecord, deps: Deps): Promise<Finding> {
  try {
    const fresh = await ensureFresh(record.profile, deps, () => true, undefined);
    const how = fresh.rotated ? 'refreshed, refresh token rotated' : 'refreshed';
    return ok('refresh', `Tried with --refresh: ${how}; the new access token: ${timeLeft(fresh.session.secret, deps.now())}.`);
  } catch (err) {
    return failureOf('refresh', err, 'network', relogin(record));
  }
}

/** `device`: GET /devices/{deviceId} with the session's token: the device still exists. */
export async function checkDevice(record: SessionRecord, secret: SessionSecret, deps: Pick<Deps, 'http'>): Promise<Finding> {
  if (record.deviceId === null) return skipped('device', 'Not applicable: a client-credentials session has no device.');
  const url = `${record.homeserver}/_matrix/client/v3/devices/${encodeURIComponent(record.deviceId)}`;
  try {
    await requestJson(deps.http, { method: 'GET', url, accessToken: secret.accessToken, retry: false });
  } catch (err) {
    const e = err as MxsError;
    if (e instanceof MxsError && e.status === 404) {
      return failure('device', 'auth', `Device ${record.deviceId} no longer exists on the server (deleted from another session).`, relogin(record));
    }
    return failureOf('device', err, 'network', 'Check the network and that the server is up; --verbose shows the exchange.');
  }
  return ok('device', `Device ${record.deviceId} exists.`);
}
