import { Exit, MxsError, loginHint, notLoggedIn, storageError } from '../errors.js';
import type { SessionRecord, SessionSecret, TokenGrant } from '../model.js';
import { withLock } from '../store/lock.js';
import type { SecretStore } from '../store/secrets.js';
import { notableSkew, type Deps } from './deps.js';
import { isTokenRefusal, sendWithReplay, type Sent, type TokenSource } from './replay.js';
import { strategyFor } from './strategy.js';

export interface LoadedSession {
  record: SessionRecord;
  store: SecretStore;
  secret: SessionSecret;
}

export interface FreshSession {
  session: LoadedSession;
  refreshed: boolean;
  rotated: boolean;
}

/** Decides from the stored secret whether a refresh is due. */
export type RefreshRule = (secret: SessionSecret, now: number) => boolean;

export const iso = (ms: number) => new Date(ms).toISOString();

/**
 * The secret a token grant yields. Expiry counts from when the request was sent (never from when
 * the answer was parsed); a grant without a refresh token keeps the previous one (§5.7.1).
 */
export function secretFromGrant(grant: TokenGrant, previousRefreshToken: string | null): SessionSecret {
  return {
    accessToken: grant.accessToken,
    refreshToken: grant.refreshToken ?? previousRefreshToken,
    issuedAt: iso(grant.sentAt),
    expiresAt: grant.expiresInMs === undefined ? null : iso(grant.sentAt + grant.expiresInMs),
  };
}

export function remainingMs(expiresAt: string | null, now: number): number | null {
  return expiresAt === null ? null : Date.parse(expiresAt) - now;
}

/** Refresh when less than `minValidMs` is left, capped at half the token's lifetime so a short-lived token is not refreshed on every call. */
export function refreshWhenBelow(minValidMs: number): RefreshRule {
  return (s, now) => {
    const left = remainingMs(s.expiresAt, now);
    if (left === null) return false;
    const lifetime = Date.parse(s.expiresAt!) - Date.parse(s.issuedAt);
    return left <= 0 || left < Math.min(minValidMs, Math.max(0, lifetime / 2));
  };
}

export const refreshWhenExpired: RefreshRule = (s, now) => {
  const left = remainingMs(s.expiresAt, now);
  return left !== null && left <= 0;
};

/** Refresh only if the stored access token is still `token`: whoever replaced it already refreshed. */
export const refreshIfStill =
  (token: string): RefreshRule =>
  (s) =>
    s.accessToken === token;

/** Runs `critical` under the profile's lock, with the bounds from deps (see store/lock.ts). */
export function withProfileLock<T>(
  profile: string,
  deps: Deps,
  critical: () => Promise<T>,
  whileWaiting?: () => Promise<T | undefined>,
  waitMs = deps.lock.waitMs,
): Promise<T> {
  return withLock(deps.lock.path(profile), { waitMs }, critical, whileWaiting);
}

export async function loadSession(profile: string, deps: Deps): Promise<LoadedSession> {
  const record = await deps.sessions.read(profile);
  if (!record) throw notLoggedIn(profile);
  const store = deps.secretStores[record.storage];
  const secret = await store.get(record.profile);
  if (!secret) {
    if (store.kind === 'keychain') {
      // libsecret answers a read from a locked collection with "not found", indistinguishable
      // from a deleted item: the session file says it is there, so treat the keychain as unusable.
      throw storageError(
        `The OS keychain returned no tokens for profile "${profile}": it is locked, or the item was deleted.`,
        ['Unlock the keychain and retry; if the item is gone, log in again: ', loginHint(profile, record.homeserver)],
      );
    }
    throw new MxsError({
      code: 'not_logged_in',
      message: `The tokens of profile "${profile}" are missing from ${store.describe(record.profile)}.`,
      hint: loginHint(profile, record.homeserver),
      exitCode: Exit.auth,
    });
  }
  deps.rememberSecret(secret.accessToken, secret.refreshToken);
  if (record.issuedAt !== secret.issuedAt || record.expiresAt !== secret.expiresAt) {
    // A run stopped between storing new tokens and updating the sessions file: the secret is the
    // truth. Not written back here (outside the lock it could overwrite a newer record); the next
    // refresh rewrites the record whole.
    const repaired = { ...record, issuedAt: secret.issuedAt, expiresAt: secret.expiresAt, refreshable: secret.refreshToken !== null };
    return { record: repaired, store, secret };
  }
  return { record, store, secret };
}

/**
 * The refresh transaction: refresh only when `rule` says so, under the per-profile lock,
 * re-reading the store once the lock is held (another process may have refreshed meanwhile).
 * New tokens are stored before anyone uses them; any failure leaves the stored session as it was.
 */
export async function ensureFresh(
  profile: string,
  deps: Deps,
  rule: RefreshRule,
  lifetimeMs?: number,
  /** `mxs refresh` asks explicitly: it tries even a refresh token the server refused before. */
  opts: { evenIfRefused?: boolean } = {},
): Promise<FreshSession> {
  const current = await loadSession(profile, deps);
  if (!rule(current.secret, deps.now())) return { session: current, refreshed: false, rotated: false };
  requireRefreshToken(current, deps.now(), opts.evenIfRefused);
  const unchanged = async (): Promise<FreshSession | undefined> => {
    const s = await loadSession(profile, deps);
    return rule(s.secret, deps.now()) ? undefined : { session: s, refreshed: false, rotated: false };
  };
  return withProfileLock(
    profile,
    deps,
    async () => {
      const locked = await loadSession(profile, deps);
      if (!rule(locked.secret, deps.now())) return { session: locked, refreshed: false, rotated: false };
      return refreshLocked(locked, deps, rule, lifetimeMs, true, opts.evenIfRefused);
    },
    unchanged,
  );
}

function requireRefreshToken(s: LoadedSession, now: number, evenIfRefused = false): void {
  if (s.secret.refreshToken !== null && !s.record.refreshable && !evenIfRefused) {
    // The server refused this refresh token before (the record says so); the token stays stored
    // only for logout. Sending it again would only be refused again.
    throw new MxsError({
      code: 'not_refreshable',
      message: `The session of profile "${s.record.profile}" has ended: the server refused its refresh token earlier.`,
      hint: ['Run: ', loginHint(s.record.profile, s.record.homeserver), ' (or, to try that refresh token once more: ', { next: 'refresh', profile: s.record.profile }, ')'],
      kind: 'auth',
    });
  }
  if (s.secret.refreshToken !== null) return;
  const expired = refreshWhenExpired(s.secret, now);
  throw new MxsError({
    code: expired ? 'M_UNKNOWN_TOKEN' : 'not_refreshable',
    message: expired
      ? `The access token of profile "${s.record.profile}" expired at ${s.secret.expiresAt} and there is no refresh token.`
      : `Profile "${s.record.profile}" has no refresh token, so its access token cannot be refreshed.`,
    hint: loginHint(s.record.profile, s.record.homeserver),
    exitCode: Exit.auth,
  });
}

async function refreshLocked(s: LoadedSession, deps: Deps, rule: RefreshRule, lifetimeMs: number | undefined, mayRetry: boolean, evenIfRefused = false): Promise<FreshSession> {
  requireRefreshToken(s, deps.now(), evenIfRefused);
  const oldRefreshToken = s.secret.refreshToken!;
  let outcome;
  try {
    outcome = await strategyFor(s.record.auth).refresh(s.record, oldRefreshToken, { lifetimeMs }, deps.http);
  } catch (err) {
    const e = err as MxsError;
    if (e.kind !== 'auth') throw e; // network, 5xx, 429, malformed: the stored session stays as it was
    // A peer outside our lock (another machine, an older mxs) may have rotated the tokens: look again first.
    const again = await loadSession(s.record.profile, deps);
    if (again.secret.refreshToken !== oldRefreshToken) {
      if (!rule(again.secret, deps.now())) return { session: again, refreshed: false, rotated: false };
      if (mayRetry) return refreshLocked(again, deps, rule, lifetimeMs, false, evenIfRefused);
    }
    // The refresh token is dead: say so in the sessions file, so that `status` sends the user to
    // `mxs login` (exit 4) rather than to `mxs refresh` again. The secret stays for `logout`.
    await deps.sessions.write({ ...again.record, refreshable: false }).catch(() => {});
    throw e.with({
      message: `The session of profile "${s.record.profile}" has ended: the server refused its refresh token: ${e.detail ?? e.code} (${e.code}).`,
      hint: loginHint(s.record.profile, s.record.homeserver),
      kind: 'auth',
    });
  }
  const grant = outcome.grant;
  deps.rememberSecret(grant.accessToken, grant.refreshToken);
  const secret = secretFromGrant(grant, oldRefreshToken);
  // Store before use: if this throws, the new tokens are never used, and on Matrix the old
  // refresh token stays valid until they are, so the next run can simply refresh again.
  await s.store.set(s.record.profile, secret);
  const record: SessionRecord = {
    ...s.record,
    issuedAt: secret.issuedAt,
    expiresAt: secret.expiresAt,
    refreshable: true,
    auth: outcome.auth,
    clockSkewMs: notableSkew(deps),
  };
  await deps.sessions.write(record);
  return {
    session: { record, store: s.store, secret },
    refreshed: true,
    rotated: grant.refreshToken !== undefined && grant.refreshToken !== oldRefreshToken,
  };
}

/**
 * Runs an authenticated call with a fresh-enough token. Contract: a 401 M_UNKNOWN_TOKEN while a
 * refresh token is stored refreshes once and retries once (sendWithReplay).
 */
export async function withAccessToken<T>(
  profile: string,
  deps: Deps,
  rule: RefreshRule,
  call: (session: LoadedSession) => Promise<T>,
): Promise<{ value: T; session: LoadedSession; refreshed: boolean }> {
  let refreshed = false;
  const source: TokenSource<LoadedSession> = {
    async current() {
      const fresh = await ensureFresh(profile, deps, rule);
      refreshed = fresh.refreshed;
      return fresh.session;
    },
    async afterRejection(refused) {
      if (refused.secret.refreshToken === null) return null;
      const fresh = await ensureFresh(profile, deps, refreshIfStill(refused.secret.accessToken));
      refreshed = true;
      return fresh.session;
    },
  };
  const { answer, credential } = await sendWithReplay(source, async (s): Promise<Sent<{ value: T } | { error: MxsError }>> => {
    try {
      return { answer: { value: await call(s) }, refused: false };
    } catch (err) {
      const e = err as MxsError;
      return { answer: { error: e }, refused: isTokenRefusal(e?.status, e?.code) };
    }
  });
  if ('error' in answer) throw authHint(answer.error, credential);
  await rememberSkew(profile, deps);
  return { value: answer.value, session: credential, refreshed };
}

/**
 * Keeps the record's `clockSkewMs` current after any authenticated call, so that `status` (local state
 * only) reports a skew that `whoami` or `api` saw, and stops reporting one that has been corrected.
 * Best effort: under the profile lock (a concurrent refresh rewrites the same file), re-reading the
 * record there, giving up quietly when the lock is busy or the file cannot be written.
 */
async function rememberSkew(profile: string, deps: Deps): Promise<void> {
  if (deps.clock.skewMs === null) return;
  const skew = notableSkew(deps);
  const differs = (old: number | null) => (old === null || skew === null ? old !== skew : Math.abs(old - skew) > 5000);
  try {
    const record = await deps.sessions.read(profile);
    if (!record || !differs(record.clockSkewMs ?? null)) return;
    await withProfileLock(
      profile,
      deps,
      async () => {
        const current = await deps.sessions.read(profile);
        if (current && differs(current.clockSkewMs ?? null)) await deps.sessions.write({ ...current, clockSkewMs: skew });
      },
      undefined,
      1000,
    );
  } catch {
    // Only status's clock line depends on it.
  }
}

function authHint(e: MxsError, s: LoadedSession): MxsError {
  return e.exitCode === Exit.auth ? e.with({ hint: loginHint(s.record.profile, s.record.homeserver) }) : e;
}
