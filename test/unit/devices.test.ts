// `mxs devices` (src/services/devices.ts, src/matrix/devices.ts, src/ui/devices.ts): listing, deleting
// through user-interactive auth (password and m.oauth), renaming; and the homeserver double's devices block.
import { afterEach, describe, expect, it } from '@jest/globals';
import {
  ACCOUNT_PAGE_POLL_MS,
  ACCOUNT_PAGE_WAIT_MS,
  deleteDevicesService,
  listDevicesService,
  renameDeviceService,
  type DeleteInteraction,
  type DeviceEntry,
} from '../../src/services/devices.js';
import { devicesDeleteCommand } from '../../src/cli/commands/devices.js';
import { ago, deletedLine, deviceTable, lastSeen } from '../../src/ui/devices.js';
import { NO_COLORS } from '../../src/ui/output.js';
import { startHomeserverDouble, type HomeserverDouble } from '../support/homeserver-double.js';
import { HS, ISSUER, T0, rejectionOf, replyJson, replyJsonWith, type UnitWorld, hintText, worldPerTest } from '../support/unit-deps.js';

const DEVICES = '/_matrix/client/v3/devices';
const DELETE = '/_matrix/client/v3/delete_devices';
const REFRESH = '/_matrix/client/v3/refresh';
const DAY = 86_400_000;
const ME = '@alice:example.org';
const PASSWORD_FLOWS = { flows: [{ stages: ['m.login.password'] }], params: {}, session: 'uia-1' };

let w: UnitWorld;
worldPerTest((made) => (w = made));

/** Each request as "METHOD path". */
const trail = () => w.requests().map((r) => `${r.method} ${r.path}`);
const bodies = (path: string) => w.requests().filter((r) => r.path === path).map((r) => r.body);

/** A device as Synapse lists it. */
const device = (id: string, lastSeenTs: number | null, name: string | null = `${id} name`, ip: string | null = lastSeenTs === null ? null : '203.0.113.7') => ({
  device_id: id,
  display_name: name,
  last_seen_ts: lastSeenTs,
  last_seen_ip: ip,
  user_id: ME,
});
/** The seeded session runs on DEVICE1. */
const ACCOUNT = [device('DEVICE1', T0 - 60_000), device('OLDPHONE', T0 - 40 * DAY), device('LAPTOP', T0 - 2 * DAY), device('NEVERSEEN', null)];

/** A scripted user: answers, and a log of what they were shown or asked. */
function scriptedUser(opts: { interactive?: boolean; confirm?: boolean; password?: string; onPage?: () => void; onDone?: () => void } = {}) {
  const log: string[] = [];
  const io: DeleteInteraction = {
    interactive: opts.interactive ?? false,
    async confirm(devices, userId) {
      log.push(`confirm ${userId}: ${devices.map((d) => d.deviceId).join(' ')}`);
      return opts.confirm ?? true;
    },
    async password(userId) {
      log.push(`password ${userId}`);
      return opts.password ?? 'alice-pw';
    },
    async showAccountPage(url, devices) {
      log.push(`page ${url} for ${devices.map((d) => d.deviceId).join(' ')}`);
      opts.onPage?.();
    },
    async showDeletionPages(pages) {
      log.push(`pages ${pages.map((p) => p.url).join(' ')}`);
    },
    async waitUntilDone() {
      log.push('done?');
      opts.onDone?.();
    },
  };
  return { io, log };
}

describe('listDevicesService', () => {
  it('lists every device: the current one first and marked, then the most recently seen, never-seen last; times as ISO-8601', async () => {
    await w.seed();
    replyJson(w.agent, HS, 'GET', DEVICES, 200, { devices: [device('NEVERSEEN', null, null), device('OLDPHONE', T0 - 40 * DAY), device('DEVICE1', T0 - 60_000), device('LAPTOP', T0 - 2 * DAY)] });
    const { result, userId } = await listDevicesService('default', w.deps);
    expect(userId).toBe(ME);
    expect(result).toEqual({
      profile: 'default',
      devices: [
        { deviceId: 'DEVICE1', displayName: 'DEVICE1 name', lastSeenAt: new Date(T0 - 60_000).toISOString(), lastSeenIp: '203.0.113.7', current: true },
        { deviceId: 'LAPTOP', displayName: 'LAPTOP name', lastSeenAt: new Date(T0 - 2 * DAY).toISOString(), lastSeenIp: '203.0.113.7', current: false },
        { deviceId: 'OLDPHONE', displayName: 'OLDPHONE name', lastSeenAt: new Date(T0 - 40 * DAY).toISOString(), lastSeenIp: '203.0.113.7', current: false },
        { deviceId: 'NEVERSEEN', displayName: null, lastSeenAt: null, lastSeenIp: null, current: false },
      ],
    });
    expect(w.requests()[0]!.headers.authorization).toBe('Bearer syt_old_access');
  });

  it('refreshes an expired access token first, like every authenticated command', async () => {
    await w.seed({ issuedAt: T0, lifetimeMs: 60_000 });
    w.clock.set(T0 + 2 * 60_000);
    replyJson(w.agent, HS, 'POST', REFRESH, 200, { access_token: 'syt_new', refresh_token: 'syr_new', expires_in_ms: 300_000 });
    replyJson(w.agent, HS, 'GET', DEVICES, 200, { devices: ACCOUNT });
    await listDevicesService('default', w.deps);
    expect(trail()).toEqual([`POST ${REFRESH}`, `GET ${DEVICES}`]);
    expect(w.requests()[1]!.headers.authorization).toBe('Bearer syt_new');
  });

  it.each([
    ['no devices list', { devices: 'all of them' }, /no "devices" list/],
    ['an entry without device_id', { devices: [{ display_name: 'x' }] }, /entry 1, has no valid "device_id"/],
    ['an entry that is not an object', { devices: [device('A', null), 42] }, /entry 2, is not an object/],
    ['a display_name that is not a string', { devices: [{ ...device('A', null), display_name: 7 }] }, /invalid "display_name"/],
    ['a last_seen_ts beyond any date', { devices: [device('A', 1e20)] }, /invalid "last_seen_ts"/],
    ['a negative last_seen_ts', { devices: [device('A', -5)] }, /invalid "last_seen_ts"/],
  ])('a malformed answer (%s) is bad_response, exit 3', async (_case, body, message) => {
    await w.seed();
    replyJson(w.agent, HS, 'GET', DEVICES, 200, body);
    const err = await rejectionOf(() => listDevicesService('default', w.deps));
    expect(err).toMatchObject({ code: 'bad_response', exitCode: 3 });
    expect(err.message).toMatch(message);
  });

  it('not logged in: exit 4, nothing sent', async () => {
    const err = await rejectionOf(() => listDevicesService('default', w.deps));
    expect(err).toMatchObject({ code: 'not_logged_in', exitCode: 4 });
    expect(trail()).toEqual([]);
  });
});

describe('deleteDevicesService: what it refuses before anything is deleted', () => {
  it.each([
    ['device IDs and --older-than together', { deviceIds: ['LAPTOP'], olderThanMs: DAY }, /not both/],
    ['neither device IDs nor --older-than', { deviceIds: [] }, /give their IDs, or --older-than/],
    ['a device ID with control characters', { deviceIds: ['LAP\x1b[2JTOP'] }, /LAP\\x1b\[2JTOP.*control characters/],
    ['an empty device ID', { deviceIds: [''] }, /empty/],
  ])('%s: exit 2, nothing sent', async (_case, input, message) => {
    await w.seed();
    const { io } = scriptedUser();
    const err = await rejectionOf(() => deleteDevicesService({ profile: 'default', yes: true, ...input }, w.deps, io));
    expect(err).toMatchObject({ code: 'usage', exitCode: 2 });
    expect(err.message).toMatch(message);
    expect(err.message).not.toMatch(/\x1b/);
    expect(trail()).toEqual([]);
  });

  it('never the current device: exit 2 with a hint to use logout, nothing sent', async () => {
    await w.seed({ profile: 'work' });
    const { io } = scriptedUser();
    const err = await rejectionOf(() => deleteDevicesService({ profile: 'work', deviceIds: ['LAPTOP', 'DEVICE1'], yes: true }, w.deps, io));
    expect(err).toMatchObject({ code: 'usage', exitCode: 2 });
    expect(err.message).toMatch(/DEVICE1 is the one this session \(profile work\) runs on/);
    expect(hintText(err)).toBe('To end this session, run: mxs logout --profile work');
    expect(trail()).toEqual([]);
  });

  it('without a terminal, --yes is required: exit 2, nothing sent', async () => {
    await w.seed();
    const { io, log } = scriptedUser({ interactive: false });
    const err = await rejectionOf(() => deleteDevicesService({ profile: 'default', deviceIds: ['LAPTOP'], yes: false }, w.deps, io));
    expect(err).toMatchObject({ code: 'usage', exitCode: 2 });
    expect(hintText(err)).toBe('Pass --yes to delete without asking.');
    expect(trail()).toEqual([]);
    expect(log).toEqual([]);
  });

  it('device IDs the account does not have: exit 2 naming them, nothing deleted (Synapse would silently skip them)', async () => {
    await w.seed();
    replyJson(w.agent, HS, 'GET', DEVICES, 200, { devices: ACCOUNT });
    const { io } = scriptedUser();
    const err = await rejectionOf(() => deleteDevicesService({ profile: 'default', deviceIds: ['LAPTOP', 'TYPO', 'GHOST'], yes: true }, w.deps, io));
    expect(err).toMatchObject({ code: 'usage', exitCode: 2 });
    expect(err.message).toBe('The account has no device TYPO, GHOST. Nothing was deleted.');
    expect(trail()).toEqual([`GET ${DEVICES}`]);
  });

  it('the user says no at the confirmation: not an error, the result says nothing was deleted', async () => {
    await w.seed();
    replyJson(w.agent, HS, 'GET', DEVICES, 200, { devices: ACCOUNT });
    const { io, log } = scriptedUser({ interactive: true, confirm: false });
    const result = await deleteDevicesService({ profile: 'default', deviceIds: ['LAPTOP', 'OLDPHONE'], yes: false }, w.deps, io);
    expect(result).toEqual({ profile: 'default', deleted: [], declined: true });
    expect(deletedLine(result, undefined)).toBe('Nothing was deleted.');
    expect(deletedLine(result, 30 * 24 * 3600_000)).toBe('Nothing was deleted.');
    // --json: the normal document, with nothing deleted.
    expect(devicesDeleteCommand.jsonShape!(result)).toEqual({ profile: 'default', deleted: [] });
    expect(log).toEqual([`confirm ${ME}: LAPTOP OLDPHONE`]);
    expect(trail()).toEqual([`GET ${DEVICES}`]);
  });
});

describe('deleteDevicesService: password accounts (m.login.password)', () => {
  it('asks to confirm on a terminal, then completes the password stage in the same UIA session', async () => {
    await w.seed();
    replyJson(w.agent, HS, 'GET', DEVICES, 200, { devices: ACCOUNT });
    replyJson(w.agent, HS, 'POST', DELETE, 401, PASSWORD_FLOWS);
    replyJson(w.agent, HS, 'POST', DELETE, 200, {});
    const { io, log } = scriptedUser({ interactive: true, password: 's3cret' });
    const result = await deleteDevicesService({ profile: 'default', deviceIds: ['LAPTOP', 'OLDPHONE', 'LAPTOP'], yes: false }, w.deps, io);
    expect(result).toEqual({ profile: 'default', deleted: ['LAPTOP', 'OLDPHONE'] });
    expect(log).toEqual([`confirm ${ME}: LAPTOP OLDPHONE`, `password ${ME}`]);
    expect(bodies(DELETE)).toEqual([
      { devices: ['LAPTOP', 'OLDPHONE'] },
      { devices: ['LAPTOP', 'OLDPHONE'], auth: { type: 'm.login.password', identifier: { type: 'm.id.user', user: ME }, password: 's3cret', session: 'uia-1' } },
    ]);
    expect(w.remembered).toContain('s3cret');
  });

  it('a wrong password: exit 4 with the server\'s words, nothing deleted, the password sent once', async () => {
    await w.seed();
    replyJson(w.agent, HS, 'GET', DEVICES, 200, { devices: ACCOUNT });
    replyJson(w.agent, HS, 'POST', DELETE, 401, PASSWORD_FLOWS);
    replyJson(w.agent, HS, 'POST', DELETE, 401, { ...PASSWORD_FLOWS, completed: [], errcode: 'M_FORBIDDEN', error: 'Invalid username or password' });
    const { io } = scriptedUser({ password: 'wrong' });
    const err = await rejectionOf(() => deleteDevicesService({ profile: 'default', deviceIds: ['LAPTOP'], yes: true }, w.deps, io));
    expect(err).toMatchObject({ code: 'M_FORBIDDEN', exitCode: 4 });
    expect(err.message).toBe(`The server refused the password of ${ME}: Invalid username or password (M_FORBIDDEN). Nothing was deleted.`);
    expect(hintText(err)).toBe('Check the password and run the command again.');
    expect(bodies(DELETE)).toHaveLength(2);
  });

  it('a server that asks for no auth at all: deleted by the first request', async () => {
    await w.seed();
    replyJson(w.agent, HS, 'GET', DEVICES, 200, { devices: ACCOUNT });
    replyJson(w.agent, HS, 'POST', DELETE, 200, {});
    const { io, log } = scriptedUser();
    expect(await deleteDevicesService({ profile: 'default', deviceIds: ['LAPTOP'], yes: true }, w.deps, io)).toEqual({ profile: 'default', deleted: ['LAPTOP'] });
    expect(log).toEqual([]);
  });

  it('401 M_UNKNOWN_TOKEN on the deletion: refreshes once and retries with the new token', async () => {
    await w.seed();
    replyJson(w.agent, HS, 'GET', DEVICES, 200, { devices: ACCOUNT });
    replyJson(w.agent, HS, 'POST', DELETE, 401, { errcode: 'M_UNKNOWN_TOKEN', error: 'Access token has expired', soft_logout: true });
    replyJson(w.agent, HS, 'POST', REFRESH, 200, { access_token: 'syt_new', refresh_token: 'syr_new', expires_in_ms: 300_000 });
    replyJson(w.agent, HS, 'POST', DELETE, 401, PASSWORD_FLOWS);
    replyJson(w.agent, HS, 'POST', DELETE, 200, {});
    const { io } = scriptedUser();
    await deleteDevicesService({ profile: 'default', deviceIds: ['LAPTOP'], yes: true }, w.deps, io);
    expect(trail()).toEqual([`GET ${DEVICES}`, `POST ${DELETE}`, `POST ${REFRESH}`, `POST ${DELETE}`, `POST ${DELETE}`]);
    expect(w.requests().at(-1)!.headers.authorization).toBe('Bearer syt_new');
  });

  it.each([
    ['SSO only', { flows: [{ stages: ['m.login.sso'] }], session: 's' }, /m\.login\.sso/],
    ['two stages', { flows: [{ stages: ['m.login.password', 'm.login.recaptcha'] }], session: 's' }, /m\.login\.password \+ m\.login\.recaptcha/],
    ['no flows', { flows: [], session: 's' }, /nothing mxs knows/],
  ])('stages mxs cannot complete (%s): exit 2, nothing deleted', async (_case, challenge, message) => {
    await w.seed();
    replyJson(w.agent, HS, 'GET', DEVICES, 200, { devices: ACCOUNT });
    replyJson(w.agent, HS, 'POST', DELETE, 401, challenge);
    const { io, log } = scriptedUser();
    const err = await rejectionOf(() => deleteDevicesService({ profile: 'default', deviceIds: ['LAPTOP'], yes: true }, w.deps, io));
    expect(err).toMatchObject({ code: 'usage', exitCode: 2 });
    expect(err.message).toMatch(message);
    expect(log).toEqual([]);
    expect(bodies(DELETE)).toHaveLength(1);
  });
});

describe('deleteDevicesService: --older-than', () => {
  it('deletes the devices last seen before now − DURATION; leaves never-seen ones and the current one alone, and says so', async () => {
    await w.seed();
    const account = [device('DEVICE1', T0 - 50 * DAY), ...ACCOUNT.slice(1), device('EXACTLY30D', T0 - 30 * DAY)];
    replyJson(w.agent, HS, 'GET', DEVICES, 200, { devices: account });
    replyJson(w.agent, HS, 'POST', DELETE, 401, PASSWORD_FLOWS);
    replyJson(w.agent, HS, 'POST', DELETE, 200, {});
    const { io } = scriptedUser();
    const result = await deleteDevicesService({ profile: 'default', deviceIds: [], olderThanMs: 30 * DAY, yes: true }, w.deps, io);
    expect(result.deleted).toEqual(['OLDPHONE']);
    expect(bodies(DELETE)[0]).toEqual({ devices: ['OLDPHONE'] });
    expect(w.notices).toEqual([
      "This session's own device matches too; it is kept (end it with mxs logout).",
      '1 device with no recorded activity is left alone.',
    ]);
  });

  it('nothing that old: no deletion request, no question, deleted []', async () => {
    await w.seed();
    replyJson(w.agent, HS, 'GET', DEVICES, 200, { devices: ACCOUNT });
    const { io, log } = scriptedUser({ interactive: true });
    expect(await deleteDevicesService({ profile: 'default', deviceIds: [], olderThanMs: 90 * DAY, yes: false }, w.deps, io)).toEqual({ profile: 'default', deleted: [] });
    expect(trail()).toEqual([`GET ${DEVICES}`]);
    expect(log).toEqual([]);
  });
});

describe('deleteDevicesService: OAuth accounts (the m.oauth stage)', () => {
  const PAGE = `${ISSUER}/account?action=org.matrix.devices_list`;
  const oauthChallenge = (url: unknown = PAGE) => ({ flows: [{ stages: ['m.oauth'] }], params: { 'm.oauth': { url } }, session: 'uia-o' });

  it('without a terminal: shows the page, then retries with auth {session} every few seconds until the server sees it approved', async () => {
    await w.seed({ oauth: true });
    replyJson(w.agent, HS, 'GET', DEVICES, 200, { devices: ACCOUNT });
    replyJson(w.agent, HS, 'POST', DELETE, 401, oauthChallenge()).times(3);
    replyJson(w.agent, HS, 'POST', DELETE, 200, {});
    const { io, log } = scriptedUser({ interactive: false });
    const result = await deleteDevicesService({ profile: 'default', deviceIds: ['LAPTOP', 'OLDPHONE'], yes: true }, w.deps, io);
    expect(result.deleted).toEqual(['LAPTOP', 'OLDPHONE']);
    expect(log).toEqual([`page ${PAGE} for LAPTOP OLDPHONE`]);
    expect(bodies(DELETE)).toEqual([
      { devices: ['LAPTOP', 'OLDPHONE'] },
      { devices: ['LAPTOP', 'OLDPHONE'], auth: { session: 'uia-o' } },
      { devices: ['LAPTOP', 'OLDPHONE'], auth: { session: 'uia-o' } },
      { devices: ['LAPTOP', 'OLDPHONE'], auth: { session: 'uia-o' } },
    ]);
    expect(w.sleeps).toEqual([ACCOUNT_PAGE_POLL_MS, ACCOUNT_PAGE_POLL_MS, ACCOUNT_PAGE_POLL_MS]);
  });

  it('on a terminal: waits for Enter before each retry, and says so when the server has not seen the approval yet', async () => {
    await w.seed({ oauth: true });
    replyJson(w.agent, HS, 'GET', DEVICES, 200, { devices: ACCOUNT });
    replyJson(w.agent, HS, 'POST', DELETE, 401, oauthChallenge()).times(2);
    replyJson(w.agent, HS, 'POST', DELETE, 200, {});
    const { io, log } = scriptedUser({ interactive: true });
    await deleteDevicesService({ profile: 'default', deviceIds: ['LAPTOP'], yes: false }, w.deps, io);
    expect(log).toEqual([`confirm ${ME}: LAPTOP`, `page ${PAGE} for LAPTOP`, 'done?', 'done?']);
    expect(w.notices).toEqual([expect.stringMatching(/has not seen the deletion approved yet/)]);
    expect(w.sleeps).toEqual([]);
  });

  it('without a terminal the wait is bounded: exit 4 (code timeout) after 10 minutes of polling', async () => {
    await w.seed({ oauth: true, lifetimeMs: null });
    replyJson(w.agent, HS, 'GET', DEVICES, 200, { devices: ACCOUNT });
    replyJson(w.agent, HS, 'POST', DELETE, 401, oauthChallenge()).persist();
    const { io } = scriptedUser({ interactive: false });
    const err = await rejectionOf(() => deleteDevicesService({ profile: 'default', deviceIds: ['LAPTOP'], yes: true }, w.deps, io));
    expect(err).toMatchObject({ code: 'timeout', exitCode: 4 });
    expect(hintText(err)).toBe(`Approve it at ${PAGE}, then run the command again.`);
    expect(w.sleeps).toHaveLength(ACCOUNT_PAGE_WAIT_MS / ACCOUNT_PAGE_POLL_MS);
  });

  it('Ctrl-C while polling: the cancellation, no further request', async () => {
    await w.seed({ oauth: true });
    replyJson(w.agent, HS, 'GET', DEVICES, 200, { devices: ACCOUNT });
    replyJson(w.agent, HS, 'POST', DELETE, 401, oauthChallenge());
    const controller = new AbortController();
    const { io } = scriptedUser({ interactive: false, onPage: () => controller.abort(Object.assign(new Error('Cancelled; nothing was deleted.'), { exitCode: 130 })) });
    io.signal = controller.signal;
    const err = await rejectionOf(() => deleteDevicesService({ profile: 'default', deviceIds: ['LAPTOP'], yes: true }, w.deps, io));
    expect(err).toMatchObject({ exitCode: 130 });
    expect(bodies(DELETE)).toHaveLength(1);
  });

  it.each([
    ['no url', null, `${ISSUER}/account?action=org.matrix.device_delete&device_id=LAPTOP`],
    ['a javascript: url', 'javascript:alert(1)', `${ISSUER}/account?action=org.matrix.device_delete&device_id=LAPTOP`],
    ['a plain-http url to another host', 'http://evil.example/account', `${ISSUER}/account?action=org.matrix.device_delete&device_id=LAPTOP`],
    ['an https url', 'https://auth.example.org/account/?x=1', 'https://auth.example.org/account/?x=1'],
  ])('the page shown when the stage gives %s: the server\'s https page, else the session\'s account page for that device', async (_case, url, shown) => {
    await w.seed({ oauth: true });
    replyJson(w.agent, HS, 'GET', DEVICES, 200, { devices: ACCOUNT });
    replyJson(w.agent, HS, 'POST', DELETE, 401, oauthChallenge(url));
    replyJson(w.agent, HS, 'POST', DELETE, 200, {});
    const { io, log } = scriptedUser();
    await deleteDevicesService({ profile: 'default', deviceIds: ['LAPTOP'], yes: true }, w.deps, io);
    expect(log[0]).toBe(`page ${shown} for LAPTOP`);
  });
});

describe('renameDeviceService', () => {
  it('PUTs the display name to /devices/{id}, the ID URL-encoded', async () => {
    await w.seed();
    replyJson(w.agent, HS, 'PUT', `${DEVICES}/LAP%2FTOP%20X`, 200, {});
    expect(await renameDeviceService('default', 'LAP/TOP X', 'work laptop', w.deps)).toEqual({ profile: 'default', deviceId: 'LAP/TOP X', displayName: 'work laptop' });
    expect(w.requests().map((r) => [r.method, r.path, r.body])).toEqual([['PUT', `${DEVICES}/LAP%2FTOP%20X`, { display_name: 'work laptop' }]]);
  });

  it.each([
    ['a name with control characters', 'LAPTOP', 'evil\x1b]0;pwned\x07', /evil\\x1b\]0;pwned\\x07.*control characters/],
    ['an empty name', 'LAPTOP', '  ', /NAME is empty/],
    ['a device ID with control characters', 'LAP\nTOP', 'fine', /LAP\\nTOP/],
  ])('%s: exit 2, nothing sent', async (_case, id, name, message) => {
    await w.seed();
    const err = await rejectionOf(() => renameDeviceService('default', id, name, w.deps));
    expect(err).toMatchObject({ code: 'usage', exitCode: 2 });
    expect(err.message).toMatch(message);
    expect(trail()).toEqual([]);
  });

  it.each([
    ['404 M_NOT_FOUND (no such device)', 404, { errcode: 'M_NOT_FOUND', error: 'Not found' }, 'M_NOT_FOUND', /has no device GHOST/],
    ['400 M_TOO_LARGE (name too long)', 400, { errcode: 'M_TOO_LARGE', error: 'Device display name is too long (max 100)' }, 'M_TOO_LARGE', /refused the name: Device display name is too long/],
  ])('the server answers %s: exit 2 with the errcode', async (_case, status, body, code, message) => {
    await w.seed();
    replyJson(w.agent, HS, 'PUT', `${DEVICES}/GHOST`, status, body);
    const err = await rejectionOf(() => renameDeviceService('default', 'GHOST', 'x', w.deps));
    expect(err).toMatchObject({ code, exitCode: 2 });
    expect(err.message).toMatch(message);
  });

  it('a 5xx stays network trouble (exit 3)', async () => {
    await w.seed();
    replyJsonWith(w.agent, HS, 'PUT', `${DEVICES}/LAPTOP`, () => ({ status: 502, body: 'bad gateway' })).times(3);
    const err = await rejectionOf(() => renameDeviceService('default', 'LAPTOP', 'x', w.deps));
    expect(err).toMatchObject({ exitCode: 3 });
  });
});

describe('rendering', () => {
  it.each([
    [0, 'just now'],
    [59_000, 'just now'],
    [-5 * 60_000, 'just now'],
    [5 * 60_000, '5m ago'],
    [3 * 3_600_000 + 59 * 60_000, '3h ago'],
    [3 * DAY + 23 * 3_600_000, '3d ago'],
    [400 * DAY, '400d ago'],
  ])('ago(%d) is %s', (ms, text) => {
    expect(ago(ms)).toBe(text);
  });

  const entry = (over: Partial<DeviceEntry>): DeviceEntry => ({ deviceId: 'A', displayName: null, lastSeenAt: null, lastSeenIp: null, current: false, ...over });

  it('last seen: relative, the UTC time and the IP; or never', () => {
    expect(lastSeen(entry({ lastSeenAt: new Date(T0 - 3 * DAY).toISOString(), lastSeenIp: '203.0.113.7' }), T0)).toBe('3d ago (2029-12-29 12:00 UTC) from 203.0.113.7');
    expect(lastSeen(entry({ lastSeenAt: new Date(T0 - 3 * DAY).toISOString() }), T0)).toBe('3d ago (2029-12-29 12:00 UTC)');
    expect(lastSeen(entry({}), T0)).toBe('never');
  });

  it('the table aligns columns, marks the current device, and escapes server text', () => {
    const lines = deviceTable(
      {
        userId: ME,
        result: {
          profile: 'default',
          devices: [
            entry({ deviceId: 'DEVICE1', displayName: 'mxs on box', lastSeenAt: new Date(T0).toISOString(), lastSeenIp: '127.0.0.1', current: true }),
            entry({ deviceId: 'EVIL\x1b[2J', displayName: 'Element\r\nfake line', lastSeenIp: '\x07' }),
          ],
        },
      },
      T0,
      NO_COLORS,
    );
    expect(lines).toEqual([
      'DEVICE ID    NAME                  LAST SEEN',
      'DEVICE1      mxs on box            just now (2030-01-01 12:00 UTC) from 127.0.0.1  (this device)',
      'EVIL\\x1b[2J  Element\\r\\nfake line  never',
    ]);
  });
});

// The homeserver double's devices block (test/support/homeserver-double.ts): the rules in its comment.
describe('homeserver double: devices', () => {
  let hs: HomeserverDouble;
  afterEach(async () => {
    await hs?.close();
  });

  async function call(method: string, path: string, token?: string, body?: unknown) {
    const res = await fetch(hs.url + path, {
      method,
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: res.status, json: (await res.json()) as any };
  }
  async function login(deviceId: string, name?: string, user = 'alice', password = 'alice-pw') {
    const r = await call('POST', '/_matrix/client/v3/login', undefined, {
      type: 'm.login.password',
      identifier: { type: 'm.id.user', user },
      password,
      device_id: deviceId,
      ...(name ? { initial_device_display_name: name } : {}),
    });
    expect(r.status).toBe(200);
    return r.json.access_token as string;
  }
  const passwordAuth = (session: string, password: string, user = '@alice:localhost') => ({ type: 'm.login.password', identifier: { type: 'm.id.user', user }, password, session });

  it('GET /devices lists the live devices with names; last seen is set by authenticated requests, not by /login', async () => {
    hs = await startHomeserverDouble({ users: { alice: 'alice-pw', bob: 'bob-pw' } });
    const a = await login('AAAA', 'first');
    await login('BBBB');
    await login('CCCC', undefined, 'bob', 'bob-pw');
    const before = Date.now();
    const r = await call('GET', DEVICES, a);
    expect(r.status).toBe(200);
    expect(r.json.devices).toEqual([
      { device_id: 'AAAA', display_name: 'first', last_seen_ip: '127.0.0.1', last_seen_ts: expect.any(Number), user_id: '@alice:localhost' },
      { device_id: 'BBBB', display_name: null, last_seen_ip: null, last_seen_ts: null, user_id: '@alice:localhost' },
    ]);
    expect(r.json.devices[0].last_seen_ts).toBeGreaterThanOrEqual(before);
    hs.setDeviceLastSeen('BBBB', 1000, '198.51.100.1');
    expect(hs.listDevices('@alice:localhost')[1]).toMatchObject({ last_seen_ts: 1000, last_seen_ip: '198.51.100.1' });
    expect(() => hs.setDeviceLastSeen('NOPE', 1)).toThrow(/no live device/);
  });

  it('PUT /devices/{id} renames; 404 for an unknown device, 400 for a long or non-string name; GET /devices/{id}', async () => {
    hs = await startHomeserverDouble();
    const a = await login('AAAA');
    expect(await call('PUT', `${DEVICES}/AAAA`, a, { display_name: 'renamed' })).toEqual({ status: 200, json: {} });
    expect((await call('GET', `${DEVICES}/AAAA`, a)).json).toMatchObject({ device_id: 'AAAA', display_name: 'renamed' });
    expect(await call('PUT', `${DEVICES}/NOPE`, a, { display_name: 'x' })).toMatchObject({ status: 404, json: { errcode: 'M_NOT_FOUND' } });
    expect(await call('GET', `${DEVICES}/NOPE`, a)).toMatchObject({ status: 404, json: { errcode: 'M_NOT_FOUND' } });
    expect(await call('PUT', `${DEVICES}/AAAA`, a, { display_name: 'x'.repeat(101) })).toMatchObject({ status: 400, json: { errcode: 'M_TOO_LARGE' } });
    expect(await call('PUT', `${DEVICES}/AAAA`, a, { display_name: 5 })).toMatchObject({ status: 400, json: { errcode: 'M_BAD_JSON' } });
  });

  it('legacy POST /delete_devices: password UIA; a wrong password keeps the session; the right one deletes (unknown IDs ignored)', async () => {
    hs = await startHomeserverDouble();
    const a = await login('AAAA');
    await login('BBBB');
    const first = await call('POST', DELETE, a, { devices: ['BBBB', 'UNKNOWN'] });
    expect(first).toEqual({ status: 401, json: { flows: [{ stages: ['m.login.password'] }], params: {}, session: expect.any(String) } });
    const session = first.json.session;
    const wrong = await call('POST', DELETE, a, { devices: ['BBBB'], auth: passwordAuth(session, 'nope') });
    expect(wrong).toEqual({ status: 401, json: { flows: [{ stages: ['m.login.password'] }], params: {}, session, completed: [], errcode: 'M_FORBIDDEN', error: 'Invalid username or password' } });
    expect(hs.listDevices('@alice:localhost').map((d) => d.device_id)).toEqual(['AAAA', 'BBBB']);
    expect(await call('POST', DELETE, a, { devices: ['BBBB', 'UNKNOWN'], auth: passwordAuth(session, 'alice-pw') })).toEqual({ status: 200, json: {} });
    expect(hs.listDevices('@alice:localhost').map((d) => d.device_id)).toEqual(['AAAA']);
    expect(await call('POST', DELETE, a, { devices: ['BBBB'], auth: passwordAuth(session, 'alice-pw') })).toEqual({ status: 200, json: {} });
    expect(await call('POST', DELETE, a, { devices: ['BBBB'], auth: passwordAuth('made-up', 'alice-pw') })).toMatchObject({ status: 400, json: { errcode: 'M_UNKNOWN' } });
    expect(hs.deviceDeletions.map((d) => d.outcome)).toEqual(['challenged', 'wrong_password', 'deleted', 'deleted', 'rejected']);
  });

  it('a device that ends takes its name and activity with it: logging in again with its ID starts afresh', async () => {
    hs = await startHomeserverDouble();
    const a = await login('AAAA', 'first');
    await call('PUT', `${DEVICES}/AAAA`, a, { display_name: 'renamed' });
    expect((await call('POST', '/_matrix/client/v3/logout', a, {})).status).toBe(200);
    await login('AAAA');
    expect(hs.listDevices('@alice:localhost')).toEqual([expect.objectContaining({ device_id: 'AAAA', display_name: null, last_seen_ts: null })]);
  });

  it('OAuth mode: GET and PUT /devices work on MAS sessions; delete_devices keeps its m.oauth stage', async () => {
    hs = await startHomeserverDouble({ oauth: { compat: true } });
    const a = await login('AAAA', 'compat one');
    expect((await call('GET', DEVICES, a)).json.devices).toEqual([expect.objectContaining({ device_id: 'AAAA', display_name: 'compat one', last_seen_ip: '127.0.0.1' })]);
    expect((await call('PUT', `${DEVICES}/AAAA`, a, { display_name: 'renamed' })).status).toBe(200);
    expect(hs.listDevices('@alice:localhost')[0]!.display_name).toBe('renamed');
    expect((await call('POST', DELETE, a, { devices: ['AAAA'] })).json.flows).toEqual([{ stages: ['m.oauth'] }]);
  });
});
