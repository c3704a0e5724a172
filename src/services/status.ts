import { Exit, MxsError } from '../errors.js';
import type { LoginMethodName, SessionRecord, StorageKind } from '../model.js';
import type { Deps } from './deps.js';
import { remainingMs } from './session.js';

export interface StatusResult {
  profile: string;
  loggedIn: boolean;
  homeserver: string | null;
  userId: string | null;
  deviceId: string | null;
  method: LoginMethodName | null;
  issuer: string | null;
  /** The OAuth scopes granted; null when not OAuth or not known (a session an older mxs made). */
  scopes: string[] | null;
  issuedAt: string | null;
  expiresAt: string | null;
  expiresInMs: number | null;
  expired: boolean;
  refreshable: boolean;
  storage: StorageKind | null;
}

export interface StatusReport {
  status: StatusResult;
  /** Contract exit code for this state: 0 fine, 4 not logged in / expired for good, 5 expired but refreshable. */
  exitCode: number;
  clockSkewMs: number | null;
  /** OAuth sessions: where the user manages devices and sessions (MSC4191), when the server says. */
  accountManagementUri: string | null;
}

/** `status` reads the sessions file only: no keychain, no network. */
export async function statusService(profile: string, deps: Pick<Deps, 'sessions' | 'now'>): Promise<StatusReport> {
  return describe(profile, await deps.sessions.read(profile), deps.now());
}

/** Every stored profile; one that cannot be read (exit 6: corrupt, from a newer mxs) is named, not fatal. */
export async function statusAllService(deps: Pick<Deps, 'sessions' | 'now'>): Promise<{ reports: StatusReport[]; unreadable: { profile: string; error: MxsError }[] }> {
  const reports: StatusReport[] = [];
  const unreadable: { profile: string; error: MxsError }[] = [];
  for (const profile of await deps.sessions.profiles()) {
    try {
      reports.push(await statusService(profile, deps));
    } catch (err) {
      if (!(err instanceof MxsError) || err.exitCode !== Exit.storage) throw err;
      unreadable.push({ profile, error: err });
    }
  }
  return { reports, unreadable };
}

export function describe(profile: string, record: SessionRecord | null, now: number): StatusReport {
  if (!record) {
    return {
      status: {
        profile,
        loggedIn: false,
        homeserver: null,
        userId: null,
        deviceId: null,
        method: null,
        issuer: null,
        scopes: null,
        issuedAt: null,
        expiresAt: null,
        expiresInMs: null,
        expired: false,
        refreshable: false,
        storage: null,
      },
      exitCode: Exit.auth,
      clockSkewMs: null,
      accountManagementUri: null,
    };
  }
  const left = remainingMs(record.expiresAt, now);
  const expired = left !== null && left <= 0;
  return {
    status: {
      profile,
      loggedIn: true,
      homeserver: record.homeserver,
      userId: record.userId,
      deviceId: record.deviceId,
      method: record.method,
      issuer: record.auth.type === 'oauth' ? record.auth.issuer : null,
      scopes: record.auth.type === 'oauth' ? (record.auth.scopes ?? null) : null,
      issuedAt: record.issuedAt,
      expiresAt: record.expiresAt,
      expiresInMs: left,
      expired,
      refreshable: record.refreshable,
      storage: record.storage,
    },
    exitCode: !expired ? Exit.ok : record.refreshable ? Exit.expired : Exit.auth,
    clockSkewMs: record.clockSkewMs ?? null,
    accountManagementUri: record.auth.type === 'oauth' ? (record.auth.accountManagementUri ?? null) : null,
  };
}
