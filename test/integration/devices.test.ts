// `mxs devices`, `devices delete`, `devices rename`: against the homeserver double (legacy password
// UIA, the OAuth m.oauth stage, hostile input) in-process through the command definitions, on a real
// pseudo-terminal and while a login waits through the real CLI; and against a real Synapse (its /devices, its password UIA, --older-than on its own last-seen records).
import { startHomeserverDouble, type HomeserverDouble } from '../support/homeserver-double.js';
import { homePerTest, onTerminal, runMxs, startMxs, type Home, type RunResult } from '../support/cli.js';
import { waitFor, watchStderr } from '../support/fault-kit.js';
import { deviceCodeLogin, mxsInProcess } from '../support/run-command.js';
import { describeWithSynapse, freshSynapseUser, testSynapseUrl } from '../support/synapse.js';

const DAY = 86_400_000;
const DEVICES = '/_matrix/client/v3/devices';
const DELETE = '/_matrix/client/v3/delete_devices';

let home: Home;
homePerTest((h) => (home = h));

const mxs = (args: string[], input?: string, env: Record<string, string> = {}) => runMxs(args, { input, env: { ...home.env, ...env } });
/** In this process (test/support/run-command.ts): for what a process does not change. */
const run = (args: string[], input?: string, env: Record<string, string> = {}) => mxsInProcess(args, { stdin: input, env: { ...home.env, ...env } });

/** stderr without the trailing newline, as lines. */
const errLines = (r: RunResult) => r.stderr.trimEnd().split('\n');

/** A Matrix login outside mxs: another device of the account (curl-like). */
async function rawLogin(baseUrl: string, user: string, password: string, deviceId: string, name?: string): Promise<string> {
  const res = await fetch(`${baseUrl}/_matrix/client/v3/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ type: 'm.login.password', identifier: { type: 'm.id.user', user }, password, device_id: deviceId, ...(name ? { initial_device_display_name: name } : {}) }),
  });
  const body = (await res.json()) as { access_token: string };
  if (res.status !== 200) throw new Error(`login of ${deviceId} answered ${res.status}: ${JSON.stringify(body)}`);
  return body.access_token;
}

async function matrixGet(baseUrl: string, path: string, token: string): Promise<any> {
  const res = await fetch(`${baseUrl}${path}`, { headers: { authorization: `Bearer ${token}` } });
  if (res.status !== 200) throw new Error(`GET ${path} answered ${res.status}`);
  return res.json();
}

describe('against the homeserver double (password account)', () => {
  let hs: HomeserverDouble;
  let current: string;
  const ALICE = '@alice:localhost';
  const ids = () => hs.listDevices(ALICE).map((d) => d.device_id);
  const deletions = () => hs.requests.filter((q) => q.path === DELETE);

  beforeEach(async () => {
    hs = await startHomeserverDouble();
    const login = await run(['login', hs.url, '-u', 'alice', '--password-stdin', '--device-id', 'CURRENTDEV', '--json'], 'alice-pw\n');
    expect(login.code).toBe(0);
    current = login.json().deviceId;
    await rawLogin(hs.url, 'alice', 'alice-pw', 'OLDPHONE', 'Element Android');
    await rawLogin(hs.url, 'alice', 'alice-pw', 'LAPTOP', 'Element Desktop');
    await rawLogin(hs.url, 'alice', 'alice-pw', 'NEVERSEEN');
    hs.setDeviceLastSeen('OLDPHONE', Date.now() - 40 * DAY, '198.51.100.4');
    hs.setDeviceLastSeen('LAPTOP', Date.now() - 3 * DAY - 60_000, '203.0.113.7');
  });
  afterEach(async () => {
    await hs.close();
  });

  it('mxs devices lists every device: the current one first and marked, last seen as "3d ago", the time and the IP', async () => {
    const r = await run(['devices']);
    expect(r.code).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^DEVICE ID\s+NAME\s+LAST SEEN$/);
    expect(lines[1]).toMatch(/^CURRENTDEV\s+mxs on \S+\s+just now \(\d{4}-\d\d-\d\d \d\d:\d\d UTC\) from 127\.0\.0\.1  \(this device\)$/);
    expect(lines[2]).toMatch(/^LAPTOP\s+Element Desktop\s+3d ago \(\d{4}-\d\d-\d\d \d\d:\d\d UTC\) from 203\.0\.113\.7$/);
    expect(lines[3]).toMatch(/^OLDPHONE\s+Element Android\s+40d ago \(.* UTC\) from 198\.51\.100\.4$/);
    expect(lines[4]).toMatch(/^NEVERSEEN\s+-\s+never$/);
    expect(lines).toHaveLength(5);
    expect(r.stderr).toBe('');
  });

  it('mxs devices --json: {profile, devices: [{deviceId, displayName, lastSeenAt, lastSeenIp, current}]}', async () => {
    const r = await run(['devices', '--json']);
    expect(r.code).toBe(0);
    const laptop = hs.listDevices(ALICE).find((d) => d.device_id === 'LAPTOP')!;
    expect(r.json()).toEqual({
      profile: 'default',
      devices: [
        { deviceId: current, displayName: expect.stringMatching(/^mxs on /), lastSeenAt: expect.stringMatching(/Z$/), lastSeenIp: '127.0.0.1', current: true },
        { deviceId: 'LAPTOP', displayName: 'Element Desktop', lastSeenAt: new Date(laptop.last_seen_ts!).toISOString(), lastSeenIp: '203.0.113.7', current: false },
        { deviceId: 'OLDPHONE', displayName: 'Element Android', lastSeenAt: expect.any(String), lastSeenIp: '198.51.100.4', current: false },
        { deviceId: 'NEVERSEEN', displayName: null, lastSeenAt: null, lastSeenIp: null, current: false },
      ],
    });
  });

  it('rename: the server stores the name; --json {profile, deviceId, displayName}', async () => {
    const r = await run(['devices', 'rename', 'LAPTOP', 'work laptop']);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('Renamed device LAPTOP to "work laptop".\n');
    expect(hs.listDevices(ALICE).find((d) => d.device_id === 'LAPTOP')!.display_name).toBe('work laptop');
    const j = await run(['devices', 'rename', 'LAPTOP', 'again', '--json']);
    expect(j.json()).toEqual({ profile: 'default', deviceId: 'LAPTOP', displayName: 'again' });
    const put = hs.requests.filter((q) => q.method === 'PUT').at(-1)!;
    expect(put).toMatchObject({ path: `${DEVICES}/LAPTOP`, body: { display_name: 'again' } });
  });

  it('rename of a device the account does not have: exit 2 with the server\'s M_NOT_FOUND', async () => {
    const r = await run(['devices', 'rename', 'GHOST', 'x', '--json']);
    expect(r.code).toBe(2);
    expect(r.json()).toEqual({ error: { code: 'M_NOT_FOUND', message: 'The account has no device GHOST. Nothing was renamed.', exitCode: 2 } });
  });

  it('delete with the password from --password-stdin and --yes: the UIA password stage completed, the devices gone', async () => {
    const r = await run(['devices', 'delete', 'OLDPHONE', 'LAPTOP', '--yes', '--password-stdin', '--json'], 'alice-pw\n');
    expect(r.code).toBe(0);
    expect(r.json()).toEqual({ profile: 'default', deleted: ['OLDPHONE', 'LAPTOP'] });
    expect(r.stderr).toBe('Deleted 2 devices: OLDPHONE, LAPTOP.\n');
    expect(ids().sort()).toEqual([current, 'NEVERSEEN'].sort());
    const [probe, auth] = deletions();
    expect(probe!.body).toEqual({ devices: ['OLDPHONE', 'LAPTOP'] });
    expect(auth!.body).toEqual({
      devices: ['OLDPHONE', 'LAPTOP'],
      auth: { type: 'm.login.password', identifier: { type: 'm.id.user', user: ALICE }, password: 'alice-pw', session: expect.any(String) },
    });
    expect(hs.deviceDeletions.map((d) => d.outcome)).toEqual(['challenged', 'deleted']);
  });

  it('a wrong password: exit 4, nothing deleted, the password not echoed', async () => {
    const r = await run(['devices', 'delete', 'OLDPHONE', '--yes', '--password-stdin'], 'hunter2-wrong\n');
    expect(r.code).toBe(4);
    expect(errLines(r)).toEqual([
      'Error: The server refused the password of @alice:localhost: Invalid username or password (M_FORBIDDEN). Nothing was deleted.',
      'Check the password and run the command again.',
    ]);
    expect(r.stdout + r.stderr).not.toContain('hunter2');
    expect(ids()).toContain('OLDPHONE');
    expect(hs.deviceDeletions.map((d) => d.outcome)).toEqual(['challenged', 'wrong_password']);
  });

  it('--older-than deletes the devices last seen before then; never-seen ones and the current one stay', async () => {
    hs.setDeviceLastSeen(current, Date.now() - 90 * DAY); // even a stale record of this device never selects it
    const r = await run(['devices', 'delete', '--older-than', '30d', '--yes', '--password-stdin', '--json'], 'alice-pw\n');
    expect(r.code).toBe(0);
    expect(r.json()).toEqual({ profile: 'default', deleted: ['OLDPHONE'] });
    expect(ids().sort()).toEqual([current, 'LAPTOP', 'NEVERSEEN'].sort());
    expect(r.stderr).toContain('1 device with no recorded activity is left alone.');
  });

  it('--older-than with nothing that old: exit 0, nothing sent to delete', async () => {
    const r = await run(['devices', 'delete', '--older-than', '90d', '--yes']);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain('No device was last seen more than 90d ago; nothing was deleted.');
    expect(deletions()).toEqual([]);
  });

  it('never the current device: exit 2 with a hint to use logout, nothing sent', async () => {
    const before = hs.requests.length;
    const r = await run(['devices', 'delete', 'LAPTOP', current, '--yes', '--password-stdin'], 'alice-pw\n');
    expect(r.code).toBe(2);
    expect(errLines(r)).toEqual([`Error: Device ${current} is the one this session (profile default) runs on; mxs never deletes it. Nothing was deleted.`, 'To end this session, run: mxs logout']);
    expect(hs.requests.length).toBe(before);
  });

  it('without a terminal, --yes is required: exit 2, nothing sent', async () => {
    const before = hs.requests.length;
    const r = await run(['devices', 'delete', 'LAPTOP', '--password-stdin', '--json'], 'alice-pw\n');
    expect(r.code).toBe(2);
    expect(r.json().error).toMatchObject({ code: 'usage', exitCode: 2 });
    expect(errLines(r)[1]).toBe('Pass --yes to delete without asking.');
    expect(hs.requests.length).toBe(before);
  });

  it('a device ID the account does not have: exit 2 naming it, nothing deleted', async () => {
    const r = await run(['devices', 'delete', 'LAPTOP', 'LAPTPO', '--yes', '--password-stdin'], 'alice-pw\n');
    expect(r.code).toBe(2);
    expect(errLines(r)[0]).toBe('Error: The account has no device LAPTPO. Nothing was deleted.');
    expect(deletions()).toEqual([]);
    expect(ids()).toContain('LAPTOP');
  });

  it('IDs and --older-than together, or neither: exit 2', async () => {
    expect((await run(['devices', 'delete', 'LAPTOP', '--older-than', '1d', '--yes'])).code).toBe(2);
    expect((await run(['devices', 'delete', '--yes'])).code).toBe(2);
    expect((await run(['devices', 'delete', '--older-than', 'soon', '--yes'])).code).toBe(2);
    expect(deletions()).toEqual([]);
  });

  describe('hostile input', () => {
    it.each([
      ['delete', ['devices', 'delete', 'LAP\x1b]0;pwned\x07TOP', '--yes']],
      ['rename', ['devices', 'rename', 'LAP\x1b[2JTOP', 'name']],
    ])('%s: a device ID with control characters is refused (exit 2), escaped in the message, nothing sent', async (_cmd, args) => {
      const before = hs.requests.length;
      const r = await run(args);
      expect(r.code).toBe(2);
      expect(r.stderr).not.toMatch(/\x1b|\x07/);
      expect(errLines(r)[0]).toMatch(/^Error: The device ID "LAP\\x1b(\]0;pwned\\x07|\[2J)TOP" contains control characters/);
      expect(hs.requests.length).toBe(before);
    });

    it('rename: a NAME with control characters is refused (exit 2), nothing sent', async () => {
      const before = hs.requests.length;
      const r = await run(['devices', 'rename', 'LAPTOP', 'evil\r\nname', '--json']);
      expect(r.code).toBe(2);
      expect(r.json().error.message).toBe('The name "evil\\r\\nname" contains control characters; nothing was renamed.');
      expect(hs.requests.length).toBe(before);
    });

    it('device names and IDs from the server are shown escaped', async () => {
      await rawLogin(hs.url, 'alice', 'alice-pw', 'EVIL\x1b[2J', 'Element\x1b]0;owned\x07\nfake line');
      const r = await run(['devices']);
      expect(r.code).toBe(0);
      expect(r.stdout).not.toMatch(/\x1b|\x07/);
      expect(r.stdout).toContain('EVIL\\x1b[2J  Element\\x1b]0;owned\\x07\\nfake line');
      const j = await run(['devices', '--json']);
      expect(j.json().devices.map((d: { deviceId: string }) => d.deviceId)).toContain('EVIL\x1b[2J');
    });

    it('a device list larger than the 1 MiB cap: exit 3, one clean line, nothing printed to stdout', async () => {
      const devices = Array.from({ length: 12_000 }, (_, i) => ({ device_id: `D${i}`.padEnd(20, 'x'), display_name: 'y'.repeat(40), last_seen_ts: null, last_seen_ip: null, user_id: ALICE }));
      hs.inject(`GET ${DEVICES}`, { json: { devices } }, { json: { devices } }, { json: { devices } });
      const r = await run(['devices']);
      expect(r.code).toBe(3);
      expect(r.stdout).toBe('');
      expect(errLines(r)).toEqual([`Error: ${new URL(hs.url).host} sent a response larger than 1024 KiB; refusing it.`, expect.stringMatching(/^Retry later/)]);
    });

    it('a device list that is not one: exit 3 (bad_response)', async () => {
      hs.inject(`GET ${DEVICES}`, { json: { devices: [{ device_id: 5 }] } });
      const r = await run(['devices', '--json']);
      expect(r.code).toBe(3);
      expect(r.json().error).toMatchObject({ code: 'bad_response', message: expect.stringContaining('has no valid "device_id"') });
    });
  });

  describe('on a terminal (a real pseudo-terminal)', () => {
    it('lists what will be deleted and asks; "n" keeps everything, and a deliberate no is not an error (exit 0)', async () => {
      const { screen, code } = await onTerminal(home.env, [['(y/N)', 'n\r']], ['devices', 'delete', 'LAPTOP', 'OLDPHONE']);
      expect(code).toBe(0);
      expect(screen).toMatch(/About to delete these 2 devices of @alice:localhost:\r?\n\s+LAPTOP\s+Element Desktop\s+last seen 3d ago .*\r?\n\s+OLDPHONE\s+Element Android\s+last seen 40d ago/);
      expect(screen).toMatch(/Nothing was deleted\.\r?\n/);
      expect(screen).not.toContain('Error:');
      expect(deletions()).toEqual([]);
      expect(ids()).toEqual(expect.arrayContaining(['LAPTOP', 'OLDPHONE']));
    });

    it('"y", then the password at the prompt (not echoed): deleted', async () => {
      const { screen, code } = await onTerminal(home.env, 
        [
          ['(y/N)', 'y\r'],
          ['Password for @alice:localhost', 'alice-pw\r'],
        ],
        ['devices', 'delete', 'LAPTOP'],
      );
      expect(code).toBe(0);
      expect(screen).toContain('Deleted device: LAPTOP.');
      expect(screen).not.toContain('alice-pw');
      expect(ids()).not.toContain('LAPTOP');
    });

    it('Ctrl-C at the password prompt: exit 130, nothing deleted', async () => {
      const { screen, code } = await onTerminal(home.env, 
        [
          ['(y/N)', 'y\r'],
          ['Password for', '\x03'],
        ],
        ['devices', 'delete', 'LAPTOP'],
      );
      expect(code).toBe(130);
      expect(screen).toContain('Cancelled at the prompt; nothing was deleted.');
      expect(ids()).toContain('LAPTOP');
      expect(deletions()).toHaveLength(1); // the challenge only
    });
  });
});

describe('against the homeserver double (OAuth account: the m.oauth stage)', () => {
  let hs: HomeserverDouble;
  beforeEach(async () => {
    hs = await startHomeserverDouble({ oauth: { deviceIntervalSec: 1 } });
  });
  afterEach(async () => {
    await hs.close();
  });

  /** A device-code login approved as alice on `profile`; its device ID. */
  async function oauthLogin(profile: string): Promise<string> {
    const r = await deviceCodeLogin(hs, [hs.url, '--json', '-p', profile], { env: home.env });
    expect(r.code).toBe(0);
    return r.json().deviceId;
  }

  it('prints the account page of the m.oauth stage, retries until the device is gone there, and then the server completes the deletion', async () => {
    const mine = await oauthLogin('default');
    const other = await oauthLogin('other');
    const listed = await run(['devices', '--json']);
    expect(listed.json().devices.map((d: { deviceId: string; current: boolean }) => [d.deviceId, d.current])).toEqual([
      [mine, true],
      [other, false],
    ]);

    const deleting = startMxs(['devices', 'delete', other, '--yes', '--browser', '--json'], { env: { ...home.env, MXS_NO_BROWSER: '1' } });
    const err = watchStderr(deleting);
    const [, url] = await err.match(/account page:\n {2}(\S+)\n/);
    expect(url).toBe(`${hs.url}/account/?action=org.matrix.device_delete&device_id=${other}`);
    // Said after the browser was tried (it may come a moment after the URL): wait for it.
    await err.match(/Waiting for the approval \(checking every 3s, for up to 10m; Ctrl-C gives up\)/);
    await waitFor('a retry with the UIA session', () => hs.requests.filter((q) => q.path === DELETE).length >= 2, 10_000, 20);
    hs.endSession(other); // the user deletes the device on the account page
    const r = await deleting.done;
    expect(r.code).toBe(0);
    expect(r.json()).toEqual({ profile: 'default', deleted: [other] });
    const bodies = hs.requests.filter((q) => q.path === DELETE).map((q) => q.body);
    const session = bodies[1].auth.session;
    expect(bodies[0]).toEqual({ devices: [other] });
    expect(bodies.slice(1)).toEqual(bodies.slice(1).map(() => ({ devices: [other], auth: { session } })));
    expect(hs.listDevices('@alice:localhost').map((d) => d.device_id)).toEqual([mine]);
  });

  it('on a terminal: asks, shows the account page, and retries when the user presses Enter', async () => {
    await oauthLogin('default');
    const other = await oauthLogin('other');
    let approved = false;
    const { screen, code } = await onTerminal(home.env, 
      [
        ['(y/N)', 'y\r'],
        ['Press Enter once you have approved it there', '\r', 1],
      ],
      ['devices', 'delete', other],
      (text) => {
        // The user approves on the page before pressing Enter.
        if (!approved && text.includes('approve the deletion on your account page')) {
          approved = true;
          hs.endSession(other);
        }
      },
    );
    expect(code).toBe(0);
    expect(screen).toContain(`${hs.url}/account/?action=org.matrix.device_delete&device_id=${other}`);
    expect(screen).toContain(`Deleted device: ${other}.`);
    expect(screen).not.toContain('Waiting for the approval'); // no polling on a terminal
    expect(hs.requests.filter((q) => q.path === DELETE).map((q) => Boolean(q.body.auth))).toEqual([false, true]);
  });

  it('an OAuth account: its own device is refused the same way (exit 2, hint: mxs logout), nothing sent', async () => {
    const mine = await oauthLogin('default');
    const r = await run(['devices', 'delete', mine, '--yes']);
    expect(r.code).toBe(2);
    expect(errLines(r)[1]).toBe('To end this session, run: mxs logout');
    expect(hs.requests.filter((q) => q.path === DELETE || q.path === DEVICES)).toEqual([]);
  });
});

describeWithSynapse('against a real Synapse (legacy auth)', () => {
  // A user of its own: other test files use alice and bob on the same server at the same time, and
  // `--older-than` would delete their devices.
  let user: string;
  let password: string;
  let userId: string;
  let url: string;

  beforeAll(async () => {
    url = testSynapseUrl();
    ({ user, password, userId } = await freshSynapseUser('devices', url));
  });

  /** Synapse's own view of the account's devices. */
  const synapseDevices = async (token: string) => ((await matrixGet(url, DEVICES, token)).devices as { device_id: string; display_name: string | null; last_seen_ts: number | null }[]);

  it('lists the devices Synapse has, renames one (visible in its /devices), deletes two with the password stage', async () => {
    const login = await mxs(['login', url, '-u', user, '--password-stdin', '--json'], `${password}\n`);
    expect(login.code).toBe(0);
    const mine = login.json().deviceId;
    const checker = await rawLogin(url, user, password, 'CHECKER', 'checker');
    await rawLogin(url, user, password, 'PHONE', 'old phone');
    await rawLogin(url, user, password, 'TABLET');

    const listed = await mxs(['devices', '--json']);
    expect(listed.code).toBe(0);
    const byId = Object.fromEntries(listed.json().devices.map((d: { deviceId: string }) => [d.deviceId, d]));
    // (and the device that the shared-secret registration logged in)
    expect(Object.keys(byId)).toEqual(expect.arrayContaining(['CHECKER', 'PHONE', 'TABLET', mine]));
    expect(Object.keys(byId)).toHaveLength(5);
    expect(byId[mine]).toMatchObject({ current: true, lastSeenIp: '127.0.0.1', lastSeenAt: expect.stringMatching(/Z$/) });
    expect(byId.PHONE).toMatchObject({ displayName: 'old phone', current: false });
    const text = await mxs(['devices']);
    expect(text.stdout).toMatch(new RegExp(`^${mine}\\s+.*\\(this device\\)$`, 'm'));

    expect((await mxs(['devices', 'rename', 'TABLET', 'kitchen tablet'])).code).toBe(0);
    expect((await synapseDevices(checker)).find((d) => d.device_id === 'TABLET')!.display_name).toBe('kitchen tablet');

    const wrong = await mxs(['devices', 'delete', 'PHONE', '--yes', '--password-stdin'], 'not-the-password\n');
    expect(wrong.code).toBe(4);
    expect(errLines(wrong)[0]).toBe(`Error: The server refused the password of ${userId}: Invalid username or password (M_FORBIDDEN). Nothing was deleted.`);

    const r = await mxs(['devices', 'delete', 'PHONE', 'TABLET', '--yes', '--password-stdin', '--json'], `${password}\n`);
    expect(r.code).toBe(0);
    expect(r.json()).toEqual({ profile: 'default', deleted: ['PHONE', 'TABLET'] });
    const left = (await synapseDevices(checker)).map((d) => d.device_id);
    expect(left).toEqual(expect.arrayContaining(['CHECKER', mine]));
    expect(left).not.toContain('PHONE');
    expect(left).not.toContain('TABLET');
    expect(left).toHaveLength(3);
  });

  it('--older-than deletes what Synapse last saw before then, and leaves devices it never saw', async () => {
    const login = await mxs(['login', url, '-u', user, '--password-stdin', '--json', '-p', 'old'], `${password}\n`);
    const mine = login.json().deviceId;
    const used = await rawLogin(url, user, password, 'USEDONCE');
    await matrixGet(url, '/_matrix/client/v3/account/whoami', used); // Synapse records when and from where
    await rawLogin(url, user, password, 'NEVERUSED'); // /login alone records no activity
    await new Promise((r) => setTimeout(r, 2500));
    const listed = (await mxs(['devices', '--json', '-p', 'old'])).json().devices;
    expect(listed.find((d: { deviceId: string }) => d.deviceId === 'NEVERUSED')).toMatchObject({ lastSeenAt: null });

    const r = await mxs(['devices', 'delete', '--older-than', '2s', '--yes', '--password-stdin', '--json', '-p', 'old'], `${password}\n`);
    expect(r.code).toBe(0);
    // Devices of the first test (seen seconds ago, or never) may be here too: only what was seen before the cutoff goes.
    expect(r.json().deleted).toContain('USEDONCE');
    expect(r.json().deleted).not.toContain('NEVERUSED');
    expect(r.json().deleted).not.toContain(mine);
    const left = (await mxs(['devices', '--json', '-p', 'old'])).json().devices.map((d: { deviceId: string }) => d.deviceId);
    expect(left).toEqual(expect.arrayContaining([mine, 'NEVERUSED']));
    expect(left).not.toContain('USEDONCE');
  });
});
