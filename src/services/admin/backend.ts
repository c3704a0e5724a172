// `mxs admin`: one command surface, two back ends behind one interface — the Matrix Authentication
// Service's admin API (`{issuer}/api/admin/v1`, or --admin-api / MXS_ADMIN_API) and Synapse's admin
// API (`/_synapse/admin`). Each back end is a small adapter; the commands and their --json shapes
// see only this interface, so a document is the same shape whichever API answered.

/** Which admin API answered: said on stderr and in every --json document (`api`). */
export type AdminApi = 'mas' | 'synapse';

/** One session of a user, as `admin sessions` lists it (times ISO-8601 UTC, null when unknown). */
export interface AdminSession {
  /** MAS: `oauth2`, `compat`, `browser`, `personal`; Synapse: `device`. */
  kind: 'oauth2' | 'compat' | 'browser' | 'personal' | 'device';
  /** The ID `admin sessions end` takes (MAS: the session's ULID; Synapse: the device ID). */
  id: string;
  deviceId: string | null;
  /** The client's name (MAS: the OAuth client's name or compat device name; Synapse: the device's display name). */
  client: string | null;
  createdAt: string | null;
  lastActiveAt: string | null;
  lastActiveIp: string | null;
  userAgent: string | null;
  finishedAt: string | null;
}

/** A personal access token (MAS personal session) as `admin token list` shows it. */
export interface AdminToken {
  id: string;
  name: string | null;
  createdAt: string | null;
  expiresAt: string | null;
  lastActiveAt: string | null;
  revokedAt: string | null;
}

/** A token just made (`admin token create` / `regenerate`): the one result that carries a token. */
export interface CreatedToken {
  id: string;
  userId: string;
  token: string;
  expiresAt: string | null;
}

export interface AdminBackend {
  readonly api: AdminApi;
  /** `@user:server` for a localpart or full ID; exit 2 when the user does not exist there. */
  resolveUser(user: string): Promise<{ userId: string; adminId: string }>;
  /** Every session of the user, all pages followed, newest activity first. */
  sessions(user: { userId: string; adminId: string }, opts: { active: boolean }): Promise<AdminSession[]>;
  /**
   * Optional: the sessions with these IDs, whoever they belong to, and the IDs no session has (MAS:
   * each kind's `GET …/{id}`). Without it, `admin sessions end ID…` needs `--user` (Synapse's device IDs
   * are per user).
   */
  findSessions?(ids: string[]): Promise<{ found: AdminSession[]; unknown: string[] }>;
  /** Ends the sessions with these IDs (each found by sessions() first: unknown IDs are refused before anything is ended). */
  endSessions(sessions: AdminSession[]): Promise<string[]>;
  createToken(user: { userId: string; adminId: string }, opts: { expiresInMs: number | null; name: string | null }): Promise<CreatedToken>;
  /** MAS only; Synapse has no list (its tokens make no device): undefined there, and the command says so (exit 2). */
  listTokens?(user: { userId: string; adminId: string }): Promise<AdminToken[]>;
  revokeToken?(id: string): Promise<void>;
  regenerateToken?(id: string, opts: { expiresInMs: number | null }): Promise<CreatedToken>;
}
