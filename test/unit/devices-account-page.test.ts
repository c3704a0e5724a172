// `devices delete` where the client API cannot delete (Synapse delegating to the Matrix Authentication
// Service: 404 M_UNRECOGNIZED): the account page's deep link per device (MSC4191), the wait until the
// devices are gone, its bounds, Ctrl-C, the admin API's seam; and servers that can still delete.
import { describe, expect, it } from '@jest/globals';
import type { AdminBackend, AdminSession } from '../../src/services/admin/backend.js';
import { adminDeviceDeletion, type DeletionPage } from '../../src/services/devices-account-page.js';
import { DELETION_TIMING, deleteDevicesService, type DeleteInteraction } from '../../src/services/devices.js';
import { HS, ISSUER, T0, hintText, rejectionOf, replyJson, type UnitWorld, worldPerTest, OAUTH_METADATA } from '../support/unit-deps.js';

const DEVICES = '/_matrix/client/v3/devices';
const DELETE = '/_matrix/client/v3/delete_devices';
const META_PATH = '/_matrix/client/v1/auth_metadata';
const ME = '@alice:example.org';
const UNRECOGNIZED = { errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' };
const META = {
  ...OAUTH_METADATA,
  account_management_uri: `${ISSUER}/account/`,
  account_management_actions_supported: ['org.matrix.profile', 'org.matrix.devices_list', 'org.matrix.device_view', 'org.matrix.device_delete'],
  response_types_supported: ['code'],
  grant_types_supported: ['authorization_code', 'refresh_token'],
  response_modes_supported: ['query'],
  code_challenge_methods_supported: ['S256'],
};

let w: UnitWorld;
worldPerTest((made) => (w = made));

const device = (id: string) => ({ device_id: id, display_name: `${id} name`, last_seen_ts: T0 - 60_000, last_seen_ip: '203.0.113.7', user_id: ME });
/** GET /devices answers, in order: each a list of device IDs (the seeded session runs on DEVICE1). */
function deviceLists(...lists: string[][]) {
  for (const ids of lists) replyJson(w.agent, HS, 'GET', DEVICES, 200, { devices: ids.map(device) });
}
const count = (path: string) => w.requests().filter((r) => r.path === path).length;
const pageUrl = (id: string, action = 'org.matrix.device_delete') => `${ISSUER}/account/?action=${action}&device_id=${id}`;

function scriptedUser(onPages: (pages: DeletionPage[]) => void = () => {}) {
  const log: string[] = [];
  const io: DeleteInteraction = {
    interactive: false,
    confirm: async () => true,
    password: async () => {
      throw new Error('no password on this server');
    },
    showAccountPage: async () => {
      throw new Error('no m.oauth stage on this server');
    },
    async showDeletionPages(pages) {
      log.push(...pages.map((p) => `${p.device.deviceId} ${p.url}`));
      onPages(pages);
    },
    waitUntilDone: async () => {},
  };
  return { io, log };
}

/** A MAS-backed server: no client-API deletion, metadata as given. */
function masServer(meta: object = META) {
  replyJson(w.agent, HS, 'POST', DELETE, 404, UNRECOGNIZED);
  replyJson(w.agent, HS, 'GET', META_PATH, 200, meta);
}

describe('no client-API deletion (404 M_UNRECOGNIZED): the account page', () => {
  it('prints the deep link of each device (action=org.matrix.device_delete&device_id=ID), then checks GET /devices every 3 s until they are gone', async () => {
    await w.seed({ oauth: true });
    deviceLists(['DEVICE1', 'LAPTOP', 'OLDPHONE']); // to find the targets
    masServer();
    deviceLists(['DEVICE1', 'LAPTOP', 'OLDPHONE'], ['DEVICE1', 'OLDPHONE'], ['DEVICE1', 'OLDPHONE'], ['DEVICE1']);
    const { io, log } = scriptedUser();
    const result = await deleteDevicesService({ profile: 'default', deviceIds: ['LAPTOP', 'OLDPHONE'], yes: true }, w.deps, io);
    expect(result).toEqual({ profile: 'default', deleted: ['LAPTOP', 'OLDPHONE'] });
    expect(log).toEqual([`LAPTOP ${pageUrl('LAPTOP')}`, `OLDPHONE ${pageUrl('OLDPHONE')}`]);
    expect(w.sleeps).toEqual([3000, 3000, 3000]);
    expect(count(DELETE)).toBe(1); // tried once, without credentials; never retried
    expect(w.notices).toEqual(['Deleted so far: LAPTOP; waiting for OLDPHONE.']);
  });

  it('a password (compatibility) session on the same server: the same pages, from the metadata the server publishes now', async () => {
    await w.seed();
    deviceLists(['DEVICE1', 'LAPTOP']);
    masServer();
    deviceLists(['DEVICE1']);
    const { io, log } = scriptedUser();
    await deleteDevicesService({ profile: 'default', deviceIds: ['LAPTOP'], yes: true }, w.deps, io);
    expect(log).toEqual([`LAPTOP ${pageUrl('LAPTOP')}`]);
    expect(w.sleeps).toEqual([]);
  });

  it('a server that lists only the earlier name org.matrix.session_end (older MAS): that action', async () => {
    await w.seed({ oauth: true });
    deviceLists(['DEVICE1', 'LAPTOP']);
    masServer({ ...META, account_management_actions_supported: ['org.matrix.sessions_list', 'org.matrix.session_end'] });
    deviceLists(['DEVICE1']);
    const { io, log } = scriptedUser();
    await deleteDevicesService({ profile: 'default', deviceIds: ['LAPTOP'], yes: true }, w.deps, io);
    expect(log).toEqual([`LAPTOP ${pageUrl('LAPTOP', 'org.matrix.session_end')}`]);
  });

  it.each([
    ['no device deletion action', { ...META, account_management_actions_supported: ['org.matrix.profile'] }],
    ['no account page', { ...META, account_management_uri: undefined }],
    ['an account page over plain http to another host', { ...META, account_management_uri: 'http://account.example.org/account/' }],
  ])('metadata with %s: exit 2 (M_UNRECOGNIZED, not network trouble), nothing shown', async (_case, meta) => {
    await w.seed({ oauth: true });
    deviceLists(['DEVICE1', 'LAPTOP']);
    masServer(meta);
    const { io, log } = scriptedUser();
    const err = await rejectionOf(() => deleteDevicesService({ profile: 'default', deviceIds: ['LAPTOP'], yes: true }, w.deps, io));
    expect(err).toMatchObject({ code: 'M_UNRECOGNIZED', exitCode: 2 });
    expect(err.message).toBe(
      'matrix.example.org offers no device deletion through the client API (M_UNRECOGNIZED), and its metadata names no account page that deletes devices. Nothing was deleted.',
    );
    expect(hintText(err)).toBe("Delete them from a Matrix client such as Element, or ask the server's admin.");
    expect(log).toEqual([]);
  });

  it('a server without OAuth metadata at all (404 on both paths): the same exit 2', async () => {
    await w.seed();
    deviceLists(['DEVICE1', 'LAPTOP']);
    replyJson(w.agent, HS, 'POST', DELETE, 404, UNRECOGNIZED);
    replyJson(w.agent, HS, 'GET', META_PATH, 404, UNRECOGNIZED);
    replyJson(w.agent, HS, 'GET', '/_matrix/client/unstable/org.matrix.msc2965/auth_metadata', 404, UNRECOGNIZED);
    const err = await rejectionOf(() => deleteDevicesService({ profile: 'default', deviceIds: ['LAPTOP'], yes: true }, w.deps, scriptedUser().io));
    expect(err).toMatchObject({ code: 'M_UNRECOGNIZED', exitCode: 2 });
  });

  it('bounded: still there after 10 minutes → exit 4 (code timeout) naming the device, the page in the hint', async () => {
    await w.seed({ oauth: true, lifetimeMs: null });
    deviceLists(['DEVICE1', 'LAPTOP']);
    masServer();
    replyJson(w.agent, HS, 'GET', DEVICES, 200, { devices: ['DEVICE1', 'LAPTOP'].map(device) }).persist();
    const err = await rejectionOf(() => deleteDevicesService({ profile: 'default', deviceIds: ['LAPTOP'], yes: true }, w.deps, scriptedUser().io));
    expect(err).toMatchObject({ code: 'timeout', exitCode: 4 });
    expect(err.message).toBe('Device LAPTOP is still there after 10m of waiting for the deletion on the account page.');
    expect(hintText(err)).toBe(`Delete it at ${pageUrl('LAPTOP')}, then check with: mxs devices`);
    expect(w.sleeps).toHaveLength(DELETION_TIMING.waitMs / DELETION_TIMING.pollMs);
  });

  it('the interval and the bound are the caller\'s (the command passes 3 s and 10 minutes)', async () => {
    await w.seed({ oauth: true, lifetimeMs: null });
    deviceLists(['DEVICE1', 'LAPTOP']);
    masServer();
    replyJson(w.agent, HS, 'GET', DEVICES, 200, { devices: ['DEVICE1', 'LAPTOP'].map(device) }).persist();
    const timing = { pollMs: 500, waitMs: 2000 };
    const err = await rejectionOf(() => deleteDevicesService({ profile: 'default', deviceIds: ['LAPTOP'], yes: true }, w.deps, scriptedUser().io, { timing }));
    expect(err.message).toContain('after 2s of waiting');
    expect(w.sleeps).toEqual([500, 500, 500, 500]);
  });

  it('Ctrl-C while waiting: exit 130; devices deleted meanwhile are named', async () => {
    await w.seed({ oauth: true });
    deviceLists(['DEVICE1', 'LAPTOP', 'OLDPHONE']);
    masServer();
    deviceLists(['DEVICE1', 'LAPTOP', 'OLDPHONE'], ['DEVICE1', 'OLDPHONE']);
    const controller = new AbortController();
    const { io } = scriptedUser();
    io.signal = controller.signal;
    const sleep = w.deps.sleep;
    let sleeps = 0;
    w.deps.sleep = async (ms, signal) => {
      if (++sleeps === 2) controller.abort(Object.assign(new Error('Cancelled; nothing was deleted.'), { exitCode: 130 }));
      return sleep(ms, signal);
    };
    const err = await rejectionOf(() => deleteDevicesService({ profile: 'default', deviceIds: ['LAPTOP', 'OLDPHONE'], yes: true }, w.deps, io));
    expect(err).toMatchObject({ code: 'cancelled', exitCode: 130, message: 'Cancelled while waiting; deleted meanwhile: LAPTOP.' });
    expect(count(DEVICES)).toBe(3);
  });

  it('Ctrl-C before anything went: the cancellation as the command gave it', async () => {
    await w.seed({ oauth: true });
    deviceLists(['DEVICE1', 'LAPTOP']);
    masServer();
    deviceLists(['DEVICE1', 'LAPTOP']);
    const controller = new AbortController();
    const { io } = scriptedUser(() => controller.abort(Object.assign(new Error('Cancelled; nothing was deleted.'), { exitCode: 130 })));
    io.signal = controller.signal;
    const err = await rejectionOf(() => deleteDevicesService({ profile: 'default', deviceIds: ['LAPTOP'], yes: true }, w.deps, io));
    expect(err).toMatchObject({ exitCode: 130, message: 'Cancelled; nothing was deleted.' });
  });
});

describe('the admin API seam', () => {
  const session = (id: string, deviceId: string | null, finishedAt: string | null = null): AdminSession => ({
    kind: 'oauth2',
    id,
    deviceId,
    client: null,
    createdAt: null,
    lastActiveAt: null,
    lastActiveIp: null,
    userAgent: null,
    finishedAt,
  });
  function fakeBackend(sessions: AdminSession[]) {
    const calls: string[] = [];
    const backend = {
      api: 'mas',
      async resolveUser(user: string) {
        calls.push(`resolve ${user}`);
        return { userId: user, adminId: 'ULID-ALICE' };
      },
      async sessions(user: { adminId: string }, opts: { active: boolean }) {
        calls.push(`sessions ${user.adminId} active=${opts.active}`);
        return sessions;
      },
      async endSessions(ended: AdminSession[]) {
        calls.push(`end ${ended.map((s) => s.id).join(' ')}`);
        return ended.map((s) => s.id);
      },
    } as unknown as AdminBackend;
    return { backend, calls };
  }

  it('adminDeviceDeletion ends the active sessions of those devices and says which devices it ended', async () => {
    const { backend, calls } = fakeBackend([session('S1', 'LAPTOP'), session('S2', 'LAPTOP', '2030-01-01T00:00:00.000Z'), session('S3', 'OTHER'), session('S4', null)]);
    await expect(adminDeviceDeletion(backend)(ME, ['LAPTOP', 'OLDPHONE'])).resolves.toEqual(['LAPTOP']);
    expect(calls).toEqual([`resolve ${ME}`, 'sessions ULID-ALICE active=true', 'end S1']);
  });

  it('with an admin session the admin API deletes (no page shown); what it could not end goes to the account page', async () => {
    await w.seed({ oauth: true });
    deviceLists(['DEVICE1', 'LAPTOP', 'OLDPHONE']);
    masServer();
    deviceLists(['DEVICE1', 'OLDPHONE'], ['DEVICE1']);
    const { backend, calls } = fakeBackend([session('S1', 'LAPTOP')]);
    const { io, log } = scriptedUser();
    const result = await deleteDevicesService({ profile: 'default', deviceIds: ['LAPTOP', 'OLDPHONE'], yes: true }, w.deps, io, {
      timing: DELETION_TIMING,
      admin: async () => adminDeviceDeletion(backend),
    });
    expect(result.deleted).toEqual(['LAPTOP', 'OLDPHONE']);
    expect(calls).toContain('end S1');
    expect(log).toEqual([`OLDPHONE ${pageUrl('OLDPHONE')}`]);
  });

  it('a session that is not an admin one (the seam answers null): the account page', async () => {
    await w.seed({ oauth: true });
    deviceLists(['DEVICE1', 'LAPTOP']);
    masServer();
    deviceLists(['DEVICE1']);
    const { io, log } = scriptedUser();
    await deleteDevicesService({ profile: 'default', deviceIds: ['LAPTOP'], yes: true }, w.deps, io, { timing: DELETION_TIMING, admin: async () => null });
    expect(log).toEqual([`LAPTOP ${pageUrl('LAPTOP')}`]);
  });
});

describe('a server whose client API deletes', () => {
  it('uses its user-interactive auth as before: no metadata read, no page', async () => {
    await w.seed();
    deviceLists(['DEVICE1', 'LAPTOP']);
    replyJson(w.agent, HS, 'POST', DELETE, 401, { flows: [{ stages: ['m.login.password'] }], params: {}, session: 'uia-1' });
    replyJson(w.agent, HS, 'POST', DELETE, 200, {});
    const { io, log } = scriptedUser();
    io.password = async () => 'alice-pw';
    await deleteDevicesService({ profile: 'default', deviceIds: ['LAPTOP'], yes: true }, w.deps, io);
    expect(count(DELETE)).toBe(2);
    expect(count(META_PATH)).toBe(0);
    expect(log).toEqual([]);
  });

  it('a 404 that is not M_UNRECOGNIZED (a proxy page) stays what it was: network trouble, exit 3', async () => {
    await w.seed();
    deviceLists(['DEVICE1', 'LAPTOP']);
    replyJson(w.agent, HS, 'POST', DELETE, 404, { errcode: 'M_NOT_FOUND', error: 'nope' });
    const err = await rejectionOf(() => deleteDevicesService({ profile: 'default', deviceIds: ['LAPTOP'], yes: true }, w.deps, scriptedUser().io));
    expect(err).toMatchObject({ exitCode: 3 });
    expect(count(META_PATH)).toBe(0);
  });
});
