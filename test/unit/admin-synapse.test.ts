// The Synapse admin back end (src/services/admin/synapse.ts) against a mocked Synapse admin API.
import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { synapseAdminBackend, fullUserId, fingerprint } from '../../src/services/admin/synapse.js';
import { refreshWhenBelow, withAccessToken } from '../../src/services/session.js';
import { HS, T0, hintText, makeDeps, rejectionOf, replyJson, replyJsonWith, type UnitWorld } from '../support/unit-deps.js';

let w: UnitWorld;
beforeEach(async () => {
  w = await makeDeps();
  await w.seed();
});
afterEach(async () => {
  await w.cleanup();
});

const BOB = '@bob:example.org';
const USER = `/_synapse/admin/v2/users/${encodeURIComponent(BOB)}`;
/** The session's connection, as `mxs admin` makes it: calls through the session core. */
const backend = () =>
  synapseAdminBackend({
    record: { homeserver: HS },
    http: w.deps.http,
    serverName: 'example.org',
    rememberSecret: (...v) => w.deps.rememberSecret(...v),
    authed: async (call) => (await withAccessToken('default', w.deps, refreshWhenBelow(60_000), (s) => call(s.secret.accessToken))).value,
  });
const bob = { userId: BOB, adminId: BOB };

describe('synapseAdminBackend', () => {
  it('resolves a localpart to @localpart:server after checking the user exists', async () => {
    replyJson(w.agent, HS, 'GET', USER, 200, { name: BOB, admin: false });
    await expect(backend().resolveUser('bob')).resolves.toEqual(bob);
    expect(w.requests().map((r) => `${r.method} ${r.path} ${r.headers.authorization}`)).toEqual([`GET ${USER} Bearer syt_old_access`]);
  });

  it('refuses a user the server does not know (exit 2), naming it', async () => {
    replyJson(w.agent, HS, 'GET', USER, 404, { errcode: 'M_NOT_FOUND', error: 'User not found' });
    const err = await rejectionOf(() => backend().resolveUser(BOB));
    expect(err).toMatchObject({ exitCode: 2 });
    expect(err.message).toContain(BOB);
  });

  it.each([['@bob'], ['bob:x'], ['a b'], ['']])('refuses %j as a user before asking the server', (bad) => {
    expect(() => fullUserId(bad, 'example.org')).toThrow(expect.objectContaining({ exitCode: 2 }) as unknown as Error);
  });

  it('lists devices as sessions, newest activity first, with what Synapse knows of each', async () => {
    replyJson(w.agent, HS, 'GET', `${USER}/devices`, 200, {
      devices: [
        { device_id: 'OLD', display_name: 'Old phone', last_seen_ts: T0 - 86_400_000, last_seen_ip: '10.0.0.1', last_seen_user_agent: 'Element/1.0', user_id: BOB },
        { device_id: 'NEVER', display_name: null, last_seen_ts: null, last_seen_ip: null, user_id: BOB },
        { device_id: 'NEW', display_name: 'Laptop\x1b[31m', last_seen_ts: T0, last_seen_ip: '10.0.0.2', user_id: BOB },
      ],
      total: 3,
    });
    const sessions = await backend().sessions(bob, { active: false });
    expect(sessions.map((s) => s.id)).toEqual(['NEW', 'OLD', 'NEVER']);
    expect(sessions[1]).toEqual({
      kind: 'device',
      id: 'OLD',
      deviceId: 'OLD',
      client: 'Old phone',
      createdAt: null,
      lastActiveAt: new Date(T0 - 86_400_000).toISOString(),
      lastActiveIp: '10.0.0.1',
      userAgent: 'Element/1.0',
      finishedAt: null,
    });
    // Raw here: escaping is the renderer's job, and --json carries the server's text as it came.
    expect(sessions[0].client).toBe('Laptop\x1b[31m');
    expect(sessions[2]).toMatchObject({ client: null, lastActiveAt: null, lastActiveIp: null, userAgent: null });
  });

  it('follows next_token to the last page', async () => {
    replyJson(w.agent, HS, 'GET', `${USER}/devices`, 200, { devices: [{ device_id: 'A', last_seen_ts: T0 }], next_token: '1' });
    replyJson(w.agent, HS, 'GET', `${USER}/devices?from=1`, 200, { devices: [{ device_id: 'B', last_seen_ts: T0 - 1 }] });
    expect((await backend().sessions(bob, { active: true })).map((s) => s.id)).toEqual(['A', 'B']);
  });

  it('ends sessions by deleting those devices of their user, in one request', async () => {
    replyJson(w.agent, HS, 'GET', `${USER}/devices`, 200, { devices: [{ device_id: 'A' }, { device_id: 'B' }, { device_id: 'C' }] });
    let sent: unknown;
    replyJsonWith(w.agent, HS, 'POST', `${USER}/delete_devices`, (req) => {
      sent = JSON.parse(String(req.body));
      return { status: 200, body: {} };
    });
    const b = backend();
    const sessions = await b.sessions(bob, { active: false });
    await expect(b.endSessions(sessions.filter((s) => s.id !== 'B'))).resolves.toEqual(['A', 'C']);
    expect(sent).toEqual({ devices: ['A', 'C'] });
  });

  it('creates a token with valid_until_ms from the asked expiry, named by its fingerprint', async () => {
    let sent: unknown;
    replyJsonWith(w.agent, HS, 'POST', `/_synapse/admin/v1/users/${encodeURIComponent(BOB)}/login`, (req) => {
      sent = JSON.parse(String(req.body));
      return { status: 200, body: { access_token: 'syt_Ym9i_minted_abc' } };
    });
    const created = await backend().createToken(bob, { expiresInMs: 7 * 86_400_000, name: null });
    expect(sent).toEqual({ valid_until_ms: T0 + 7 * 86_400_000 });
    expect(created).toEqual({ id: fingerprint('syt_Ym9i_minted_abc'), userId: BOB, token: 'syt_Ym9i_minted_abc', expiresAt: new Date(T0 + 7 * 86_400_000).toISOString() });
    expect(created.id).toMatch(/^[0-9a-f]{12}$/);
    // Remembered, so no trace or error can show it.
    expect(w.remembered).toContain('syt_Ym9i_minted_abc');
  });

  it('creates a token that never expires when no expiry is asked (no valid_until_ms)', async () => {
    let sent: unknown;
    replyJsonWith(w.agent, HS, 'POST', `/_synapse/admin/v1/users/${encodeURIComponent(BOB)}/login`, (req) => {
      sent = JSON.parse(String(req.body));
      return { status: 200, body: { access_token: 'syt_forever' } };
    });
    await expect(backend().createToken(bob, { expiresInMs: null, name: null })).resolves.toMatchObject({ expiresAt: null });
    expect(sent).toEqual({});
  });

  it('has no token list, revoke or regenerate (Synapse keeps no list of such tokens)', () => {
    const b = backend();
    expect([b.listTokens, b.revokeToken, b.regenerateToken]).toEqual([undefined, undefined, undefined]);
  });

  it('a session without admin rights: exit 4, the server\'s words, and the hint naming mxs login --admin', async () => {
    replyJson(w.agent, HS, 'GET', `${USER}/devices`, 403, { errcode: 'M_FORBIDDEN', error: 'You are not a server admin' });
    const err = await rejectionOf(() => backend().sessions(bob, { active: false }));
    expect(err).toMatchObject({ exitCode: 4, code: 'M_FORBIDDEN' });
    expect(err.message).toContain('You are not a server admin');
    expect(err.hint).toEqual(['Use a server admin\'s session; on an OAuth server log in with the admin scopes: ', { next: 'login', flags: '--admin' }]);
    expect(hintText(err)).toContain('mxs login SERVER --admin');
  });

  it('refreshes an expired session token first, through the session core', async () => {
    w.clock.advance(10 * 60_000);
    replyJson(w.agent, HS, 'POST', '/_matrix/client/v3/refresh', 200, { access_token: 'syt_fresh', refresh_token: 'syr_fresh', expires_in_ms: 300_000 });
    replyJson(w.agent, HS, 'GET', USER, 200, { name: BOB });
    await backend().resolveUser(BOB);
    expect(w.requests().map((r) => `${r.method} ${r.path} ${r.headers.authorization ?? '-'}`)).toEqual(['POST /_matrix/client/v3/refresh -', `GET ${USER} Bearer syt_fresh`]);
  });
});
