import { formatDuration } from '../duration.js';
import { asMxsError, loginHint, MxsError, type Hint } from '../errors.js';
import type { SessionRecord } from '../model.js';
import type { Deps } from './deps.js';
import type { TokenSource } from './replay.js';
import { ensureFresh, loadSession, refreshIfStill, refreshWhenBelow, refreshWhenExpired, remainingMs, type LoadedSession, type RefreshRule } from './session.js';

// The session keeper: the one long-running holder of a session (`exec --keep-fresh`, `proxy`). It
// keeps the current access token in memory and refreshes it through the session core (ensureFresh:
// the profile lock, the re-read, store before use), so `mxs token` and every other holder of the
// profile never race it. Two ways to use it: ask it for a token when one is needed (`current`: the
// proxy, which refreshes on demand and not while idle), or let it refresh ahead of expiry by itself
// (`keepFresh`: exec, which hands each new token to its command). Either way it picks up tokens
// another mxs process stored, ends the session when the profile is logged out or taken over by
// another session or the server refuses the refresh, and backs off after network or storage trouble.

/** How often the sessions file is looked at for tokens another mxs process stored. */
export const STORE_POLL_MS = 2000;
/** Floor between two looks of `keepFresh`: a server handing out instantly-due tokens is not hammered. */
const MIN_TICK_MS = 500;
/**
 * After a failed refresh (each already up to three HTTP attempts, the transport's): wait 1 s, doubling
 * up to 30 s; while the token still has time, at most a third of it, so that several tries fit first.
 */
export const RETRY_FIRST_MS = 1000;
export const RETRY_MAX_MS = 30_000;

/** The session can no longer be refreshed (refused, logged out, taken over): nothing can be sent with it. */
export class SessionEnded extends Error {
  constructor(readonly reason: MxsError) {
    super(reason.message);
  }
}

/** The token could not be refreshed for now (network, 5xx, lock, storage) and the current one has expired. */
export class RefreshUnavailable extends Error {
  constructor(readonly reason: MxsError) {
    super(reason.message);
  }
}

/** Who holds the session: named in the messages, and how to start it again after a takeover. */
const HOLDERS = {
  exec: { name: 'the command', again: (profile: string): Hint => ['Run the command again: ', { next: 'exec', profile, rest: '-- …' }] },
  proxy: { name: 'the proxy', again: (profile: string): Hint => ['Start the proxy again: ', { next: 'proxy', profile }] },
} as const;

export interface KeeperOptions {
  profile: string;
  holder: keyof typeof HOLDERS;
  /** Refresh when less than this is left (capped at half the token's lifetime: refreshWhenBelow). */
  minValidMs: number;
  /** The session as loaded (or refreshed) at start. */
  first: LoadedSession;
  /** Backoff and recovery messages for the user (stderr). */
  notice: (message: string) => void;
}

export interface SessionHealth {
  userId: string | null;
  deviceId: string | null;
  expiresAt: string | null;
  refreshable: boolean;
}

export class SessionKeeper implements TokenSource<string> {
  /** Refreshes this keeper made (not those it picked up from another process). */
  refreshes = 0;
  private session: LoadedSession;
  private readonly rule: RefreshRule;
  private flight: Promise<LoadedSession> | null = null;
  private ended: MxsError | null = null;
  private readonly endListeners: ((reason: MxsError) => void)[] = [];
  private lastLook: number;
  private looking: Promise<unknown> | null = null;
  private failures = 0;
  private retryAt = 0;
  private lastFailure: MxsError | null = null;
  private toldExpired = false;
  private stopped = false;
  private readonly abort = new AbortController();
  private publishing: Promise<void> = Promise.resolve();

  constructor(
    private readonly deps: Deps,
    private readonly opts: KeeperOptions,
  ) {
    this.session = opts.first;
    this.rule = refreshWhenBelow(opts.minValidMs);
    this.lastLook = deps.now();
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
    const { record } = this.session;
    return { userId: record.userId, deviceId: record.deviceId, expiresAt: this.session.secret.expiresAt, refreshable: !this.ended && canRefresh(this.session) };
  }

  /**
   * The access token to send now: the one in memory while it is not due (no I/O on this path), else
   * a refreshed one. While refreshing fails for network reasons, a token that has not expired is used.
   */
  async current(): Promise<string> {
    if (this.ended) throw new SessionEnded(this.ended);
    this.lookInBackground();
    const now = this.deps.now();
    if (!this.flight) {
      if (!this.due(now)) return this.session.secret.accessToken;
      if (now < this.retryAt) return this.fallback(this.lastFailure!);
    }
    try {
      return (await this.refresh(this.dueRule())).secret.accessToken;
    } catch (err) {
      if (err instanceof SessionEnded) throw err;
      return this.fallback(asMxsError(err));
    }
  }

  /**
   * The homeserver refused `token`: the token to replay with. When another request (or process)
   * already replaced it, that one; else one refresh, shared by every request refused meanwhile.
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

  /**
   * Refreshes ahead of expiry without being asked, handing every new token (refreshed here or stored
   * by another process) to `publish` before the next look. Resolves with the reason once the session
   * has ended, or with null once stopped. A token that never expires needs no keeper.
   */
  async keepFresh(publish: (token: string) => Promise<void>): Promise<MxsError | null> {
    let published = this.session.secret.accessToken;
    while (!this.stopped) {
      try {
        await this.deps.sleep(this.nextWaitMs(), this.abort.signal);
      } catch {
        return null;
      }
      if (this.stopped) return null;
      // Every look starts with the sessions file alone (no keychain, no network).
      const look = await this.look();
      if (this.ended) return this.ended;
      if (look === 'same' && this.failures === 0 && !this.due(this.deps.now())) continue;
      if (look === 'failed' || this.failures > 0 || this.due(this.deps.now())) {
        try {
          await this.refresh(this.dueRule());
        } catch {
          if (this.ended) return this.ended;
          continue; // backing off (refresh() said so once)
        }
      }
      if (this.stopped) return null;
      const token = this.session.secret.accessToken;
      if (token === published) continue;
      this.publishing = publish(token);
      try {
        await this.publishing;
        published = token;
      } catch (err) {
        this.failed(`could not pass the new access token on: ${clause(asMxsError(err))}`);
      }
    }
    return null;
  }

  /** Ends `keepFresh`; a refresh in flight may finish (it is crash-safe), but nothing more is published. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.abort.abort();
    await this.publishing.catch(() => {});
  }

  /** Waits for the background look at the sessions file and a refresh in flight (tests, shutdown). */
  async settled(): Promise<void> {
    await this.looking;
    await this.flight?.catch(() => {});
  }

  /** A session that cannot be refreshed keeps its token until it has expired; only then is it given up. */
  private dueRule(): RefreshRule {
    return canRefresh(this.session) ? this.rule : refreshWhenExpired;
  }

  private due(now: number): boolean {
    return this.dueRule()(this.session.secret, now);
  }

  /** When the token turns due, by the rule of `dueRule` (refreshWhenBelow turns due strictly below its threshold: a hair later). */
  private dueAt(): number | null {
    const s = this.session.secret;
    if (s.expiresAt === null) return null;
    const expires = Date.parse(s.expiresAt);
    if (!canRefresh(this.session)) return expires;
    const lifetime = expires - Date.parse(s.issuedAt);
    return expires - Math.min(this.opts.minValidMs, Math.max(0, lifetime / 2)) + 5;
  }

  private nextWaitMs(): number {
    const now = this.deps.now();
    if (this.failures > 0) return Math.max(MIN_TICK_MS, this.retryAt - now);
    const due = this.dueAt();
    return Math.max(MIN_TICK_MS, Math.min(STORE_POLL_MS, due === null ? STORE_POLL_MS : due - now));
  }

  private fallback(reason: MxsError): string {
    const { secret } = this.session;
    if (!refreshWhenExpired(secret, this.deps.now())) return secret.accessToken;
    throw new RefreshUnavailable(reason);
  }

  /** One refresh at a time in this process: callers that find one running wait for it (single flight). */
  private refresh(rule: RefreshRule): Promise<LoadedSession> {
    this.flight ??= (async () => {
      try {
        const fresh = await ensureFresh(this.opts.profile, this.deps, rule);
        this.adopt(fresh.session);
        if (fresh.refreshed) this.refreshes++;
        this.recovered();
        return fresh.session;
      } catch (err) {
        if (err instanceof SessionEnded) throw err;
        const e = asMxsError(err);
        if (e.kind === 'auth') throw this.end(e);
        this.failed(`could not refresh the access token of profile "${this.opts.profile}": ${clause(e)}`);
        this.lastFailure = e;
        throw e;
      } finally {
        this.flight = null;
      }
    })();
    return this.flight;
  }

  /** Backoff, with one notice when the trouble starts and one when the token expires meanwhile. */
  private failed(what: string): void {
    const now = this.deps.now();
    let delay = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** Math.min(this.failures, 10));
    const left = remainingMs(this.session.secret.expiresAt, now);
    const valid = left === null || left > 0;
    if (left !== null && left > 0) delay = Math.min(delay, Math.max(RETRY_FIRST_MS, left / 3));
    if (this.failures === 0) {
      const state = valid ? `the current token stays in use${left === null ? '' : ` (${formatDuration(left)} left)`}` : 'the current token has expired';
      this.opts.notice(`${what}; ${state}. Retrying.`);
      this.toldExpired = !valid;
    } else if (!valid && !this.toldExpired) {
      this.opts.notice('the access token has expired and could not be refreshed yet; still retrying.');
      this.toldExpired = true;
    }
    this.failures++;
    this.retryAt = now + delay;
  }

  private recovered(): void {
    if (this.failures > 0) this.opts.notice('the access token is fresh again.');
    this.failures = 0;
    this.retryAt = 0;
    this.lastFailure = null;
    this.toldExpired = false;
  }

  private adopt(next: LoadedSession): void {
    const other = this.takenOver(next.record);
    if (other) throw this.end(other);
    this.session = next;
  }

  /** Ends the session for good: every later caller gets SessionEnded; listeners hear it once. */
  private end(reason: MxsError): SessionEnded {
    if (!this.ended) {
      this.ended = reason;
      for (const l of this.endListeners) l(reason);
    }
    return new SessionEnded(this.ended);
  }

  /**
   * Another mxs process may have refreshed (then the token in memory may already be revoked, as the
   * Matrix Authentication Service does at once), logged out, or logged in anew on this profile. On
   * demand this runs in the background, at most every STORE_POLL_MS, so no request waits for it.
   */
  private lookInBackground(): void {
    const now = this.deps.now();
    if (this.looking || this.flight || now - this.lastLook < STORE_POLL_MS) return;
    this.lastLook = now;
    this.looking = this.look().finally(() => {
      this.looking = null;
    });
  }

  /** The sessions file says whether anything changed: the keychain is read only when it did. */
  private async look(): Promise<'same' | 'changed' | 'failed'> {
    try {
      const record = await this.deps.sessions.read(this.opts.profile);
      if (this.ended) return 'same';
      if (record === null) {
        this.end(this.loggedOut());
        return 'changed';
      }
      if (stampOf(record) === stampOf(this.session.record)) return 'same';
      const other = this.takenOver(record);
      if (other) {
        this.end(other);
        return 'changed';
      }
      if (this.flight) return 'changed'; // the refresh running adopts what it finds
      const loaded = await loadSession(this.opts.profile, this.deps);
      if (this.flight || this.ended) return 'changed';
      this.adopt(loaded);
      return 'changed';
    } catch (err) {
      if (err instanceof SessionEnded) return 'changed';
      const e = asMxsError(err);
      if (e.kind === 'auth') this.end(e);
      // Storage trouble: the token in memory goes on; the next refresh says what is wrong.
      return 'failed';
    }
  }

  private loggedOut(): MxsError {
    const { profile } = this.opts;
    return new MxsError({
      code: 'not_logged_in',
      message: `Profile "${profile}" was logged out while ${HOLDERS[this.opts.holder].name} ran.`,
      hint: loginHint(profile, this.session.record.homeserver),
      kind: 'auth',
    });
  }

  /** The holder serves one user and device: a profile that now holds another session cannot go on behind it. */
  private takenOver(now: SessionRecord): MxsError | null {
    const was = this.session.record;
    if (sameSession(was, now)) return null;
    const holder = HOLDERS[this.opts.holder];
    return new MxsError({
      code: 'not_logged_in',
      message: `Profile "${was.profile}" now holds another session (${now.userId}, device ${now.deviceId}) than the one ${holder.name} was started with.`,
      hint: holder.again(was.profile),
      kind: 'auth',
    });
  }
}

const canRefresh = (s: LoadedSession) => s.secret.refreshToken !== null && s.record.refreshable;
const sameSession = (a: SessionRecord, b: SessionRecord) => a.homeserver === b.homeserver && a.userId === b.userId && a.deviceId === b.deviceId;
/** What identifies the stored tokens and the session they belong to, as the sessions file says. */
const stampOf = (r: SessionRecord) => JSON.stringify([r.homeserver, r.userId, r.deviceId, r.issuedAt, r.expiresAt, r.refreshable]);
/** An error's message as a clause inside a notice. */
const clause = (e: MxsError) => e.message.replace(/[.\s]+$/, '');
