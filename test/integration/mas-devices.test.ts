// `devices delete` and `login --device-id` against the homeserver double as Synapse with the Matrix
// Authentication Service (test/support/mas-devices.ts: no client-API deletion, the account page's deep
// links), in-process through the command definitions with a short interval and a fake browser.
import { devicesDeleteDefinition } from '../../src/cli/commands/devices.js';
import { makeHome } from '../support/cli.js';
import { waitFor } from '../support/fault-kit.js';
import { startHomeserverDouble, type HomeserverDouble } from '../support/homeserver-double.js';
import { startMasAdminDouble } from '../support/mas-admin-double.js';
import { exchangeProblems } from '../support/mas-admin-openapi.js';
import { masDevicesRules, startMasDevicesDouble, type MasDevicesDouble } from '../support/mas-devices.js';
import { deviceCodeLogin, mxsInProcess, runCommand } from '../support/run-command.js';

const DELETE = '/_matrix/client/v3/delete_devices';
const ALICE = '@alice:localhost';
const TIMING = { pollMs: 20, waitMs: 600 };

let home: Awaited<ReturnType<typeof makeHome>>;
const closers: (() => Promise<unknown>)[] = [];
beforeEach(async () => {
  home = await makeHome('file');
});
afterEach(async () => {
  while (closers.length) await closers.pop()!();
  await home.cleanup();
});

const run = (args: string[], input?: string) => mxsInProcess(args, { stdin: input, env: home.env });

/** `mxs devices delete ARGS…` with the test's interval and a browser that records what it was given (and may act as the user). */
function deleteDevices(args: string[], browser: (url: string) => void = () => {}, interrupts = false) {
  const opened: string[] = [];
  const command = devicesDeleteDefinition({
    timing: TIMING,
    open: async (url) => {
      opened.push(url);
      browser(url);
      return true;
    },
  });
  return { opened, done: runCommand(command, args, { env: home.env, interrupts }) };
}

async function masDouble(opts: Parameters<typeof startMasDevicesDouble>[0] = {}): Promise<MasDevicesDouble> {
  const hs = await startMasDevicesDouble({ oauth: { deviceIntervalSec: 0 }, ...opts });
  closers.push(() => hs.close());
  return hs;
}

/** A device-code login approved as alice, in this process; its device ID. */
async function oauthLogin(hs: HomeserverDouble, profile: string): Promise<string> {
  const r = await deviceCodeLogin(hs, [hs.url, '--json', '-p', profile], { env: home.env });
  expect(r.code).toBe(0);
  return r.json().deviceId;
}

const liveDevices = (hs: HomeserverDouble) => hs.listDevices(ALICE).map((d) => d.device_id);
/** GET /devices requests after the first deletion attempt: mxs checking whether the devices are gone. */
const checksAfterDelete = (hs: HomeserverDouble) => {
  const first = hs.requests.findIndex((q) => q.path === DELETE);
  return first < 0 ? 0 : hs.requests.slice(first).filter((q) => q.method === 'GET' && q.path === '/_matrix/client/v3/devices').length;
};

describe('devices delete on Synapse with the Matrix Authentication Service', () => {
  it('prints the account page for each device (action=org.matrix.device_delete&device_id=ID), waits, and succeeds once they are gone', async () => {
    const hs = await masDouble();
    const mine = await oauthLogin(hs, 'default');
    const laptop = await oauthLogin(hs, 'laptop');
    const phone = await oauthLogin(hs, 'phone');
    const { opened, done } = deleteDevices([laptop, phone, '--yes', '--json']);
    await waitFor('the device list checked twice after the deletion was tried', () => checksAfterDelete(hs) >= 2, 5000, 5);
    expect(opened).toEqual([]); // no --browser: nothing opened
    for (const id of [laptop, phone]) {
      await fetch(`${hs.url}/account/?action=org.matrix.device_delete&device_id=${id}`); // the user follows the printed link
      hs.approveDeletion(id);
    }
    const r = await done;
    expect(r.exitCode).toBe(0);
    expect(r.json()).toEqual({ profile: 'default', deleted: [laptop, phone] });
    const lines = r.stderr.split('\n');
    expect(lines).toContain('This server deletes devices on its account page: open the link of each device and confirm there.');
    expect(lines).toContain(`  ${laptop}: ${hs.url}/account/?action=org.matrix.device_delete&device_id=${laptop}`);
    expect(lines).toContain(`  ${phone}: ${hs.url}/account/?action=org.matrix.device_delete&device_id=${phone}`);
    expect(lines).toContain('Waiting until they are gone (checking every 20ms, for up to 600ms; Ctrl-C gives up)...');
    expect(r.stderr).not.toMatch(/Retry later|Unrecognized/);
    expect(liveDevices(hs)).toEqual([mine]);
    expect(hs.requests.filter((q) => q.path === DELETE)).toHaveLength(1);
  });

  it('--browser opens each link; the user deletes there and mxs sees it', async () => {
    const hs = await masDouble({ approveOnVisit: true });
    await oauthLogin(hs, 'default');
    const other = await oauthLogin(hs, 'other');
    const { opened, done } = deleteDevices([other, '--yes', '--browser'], (url) => void fetch(url));
    const r = await done;
    expect(r.exitCode).toBe(0);
    expect(opened).toEqual([`${hs.url}/account/?action=org.matrix.device_delete&device_id=${other}`]);
    expect(hs.accountPageVisits).toEqual([{ action: 'org.matrix.device_delete', deviceId: other }]);
    expect(r.stderr.split('\n').slice(0, 4)).toEqual([
      'This server deletes devices on its account page: open this link and confirm there.',
      `  ${other}: ${opened[0]}`,
      '(opened in your browser)',
      'Waiting until it is gone (checking every 20ms, for up to 600ms; Ctrl-C gives up)...',
    ]);
    expect(r.stderr).toContain(`Deleted device: ${other}.`);
  });

  it('a device never deleted there: exit 4 after the bound, naming it, the page in the hint; the device stays', async () => {
    const hs = await masDouble();
    await oauthLogin(hs, 'default');
    const other = await oauthLogin(hs, 'other');
    const r = await deleteDevices([other, '--yes']).done;
    expect(r.exitCode).toBe(4);
    expect(r.stderr.trimEnd().split('\n').slice(-2)).toEqual([
      `Error: Device ${other} is still there after 600ms of waiting for the deletion on the account page.`,
      `Delete it at ${hs.url}/account/?action=org.matrix.device_delete&device_id=${other}, then check with: mxs devices`,
    ]);
    expect(liveDevices(hs)).toContain(other);
  });

  it('Ctrl-C while waiting: exit 130, nothing deleted', async () => {
    const hs = await masDouble();
    await oauthLogin(hs, 'default');
    const other = await oauthLogin(hs, 'other');
    const before = process.listeners('SIGINT');
    const { done } = deleteDevices([other, '--yes'], undefined, true);
    await waitFor('the wait', () => checksAfterDelete(hs) >= 2, 5000, 5);
    const added = process.listeners('SIGINT').filter((l) => !before.includes(l));
    expect(added).toHaveLength(1);
    (added[0] as () => void)(); // the command's own SIGINT handler, as a Ctrl-C calls it
    const r = await done;
    expect(r.exitCode).toBe(130);
    expect(r.stderr.trimEnd().split('\n').at(-1)).toBe('Error: Cancelled; nothing was deleted.');
    expect(liveDevices(hs)).toContain(other);
  });

  it('a password (compatibility) session: the same account page', async () => {
    const hs = await masDouble({ oauth: { compat: true, deviceIntervalSec: 0 }, approveOnVisit: true });
    const login = await run(['login', hs.url, '-u', 'alice', '--password-stdin', '--method', 'password', '--json'], 'alice-pw\n');
    expect(login.code).toBe(0);
    expect(login.json().method).toBe('password');
    const other = await oauthLogin(hs, 'other');
    const r = await deleteDevices([other, '--yes', '--browser'], (url) => void fetch(url)).done;
    expect(r.exitCode).toBe(0);
    expect(r.stderr).toContain(`  ${other}: ${hs.url}/account/?action=org.matrix.device_delete&device_id=${other}`);
    expect(liveDevices(hs)).toEqual([login.json().deviceId]);
  });

  it('metadata without a deletion action: exit 2 saying so (not network trouble), nothing deleted', async () => {
    const hs = await masDouble({ accountActions: ['org.matrix.profile'] });
    await oauthLogin(hs, 'default');
    const other = await oauthLogin(hs, 'other');
    const r = await deleteDevices([other, '--yes', '--json']).done;
    expect(r.exitCode).toBe(2);
    expect(r.json().error).toMatchObject({ code: 'M_UNRECOGNIZED', exitCode: 2 });
    expect(liveDevices(hs)).toContain(other);
  });
});

describe('devices delete with an admin session, on Synapse with the Matrix Authentication Service', () => {
  /** The MAS devices rules and the MAS admin mode together; alice may request admin. */
  async function adminDouble() {
    const rules = masDevicesRules();
    const hs = rules.attach(await startMasAdminDouble({ users: { alice: 'alice-pw' }, oauth: { deviceIntervalSec: 0 }, masAdmin: { admins: ['alice'] }, intercept: rules.intercept }));
    closers.push(() => hs.close());
    return hs;
  }

  /** alice's own session, by `mxs login` (with `--admin`: the admin scopes granted); its device ID. */
  async function loginAlice(hs: Awaited<ReturnType<typeof adminDouble>>, ...flags: string[]): Promise<string> {
    const r = await deviceCodeLogin(hs, [hs.url, '--json', ...flags], { env: home.env });
    expect(r.code).toBe(0);
    return r.json().deviceId;
  }

  /** A second session of alice's (a phone), listed by the admin API: its device ID. */
  function phoneOf(hs: Awaited<ReturnType<typeof adminDouble>>): string {
    const id = hs.admin.addSession({ kind: 'oauth2', user: 'alice', clientName: 'Phone' });
    return /urn:matrix:client:device:(\S+)/.exec(String(hs.admin.row(id)!.attributes.scope))![1]!;
  }

  it('ends the devices through the admin API: no account page, the device gone, every exchange as MAS documents it', async () => {
    const hs = await adminDouble();
    const mine = await loginAlice(hs, '--admin');
    const phone = phoneOf(hs);
    expect(liveDevices(hs)).toEqual(expect.arrayContaining([mine, phone]));
    const { opened, done } = deleteDevices([phone, '--yes', '--json']);
    const r = await done;
    expect(r.exitCode).toBe(0);
    expect(r.json()).toEqual({ profile: 'default', deleted: [phone] });
    expect(r.stderr).toContain(`mxs: Using the Matrix Authentication Service admin API at ${hs.issuer!.replace(/\/$/, '')}/api/admin/v1.`);
    expect(r.stderr).not.toMatch(/account page/);
    expect(opened).toEqual([]);
    expect(hs.accountPageVisits).toEqual([]);
    expect(liveDevices(hs)).toEqual([mine]);
    expect(hs.admin.exchanges.filter((x) => x.method === 'POST').map((x) => x.path)).toEqual([expect.stringMatching(/^\/api\/admin\/v1\/oauth2-sessions\/[0-9A-Z]{26}\/finish$/)]);
    expect(exchangeProblems(hs.admin.exchanges)).toEqual([]);
  });

  it('a session without the admin scopes: the account page, and the admin API never asked', async () => {
    const hs = await adminDouble();
    const mine = await loginAlice(hs);
    const phone = phoneOf(hs);
    const r = await deleteDevices([phone, '--yes', '--browser'], (url) => void fetch(url).then(() => hs.approveDeletion(phone))).done;
    expect(r.exitCode).toBe(0);
    expect(hs.accountPageVisits).toEqual([{ action: 'org.matrix.device_delete', deviceId: phone }]);
    expect(hs.admin.exchanges).toEqual([]);
    expect(liveDevices(hs)).toEqual([mine]);
  });

  it('the admin API not exposed: mxs says so and the account page takes over; nothing lost', async () => {
    const hs = await adminDouble();
    hs.admin.disable();
    const mine = await loginAlice(hs, '--admin');
    const phone = phoneOf(hs);
    const r = await deleteDevices([phone, '--yes', '--browser'], (url) => void fetch(url).then(() => hs.approveDeletion(phone))).done;
    expect(r.exitCode).toBe(0);
    expect(r.stderr).toMatch(/^mxs: The admin API did not delete the devices \(.+\); using the account page instead\.$/m);
    expect(hs.accountPageVisits).toEqual([{ action: 'org.matrix.device_delete', deviceId: phone }]);
    expect(liveDevices(hs)).toEqual([mine]);
  });
});

describe('devices delete on a server whose client API deletes', () => {
  it('still completes the password stage as before (no metadata read)', async () => {
    const hs = await startHomeserverDouble();
    closers.push(() => hs.close());
    expect((await run(['login', hs.url, '-u', 'alice', '--password-stdin', '--device-id', 'CURRENTDEV'], 'alice-pw\n')).code).toBe(0);
    await fetch(`${hs.url}/_matrix/client/v3/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ type: 'm.login.password', identifier: { type: 'm.id.user', user: 'alice' }, password: 'alice-pw', device_id: 'LAPTOP' }),
    });
    const command = devicesDeleteDefinition({ timing: TIMING, open: async () => true });
    const r = await runCommand(command, ['LAPTOP', '--yes', '--password-stdin'], { env: home.env, stdin: 'alice-pw\n' });
    expect(r.exitCode).toBe(0);
    expect(hs.deviceDeletions.map((d) => d.outcome)).toEqual(['challenged', 'deleted']);
    expect(hs.count('/auth_metadata')).toBe(0);
  });
});

describe('login --device-id on an OAuth 2.0 server', () => {
  it('an ID MAS cannot grant is refused before a client is registered: exit 2 with the rule and an example', async () => {
    const hs = await masDouble();
    const r = await run(['login', hs.url, '--device-id', 'laptop']);
    expect(r.code).toBe(2);
    expect(r.stderr.trimEnd().split('\n')).toEqual([
      'Error: --device-id "laptop" cannot be used with OAuth 2.0: the server accepts only 10 to 64 letters, digits and "-" (A-Z a-z 0-9 -).',
      'Choose one such as --device-id mxs-laptop-01, or leave --device-id out to get a new one.',
    ]);
    expect(hs.clients()).toEqual([]);
    expect(hs.deviceAuthorizations()).toEqual([]);
  });

  it('a password login keeps any device ID the spec allows', async () => {
    const hs = await startHomeserverDouble();
    closers.push(() => hs.close());
    const r = await run(['login', hs.url, '-u', 'alice', '--password-stdin', '--device-id', 'my.dev', '--json'], 'alice-pw\n');
    expect(r.code).toBe(0);
    expect(r.json().deviceId).toBe('my.dev');
  });
});

describe('the double in its MAS devices mode', () => {
  it('answers both deletion endpoints 404 M_UNRECOGNIZED, lists the account actions, records page visits, and approves only a visited deletion', async () => {
    const hs = await masDouble({ accountActions: ['org.matrix.session_end'] });
    const other = await oauthLogin(hs, 'other');
    const token = hs.sessions()[0]!.accessToken;
    const auth = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
    const bulk = await fetch(`${hs.url}${DELETE}`, { method: 'POST', headers: auth, body: JSON.stringify({ devices: [other] }) });
    expect([bulk.status, await bulk.json()]).toEqual([404, { errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' }]);
    const one = await fetch(`${hs.url}/_matrix/client/v3/devices/${other}`, { method: 'DELETE', headers: auth });
    expect([one.status, await one.json()]).toEqual([404, { errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' }]);
    for (const path of ['/_matrix/client/v1/auth_metadata', '/.well-known/openid-configuration']) {
      const meta = (await (await fetch(`${hs.url}${path}`)).json()) as Record<string, unknown>;
      expect(meta).toMatchObject({ account_management_uri: `${hs.url}/account/`, account_management_actions_supported: ['org.matrix.session_end'] });
    }
    expect(() => hs.approveDeletion(other)).toThrow(/never opened to delete that device/);
    await fetch(`${hs.url}/account/?action=org.matrix.session_end&device_id=${other}`);
    expect(hs.accountPageVisits).toEqual([{ action: 'org.matrix.session_end', deviceId: other }]);
    hs.approveDeletion(other);
    expect(liveDevices(hs)).toEqual([]);
  });

  it('accountActions null leaves the field out; the default keeps the double\'s list (with org.matrix.device_delete)', async () => {
    const without = await masDouble({ accountActions: null });
    expect(await (await fetch(`${without.url}/_matrix/client/v1/auth_metadata`)).json()).not.toHaveProperty('account_management_actions_supported');
    const dflt = await masDouble();
    expect(((await (await fetch(`${dflt.url}/_matrix/client/v1/auth_metadata`)).json()) as { account_management_actions_supported: string[] }).account_management_actions_supported).toContain(
      'org.matrix.device_delete',
    );
  });
});
