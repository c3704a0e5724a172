import type { HttpDeps } from '../http/transport.js';
import type { SessionStore } from '../store/sessions.js';
import type { SecretStore } from '../store/secrets.js';
import type { StorageKind } from '../model.js';

/** Everything a service touches in the world, injected: tests swap any of it. */
export interface Deps {
  now: () => number;
  /** Waits, or stops early (rejecting with the reason) when `signal` aborts: device-code polling. */
  sleep: (ms: number, signal?: AbortSignal) => Promise<void>;
  http: HttpDeps;
  sessions: SessionStore;
  secretStores: Record<StorageKind, SecretStore>;
  lock: {
    path: (profile: string) => string;
    waitMs: number;
  };
  /** Non-data messages for the user (stderr): storage fallbacks, clock skew. */
  notice: (message: string) => void;
  /** Record secrets as they are read or written, so that no output can ever show them. */
  rememberSecret: (...values: (string | null | undefined)[]) => void;
  /** Latest server-clock sample (server Date − local clock, ms), filled in by the HTTP layer. */
  clock: { skewMs: number | null };
}

export const SKEW_NOTABLE_MS = 60_000;

export function notableSkew(deps: Deps): number | null {
  const s = deps.clock.skewMs;
  return s !== null && Math.abs(s) > SKEW_NOTABLE_MS ? Math.round(s) : null;
}
