import type { Deps } from './deps.js';
import { ensureFresh, refreshIfStill, refreshWhenBelow, remainingMs, loadSession } from './session.js';

export interface TokenResult {
  accessToken: string;
  expiresAt: string | null;
  expiresInMs: number | null;
}

export interface RefreshResult {
  profile: string;
  expiresAt: string | null;
  expiresInMs: number | null;
  refreshTokenRotated: boolean;
}

/** `token`: the access token, refreshed first when less than `minValidMs` is left. */
export async function tokenService(profile: string, minValidMs: number, deps: Deps): Promise<TokenResult> {
  // An expired token is always due (refreshWhenBelow), and ensureFresh refuses one it cannot refresh.
  const { secret } = (await ensureFresh(profile, deps, refreshWhenBelow(minValidMs))).session;
  return { accessToken: secret.accessToken, expiresAt: secret.expiresAt, expiresInMs: remainingMs(secret.expiresAt, deps.now()) };
}

/** `refresh`: exchange the refresh token now (once, even if several run at the same moment). */
export async function refreshService(profile: string, lifetimeMs: number | undefined, deps: Deps): Promise<RefreshResult> {
  const before = await loadSession(profile, deps);
  if (lifetimeMs !== undefined && before.record.auth.type === 'oauth') {
    // Contract: `--lifetime` is a Matrix extension; OAuth servers set lifetimes themselves.
    deps.notice('--lifetime is not sent for an OAuth 2.0 session: its server sets token lifetimes itself.');
    lifetimeMs = undefined;
  }
  const fresh = await ensureFresh(profile, deps, refreshIfStill(before.secret.accessToken), lifetimeMs, { evenIfRefused: true });
  const { secret } = fresh.session;
  return {
    profile,
    expiresAt: secret.expiresAt,
    expiresInMs: remainingMs(secret.expiresAt, deps.now()),
    refreshTokenRotated: fresh.rotated,
  };
}
