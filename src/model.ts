// The session model shared by services and stores.

export type StorageKind = 'keychain' | 'file';
export type StoragePreference = StorageKind | 'auto';

export type LoginMethodName = 'password' | 'token' | 'oauth' | 'client_credentials';

/** How a session authenticates and refreshes: the Matrix API, or OAuth 2.0 with a registered client. */
export type SessionAuth =
  | {
      type: 'matrix';
      /** The refresh endpoint that worked last, once a fallback was needed. */
      refreshPath?: string;
    }
  | {
      type: 'oauth';
      issuer: string;
      clientId: string;
      tokenEndpoint: string;
      revocationEndpoint: string;
      accountManagementUri?: string;
      /**
       * The scopes granted (the token response's `scope`, RFC 6749 §5.1), absent when the server did
       * not say or an older mxs made the session. An optional field: format 2 readers keep it as is.
       */
      scopes?: string[];
      /**
       * `client_credentials`: a confidential client's own session (RFC 6749 §4.4), no user, no device;
       * the stored "refresh token" is the client secret, and refreshing runs the grant again.
       * Absent: a user's session (device or authorization-code grant) that refreshes with its refresh token.
       */
      grant?: 'client_credentials';
      /** With `grant`: how the client authenticates at the token and revocation endpoints. */
      clientAuthMethod?: 'client_secret_basic' | 'client_secret_post';
    };

/** Non-secret facts about a session, kept in the sessions file so `status` needs no keychain. */
export interface SessionRecord {
  profile: string;
  homeserver: string;
  /** null only for a client-credentials session, which belongs to no user and no device. */
  userId: string | null;
  deviceId: string | null;
  /** ISO-8601: when the request that produced the current access token was sent. */
  issuedAt: string;
  /** ISO-8601, or null when the access token does not expire. */
  expiresAt: string | null;
  refreshable: boolean;
  storage: StorageKind;
  method: LoginMethodName;
  auth: SessionAuth;
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

/** What a token endpoint (Matrix `/login`, `/refresh`, or OAuth) granted. */
export interface TokenGrant {
  accessToken: string;
  /** Absent: the server did not rotate, keep the old refresh token. */
  refreshToken?: string;
  /** Absent: the access token does not expire. */
  expiresInMs?: number;
  /** OAuth: the scopes granted (`scope`, space-separated); absent when the server did not say. */
  scope?: string;
  /** When the request was sent: expiry counts from here (contract: never from parse time). */
  sentAt: number;
}
