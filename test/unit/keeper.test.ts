// The session keeper (src/services/keeper.ts), the one long-running holder of a session, used both ways:
// asked for a token (`current`, as the proxy does) and refreshing by itself (`keepFresh`, as exec does).
// The unit world's clock moves on at once with every wait; the refresh endpoint is an undici MockAgent.
import { beforeEach, describe, expect, it } from '@jest/globals';
import type { MxsError } from '../../src/errors.js';
import { RefreshUnavailable, SessionEnded, SessionKeeper, type KeeperOptions } from '../../src/services/keeper.js';
import { loadSession } from '../../src/services/session.js';
import { HS, T0, hintText, rejectionOf, replyJson, type UnitWorld, worldPerTest } from '../support/unit-deps.js';

const V3 = '/_matrix/client/v3/refresh';
const SEC = 1000;
const MIN = 60_000;

let w: UnitWorld;
worldPerTest((made) => (w = made));

const notices: string[] = [];
beforeEach(() => {
  notices.length = 0;
});

async function keeperFor(over: Partial<KeeperOptions> = {}): Promise<SessionKeeper> {
  const profile = over.profile ?? 'default';
  return new SessionKeeper(w.deps, { profile, holder: 'proxy', minValidMs: 60 * SEC, first: await loadSession(profile, w.deps), notice: (m) => notices.push(m), ...over });
}

const replyRefresh = (n: number, lifetimeMs = 5 * MIN) =>
  replyJson(w.agent, HS, 'POST', V3, 200, { access_token: `syt_access_${n}`, refresh_token: `syr_refresh_${n}`, expires_in_ms: lifetimeMs });
const refreshes = () => w.requests().filter((r) => r.path === V3);

/** Runs keepFresh until `count` tokens were published (or the session ended); what was published, and when. */
async function publishedBy(keeper: SessionKeeper, count = 1): Promise<{ published: { token: string; at: number }[]; ended: MxsError | null }> {
  const published: { token: string; at: number }[] = [];
  const ended = await keeper.keepFresh(async (token) => {
    published.push({ token, at: w.clock.now() });
    if (published.length === count) void keeper.stop();
  });
  return { published, ended };
}

/** Another mxs process refreshed the profile: new secret first, then the sessions file (store before use). */
async function refreshElsewhere(profile = 'default'): Promise<void> {
  const { record, secret } = await w.stored(profile);
  const issuedAt = new Date(w.clock.now()).toISOString();
  const expiresAt = new Date(w.clock.now() + 5 * MIN).toISOString();
  await w.deps.secretStores.keychain.set(profile, { ...secret!, accessToken: 'syt_from_elsewhere', issuedAt, expiresAt });
  await w.deps.sessions.write({ ...record!, issuedAt, expiresAt });
}

describe('refresh ahead of expiry', () => {
  it.each([
    ['a 5-minute token, --min-valid 60s: due with 60 s left', 5 * MIN, 60 * SEC, 4 * MIN],
    ['a 5-minute token, --min-valid 10m: capped at half its lifetime', 5 * MIN, 10 * MIN, 2.5 * MIN],
    ['a 6-second token (the integration tests\'): due at half its lifetime', 6 * SEC, 60 * SEC, 3 * SEC],
  ])('keepFresh: %s, not before, and publishes the new token', async (_name, lifetimeMs, minValidMs, dueAfter) => {
    await w.seed({ lifetimeMs });
    replyRefresh(1);
    const keeper = await keeperFor({ holder: 'exec', minValidMs });
    const { published } = await publishedBy(keeper);
    expect(published).toEqual([{ token: 'syt_access_1', at: expect.any(Number) }]);
    expect(published[0]!.at - T0).toBeGreaterThanOrEqual(dueAfter);
    expect(published[0]!.at - T0).toBeLessThan(dueAfter + 600);
    expect(keeper.refreshes).toBe(1);
    expect((await w.stored()).secret).toMatchObject({ accessToken: 'syt_access_1', refreshToken: 'syr_refresh_1' });
  });

  it.each([
    ['just issued', 'syt_old_access', 0, 0],
    ['61 s left', 'syt_old_access', 5 * MIN - 61 * SEC, 0],
    ['59 s left', 'syt_access_1', 5 * MIN - 59 * SEC, 1],
    ['expired', 'syt_access_1', 6 * MIN, 1],
  ])('current (on demand): %s → %s', async (_name, token, elapsed, count) => {
    await w.seed();
    const keeper = await keeperFor();
    w.clock.advance(elapsed);
    if (count) replyRefresh(1);
    expect(await keeper.current()).toBe(token);
    expect(refreshes()).toHaveLength(count);
  });

  it('on demand, an idle keeper does nothing: no refresh, no request, however long it waits', async () => {
    await w.seed();
    await keeperFor();
    w.clock.advance(60 * MIN);
    expect(w.requests()).toEqual([]);
  });

  it('a session without a refresh token keeps its token until it has expired, then ends', async () => {
    await w.seed({ refreshToken: null });
    const keeper = await keeperFor({ holder: 'exec' });
    const { published, ended } = await publishedBy(keeper);
    expect(published).toEqual([]);
    expect(ended).toMatchObject({ code: 'M_UNKNOWN_TOKEN', exitCode: 4 });
    expect(w.clock.now()).toBeGreaterThanOrEqual(T0 + 5 * MIN);
    expect(w.requests()).toEqual([]);
  });
});

describe('another process\'s refresh is picked up from the sessions file, without a refresh of its own', () => {
  it('keepFresh: the token stored elsewhere is published', async () => {
    await w.seed();
    const keeper = await keeperFor({ holder: 'exec' });
    w.clock.advance(MIN);
    await refreshElsewhere();
    const { published } = await publishedBy(keeper);
    expect(published.map((p) => p.token)).toEqual(['syt_from_elsewhere']);
    expect(keeper.refreshes).toBe(0);
    expect(w.requests()).toEqual([]);
  });

  it('on demand: looked at in the background, at most every 2 s', async () => {
    await w.seed();
    const keeper = await keeperFor();
    w.clock.advance(SEC);
    await refreshElsewhere();
    expect(await keeper.current()).toBe('syt_old_access');
    w.clock.advance(2001);
    await keeper.current();
    await keeper.settled();
    expect(await keeper.current()).toBe('syt_from_elsewhere');
    expect(w.requests()).toEqual([]);
  });
});

describe('takeover and logout end the session for the holder', () => {
  const otherDevice = async (profile: string) => {
    const { record } = await w.stored(profile);
    await w.deps.sessions.write({ ...record!, deviceId: 'OTHER', issuedAt: new Date(w.clock.now() + 5).toISOString() });
  };
  const loggedOut = async (profile: string) => w.deps.sessions.remove(profile);

  it.each([
    ['exec', 'another device', otherDevice, /^Profile "default" now holds another session \(@alice:example\.org, device OTHER\) than the one the command was started with\.$/, 'Run the command again: mxs exec -- …'],
    ['proxy', 'another device', otherDevice, /^Profile "default" now holds another session .* than the one the proxy was started with\.$/, 'Start the proxy again: mxs proxy'],
    ['exec', 'logged out', loggedOut, /^Profile "default" was logged out while the command ran\.$/, `Run: mxs login ${HS}`],
    ['proxy', 'logged out', loggedOut, /^Profile "default" was logged out while the proxy ran\.$/, `Run: mxs login ${HS}`],
  ] as const)('%s, %s: keepFresh resolves with the reason (exit 4), current() throws SessionEnded, listeners hear it once', async (holder, _what, change, message, hint) => {
    await w.seed();
    const keeper = await keeperFor({ holder });
    const heard: MxsError[] = [];
    keeper.onEnd((e) => heard.push(e));
    await change('default');
    const { ended } = await publishedBy(keeper);
    expect(ended).toMatchObject({ code: 'not_logged_in', exitCode: 4 });
    expect(hintText(ended!)).toBe(hint);
    expect(ended!.message).toMatch(message);
    expect(await rejectionOf(() => keeper.current())).toBeInstanceOf(SessionEnded);
    expect(heard).toEqual([ended]);
    expect(keeper.health().refreshable).toBe(false);
  });

  // The hints named `--profile` unless the profile was literally "default", so after `mxs switch work`
  // they named the wrong command: they follow the profile used without a flag now.
  it.each([
    ['exec', 'work', 'Run the command again: mxs exec -- …'],
    ['exec', 'default', 'Run the command again: mxs exec --profile default -- …'],
    ['proxy', 'work', 'Start the proxy again: mxs proxy'],
    ['proxy', 'default', 'Start the proxy again: mxs proxy --profile default'],
  ] as const)('after `mxs switch work`, the %s takeover hint for profile %s is: %s', async (holder, profile, hint) => {
    await w.seed({ profile });
    const keeper = await keeperFor({ holder, profile });
    await otherDevice(profile);
    w.clock.advance(2001);
    await keeper.current();
    await keeper.settled();
    expect(hintText(keeper.endedBy!, 'work')).toBe(hint);
  });
});

describe('a refused refresh ends the session; the record says so', () => {
  it.each([
    ['keepFresh', async (k: SessionKeeper) => (await publishedBy(k)).ended],
    ['after the server refused the token', async (k: SessionKeeper) => ((await rejectionOf(() => k.afterRejection('syt_old_access'))) as SessionEnded).reason],
    [
      'on demand',
      async (k: SessionKeeper) => {
        w.clock.advance(4 * MIN + 1);
        return ((await rejectionOf(() => k.current())) as SessionEnded).reason;
      },
    ],
  ])('%s', async (_how, drive) => {
    await w.seed();
    replyJson(w.agent, HS, 'POST', V3, 403, { errcode: 'M_FORBIDDEN', error: 'The supplied refresh token has expired' });
    const keeper = await keeperFor();
    const heard: MxsError[] = [];
    keeper.onEnd((e) => heard.push(e));
    const reason = await drive(keeper);
    expect(reason).toMatchObject({ code: 'M_FORBIDDEN', exitCode: 4 });
    expect(hintText(reason!)).toBe(`Run: mxs login ${HS}`);
    expect(reason!.message).toMatch(/^The session of profile "default" has ended: the server refused its refresh token/);
    expect(heard).toEqual([reason]);
    expect(keeper.endedBy).toBe(reason);
    expect((await w.stored()).record).toMatchObject({ refreshable: false });
  });
});

describe('network trouble: backoff, one notice, recovery', () => {
  /**
   * The refresh endpoint fails `failures` times (503, each retried by the transport: 3 requests), then
   * works; or fails for good. Returns the clock at each request.
   */
  function failThenWork(failures: number | 'always'): number[] {
    const at: number[] = [];
    const scope = w.agent
      .get(HS)
      .intercept({ method: 'POST', path: V3 })
      .reply(() => {
        at.push(w.clock.now());
        return { statusCode: 503, data: JSON.stringify({ errcode: 'M_UNKNOWN', error: 'busy' }) };
      });
    if (failures === 'always') {
      scope.persist();
    } else {
      scope.times(failures * 3);
      replyRefresh(1);
    }
    return at;
  }

  it('keepFresh: waits 1 s, 2 s, 4 s between tries, says so once, then carries on', async () => {
    await w.seed();
    const at = failThenWork(3);
    const keeper = await keeperFor({ holder: 'exec' });
    const { published } = await publishedBy(keeper);
    const tries = [...new Set(at)];
    expect(tries.slice(1).map((t, i) => t - tries[i]!)).toEqual([1000, 2000]);
    expect(published[0]!.at - tries.at(-1)!).toBe(4000);
    expect(notices).toEqual([
      expect.stringMatching(/^could not refresh the access token of profile "default": [^;]*[^.]; the current token stays in use \(59s left\)\. Retrying\.$/),
      'the access token is fresh again.',
    ]);
  });

  it('keepFresh: the waits never pass 30 s, while the token lasts at most a third of what is left; its expiry is told once', async () => {
    await w.seed();
    const at = failThenWork('always');
    const keeper = await keeperFor({ holder: 'exec' });
    const run = keeper.keepFresh(async () => {});
    while (w.clock.now() < T0 + 10 * MIN) await new Promise((r) => setTimeout(r, 1));
    await keeper.stop();
    await run;
    const tries = [...new Set(at)];
    const waits = tries.slice(1).map((t, i) => [tries[i]! - T0, t - tries[i]!] as const);
    for (const [since, wait] of waits) {
      const left = 5 * MIN - since;
      expect(wait).toBeLessThanOrEqual(30 * SEC);
      if (left > 3 * SEC) expect(wait).toBeLessThanOrEqual(Math.max(1000, left / 3) + 1);
    }
    expect(waits.some(([, wait]) => wait === 30 * SEC)).toBe(true);
    expect(notices).toEqual([expect.stringMatching(/stays in use \(59s left\)\. Retrying\.$/), 'the access token has expired and could not be refreshed yet; still retrying.']);
  });

  it('on demand: the token is used while valid, no new try within the backoff, then it recovers', async () => {
    await w.seed();
    const at = failThenWork(1);
    const keeper = await keeperFor();
    w.clock.advance(250 * SEC);
    expect(await keeper.current()).toBe('syt_old_access');
    expect(await keeper.current()).toBe('syt_old_access');
    expect(at).toHaveLength(3);
    w.clock.advance(1 * SEC);
    expect(await keeper.current()).toBe('syt_access_1');
    expect(notices).toEqual([expect.stringMatching(/stays in use \(50s left\)\. Retrying\.$/), 'the access token is fresh again.']);
  });
});

describe('one refresh at a time (the proxy\'s concurrent requests)', () => {
  it('50 concurrent requests on a due token: one refresh, all get the new token (single flight)', async () => {
    await w.seed();
    const keeper = await keeperFor();
    w.clock.advance(250 * SEC);
    replyRefresh(1);
    const got = await Promise.all(Array.from({ length: 50 }, () => keeper.current()));
    expect(new Set(got)).toEqual(new Set(['syt_access_1']));
    expect(refreshes()).toHaveLength(1);
    expect(keeper.refreshes).toBe(1);
  });

  it('refusals of the same token share one refresh; a refusal of an old token needs none', async () => {
    await w.seed();
    const keeper = await keeperFor();
    replyRefresh(1);
    const got = await Promise.all(Array.from({ length: 10 }, () => keeper.afterRejection('syt_old_access')));
    expect(new Set(got)).toEqual(new Set(['syt_access_1']));
    expect(await keeper.afterRejection('syt_old_access')).toBe('syt_access_1');
    expect(refreshes()).toHaveLength(1);
  });

  it('network trouble once the token has expired: RefreshUnavailable (the proxy answers 502), the session goes on', async () => {
    await w.seed();
    const keeper = await keeperFor();
    w.clock.advance(301 * SEC);
    for (let i = 0; i < 6; i++) replyJson(w.agent, HS, 'POST', V3, 502, { errcode: 'M_UNKNOWN', error: 'gateway' });
    expect(await rejectionOf(() => keeper.current())).toBeInstanceOf(RefreshUnavailable);
    expect(await rejectionOf(() => keeper.afterRejection('syt_old_access'))).toBeInstanceOf(RefreshUnavailable);
    expect(refreshes()).toHaveLength(6);
    expect(keeper.endedBy).toBeNull();
  });
});
