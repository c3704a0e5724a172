// The session model shared by services and stores.

export type StorageKind = 'keychain' | 'file';
export type StoragePreference = StorageKind | 'auto';

/** Non-secret facts about a session, kept in the sessions file so `status` needs no keychain. */
export interface SessionRecord {
  profile: string;
  homeserver: string;
  userId: string;
  deviceId: string;
  /** ISO-8601: when the request that produced the current access token was sent. */
  issuedAt: string;
  /** ISO-8601, or null when the access token does not expire. */
  expiresAt: string | null;
  refreshable: boolean;
  storage: StorageKind;
  /** The refresh endpoint that worked last, once a fallback was needed. */
  refreshPath?: string;
  /** Set when the user allowed plain http:// to a non-loopback host at login. */
  insecure?: boolean;
  /** Server Date minus local clock, last measured, in ms (only kept when notable). */
  clockSkewMs?: number | null;
}

/** The secret half of a session: one keychain item (or 0600 file) per profile. */
export interface SessionSecret {
  accessToken: string;
  refreshToken: string | null;
  issuedAt: string;
  expiresAt: string | null;
}
