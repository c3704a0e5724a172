import { asMxsError, MxsError } from '../errors.js';
import type { SessionRecord } from '../model.js';
import type { Deps } from '../services/deps.js';
import { ensureFresh, loadSession, refreshIfStill, refreshWhenExpired, type LoadedSession, type RefreshRule } from '../services/session.js';

// The proxy's view of its session: the current access token, kept in memory and refreshed on demand
// through the session core (ensureFresh: the profile lock, the re-read, store before use), so `mxs
// token`, `mxs exec` and other proxies on the same profile never race it. In-process, one refresh
// at a time: requests that find the token due while a refresh runs wait for that one (single
// flight). A refresh the server refuses ends the session: every caller then gets `SessionEnded`.

/** How often the sessions file is looked at for tokens another mxs process stored (in the background). */
const STORE_CHECK_MS = 2000;
/** After a refresh failed for network reasons: the first wait before the next try, doubling up to the max. */
const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 15_000;

export class SessionEnded extends Error {
  constructor(readonly reason: MxsError) {
    super(reason.message);
  }
}

/** The token could not be refreshed for now (network, 5xx, lock, storage) and the current one cannot serve. */
export class RefreshUnavailable extends Error {
  constructor(readonly reason: MxsError) {
    super(reason.message);
  }
}

export interface SessionHealth {
  userId: string;
  deviceId: string;
  expiresAt: string | null;
  refreshable: boolean;
}

export class SessionTokens {
  private session: LoadedSession;
  private flight: Promise<LoadedSession> | null = null;
  private ended: MxsError | null = null;
  private readonly endListeners: ((reason: MxsError) => void)[] = [];
  private lastStoreCheck: number;
  private storeCheck: Promise<void> | null = null;
  private failures = 0;
  private retryAt = 0;
  private lastFailure: MxsError | null = null;
  refreshes = 0;

  constructor(
    private readonly profile: string,
    private readonly deps: Deps,
    private readonly rule: RefreshRule,
    first: LoadedSession,
    private readonly notice: (message: string) => void = () => {},
  ) {
    this.session = first;
    this.lastStoreCheck = deps.now();
  }

  get record(): SessionRecord {
    return this.session.record;
  }

  get endedBy(): MxsError | null {
    return this.ended;
  }

  onEnd(listener: (reason: MxsError) => void): void {
    this.endListeners.push(listener);
  }

  health(): SessionHealth {
    const { record, secret } = this.session;
    return { userId: record.userId, deviceId: record.deviceId, expiresAt: secret.expiresAt, refreshable: !this.ended && record.refreshable && secret.refreshToken !== null };
  }

  /**
   * The access token to send now: the one in memory while the rule says it is not due (no I/O on
   * this path), else a refreshed one. A refresh that fails for network reasons does not stop a
   * token that is still valid from being used.
   */
  async current(): Promise<string> {
    if (this.ended) throw new SessionEnded(this.ended);
    this.maybeCheckStore();
    if (this.flight) {
      // A refresh is running (the token was due, or the server refused it): wait for that one.
      try {
        return (await this.flight).secret.accessToken;
      } catch (err) {
        if (err instanceof SessionEnded) throw err;
        return this.fallback(asMxsError(err));
      }
    }
    const now = this.deps.now();
    if (!this.rule(this.session.secret, now)) return this.session.secret.accessToken;
    if (now < this.retryAt) return this.fallback(this.lastFailure!);
    try {
      return (await this.refresh(this.rule)).secret.accessToken;
    } catch (err) {
      if (err instanceof SessionEnded) throw err;
      return this.fallback(asMxsError(err));
    }
  }

  /**
   * The homeserver refused `token` (401 M_UNKNOWN_TOKEN): the token to replay with. When another
   * request (or process) already replaced it, that one; else one refresh, shared by every request
   * the server refused meanwhile.
   */
  async afterRejection(token: string): Promise<string> {
    if (this.ended) throw new SessionEnded(this.ended);
    if (this.session.secret.accessToken !== token) return this.session.secret.accessToken;
    if (this.flight) {
      await this.flight.catch(() => {});
      if (this.ended) throw new SessionEnded(this.ended);
      if (this.session.secret.accessToken !== token) return this.session.secret.accessToken;
    }
    try {
      return (await this.refresh(refreshIfStill(token))).secret.accessToken;
    } catch (err) {
      if (err instanceof SessionEnded) throw err;
      throw new RefreshUnavailable(asMxsError(err));
    }
  }

  /** Waits for the background look at the sessions file, if one runs (for tests and shutdown). */
  async settled(): Promise<void> {
    await this.storeCheck;
    await this.flight?.catch(() => {});
  }

  private fallback(reason: MxsError): string {
    const { secret } = this.session;
    if (!refreshWhenExpired(secret, this.deps.now())) return secret.accessToken;
    throw new RefreshUnavailable(reason);
  }

  private refresh(rule: RefreshRule): Promise<LoadedSession> {
    this.flight ??= (async () => {
      try {
        const fresh = await ensureFresh(this.profile, this.deps, rule);
        this.adopt(fresh.session);
        if (fresh.refreshed) this.refreshes++;
        if (this.failures > 0) this.notice('the access token could be refreshed again.');
        this.failures = 0;
        this.retryAt = 0;
        this.lastFailure = null;
        return fresh.session;
      } catch (err) {
        if (err instanceof SessionEnded) throw err;
        const e = asMxsError(err);
        if (e.kind === 'auth') throw this.end(e);
        this.failed(e);
        throw e;
      } finally {
        this.flight = null;
      }
    })();
    return this.flight;
  }

  private failed(e: MxsError): void {
    if (this.failures === 0) this.notice(`could not refresh the access token (${e.code}): ${e.message} Retrying on later requests.`);
    this.failures++;
    this.lastFailure = e;
    this.retryAt = this.deps.now() + Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** Math.min(this.failures - 1, 10));
  }

  private adopt(next: LoadedSession): void {
    const other = anotherSession(this.session.record, next.record);
    if (other) throw this.end(other);
    this.session = next;
  }

  /** Ends the session for good: every later caller gets SessionEnded; listeners hear it once. */
  end(reason: MxsError): SessionEnded {
    if (!this.ended) {
      this.ended = reason;
      for (const l of this.endListeners) l(reason);
    }
    return new SessionEnded(this.ended);
  }

  /**
   * Another mxs process may have refreshed (then the token in memory may already be revoked, as
   * the Matrix Authentication Service does at once), logged out, or logged in anew on this profile.
   * The sessions file alone says whether anything changed (no keychain read unless it did); this
   * runs in the background, at most every STORE_CHECK_MS, so no request waits for it.
   */
  private maybeCheckStore(): void {
    const now = this.deps.now();
    if (this.storeCheck || this.flight || now - this.lastStoreCheck < STORE_CHECK_MS) return;
    this.lastStoreCheck = now;
    this.storeCheck = this.checkStore().finally(() => {
      this.storeCheck = null;
    });
  }

  private async checkStore(): Promise<void> {
    try {
      const record = await this.deps.sessions.read(this.profile);
      if (this.flight || this.ended) return;
      if (record === null) {
        this.end(new MxsError({ code: 'not_logged_in', message: `Profile "${this.profile}" was logged out while the proxy ran.`, kind: 'auth' }));
        return;
      }
      if (stampOf(record) === stampOf(this.session.record) && sameSession(record, this.session.record)) return;
      const loaded = await loadSession(this.profile, this.deps);
      if (this.flight || this.ended) return;
      this.adopt(loaded);
    } catch (err) {
      if (err instanceof SessionEnded) return;
      const e = asMxsError(err);
      if (e.kind === 'auth') this.end(e);
      // Storage trouble: keep the token in memory; the next refresh says what is wrong.
    }
  }
}

const stampOf = (r: SessionRecord) => `${r.issuedAt}|${r.expiresAt}|${r.refreshable}`;
const sameSession = (a: SessionRecord, b: SessionRecord) => a.homeserver === b.homeserver && a.userId === b.userId && a.deviceId === b.deviceId;

/** The proxy serves one user and device: a profile that now holds another session cannot go on behind it. */
function anotherSession(was: SessionRecord, now: SessionRecord): MxsError | null {
  if (sameSession(was, now)) return null;
  return new MxsError({
    code: 'not_logged_in',
    message: `Profile "${was.profile}" now holds another session (${now.userId}, device ${now.deviceId}) than the one the proxy was started with.`,
    hint: `Start the proxy again: mxs proxy${was.profile === 'default' ? '' : ` --profile ${was.profile}`}`,
    kind: 'auth',
  });
}
