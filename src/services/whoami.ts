import { whoami } from '../matrix/client.js';
import { resolveHomeserver } from '../matrix/discovery.js';
import { notableSkew, type Deps } from './deps.js';
import { refreshWhenExpired, withAccessToken } from './session.js';

export interface WhoamiResult {
  profile: string | null;
  homeserver: string;
  userId: string;
  deviceId: string | null;
  isGuest: boolean;
  refreshed: boolean;
}

export interface WhoamiReport {
  result: WhoamiResult;
  clockSkewMs: number | null;
}

/** `whoami`: asks the server about the stored token, refreshing first only when it has expired. */
export async function whoamiService(profile: string, deps: Deps): Promise<WhoamiReport> {
  const { value, session, refreshed } = await withAccessToken(profile, deps, refreshWhenExpired, (s) =>
    whoami(s.record.homeserver, s.secret.accessToken, deps.http),
  );
  return {
    result: { profile, homeserver: session.record.homeserver, userId: value.userId, deviceId: value.deviceId ?? null, isGuest: value.isGuest, refreshed },
    clockSkewMs: notableSkew(deps),
  };
}

/** `whoami --token-stdin`: checks a token given by the user; stores nothing. */
export async function whoamiTokenService(token: string, server: string, insecure: boolean, deps: Deps): Promise<WhoamiReport> {
  deps.rememberSecret(token);
  const homeserver = await resolveHomeserver(server, insecure, deps.http);
  const value = await whoami(homeserver, token, deps.http);
  return {
    result: { profile: null, homeserver, userId: value.userId, deviceId: value.deviceId ?? null, isGuest: value.isGuest, refreshed: false },
    clockSkewMs: notableSkew(deps),
  };
}
