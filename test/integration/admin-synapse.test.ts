// `mxs admin` against a real Synapse 1.163 (the Synapse admin back end, src/services/admin/synapse.ts):
// an admin user and a plain user with several devices; the commands run in-process through their
// definitions (test/support/run-command.ts), the token's stdout hygiene in a real process. Listing
// sessions, ending one (checked with Synapse's own admin API), a token for the user (used by whoami,
// expiring when asked), Synapse's missing token list, and a session without admin rights.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import _Ajv2020 from 'ajv/dist/2020.js';
import _addFormats from 'ajv-formats';
import { admin } from '../../src/cli/commands/admin.js';
import type { CommandDefinition } from '../../src/cli/command.js';
import { makeHome, REPO, runMxs } from '../support/cli.js';
import { mxsInProcess, runCommand } from '../support/run-command.js';
import { describeWithSynapse, freshSynapseUser, registerUserWithSecret, testSynapseUrl } from '../support/synapse.js';

const Ajv2020 = _Ajv2020.default;
const addFormats = _addFormats.default;
const ajv = new Ajv2020({ allErrors: true, strict: true });
addFormats(ajv);
const schema = (name: string) => ajv.compile(JSON.parse(readFileSync(join(REPO, 'docs', 'schemas', `${name}.schema.json`), 'utf8')));
const SHAPES = { sessions: schema('admin-sessions'), ended: schema('admin-sessions-end'), token: schema('admin-token') };
function expectShape(name: keyof typeof SHAPES, doc: unknown): void {
  const validate = SHAPES[name];
  expect({ valid: validate(doc), errors: validate.errors ?? null }).toEqual({ valid: true, errors: null });
}

/** A Matrix login outside mxs: one more device of the account, then one request with it (Synapse records last-seen on use, not at login). */
async function rawLogin(baseUrl: string, user: string, password: string, deviceId: string, name: string): Promise<string> {
  const res = await fetch(`${baseUrl}/_matrix/client/v3/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'user-agent': `TestClient/${deviceId}` },
    body: JSON.stringify({ type: 'm.login.password', identifier: { type: 'm.id.user', user }, password, device_id: deviceId, initial_device_display_name: name }),
  });
  const body = (await res.json()) as { access_token: string };
  if (res.status !== 200) throw new Error(`login of ${deviceId} answered ${res.status}: ${JSON.stringify(body)}`);
  const used = await fetch(`${baseUrl}/_matrix/client/v3/account/whoami`, { headers: { authorization: `Bearer ${body.access_token}`, 'user-agent': `TestClient/${deviceId}` } });
  await used.arrayBuffer();
  return body.access_token;
}

/** The notice naming which admin API answers, before anything else on stderr. */
const USING = 'mxs: Using the Synapse admin API.\n';

describeWithSynapse('mxs admin against Synapse 1.163', () => {
  let home: Awaited<ReturnType<typeof makeHome>>;
  let url: string;
  let plain: { user: string; password: string; userId: string };
  const adminUser = { user: `adm-${randomBytes(4).toString('hex')}`, password: `pw-${randomBytes(6).toString('hex')}` };
  const run = (args: string[], stdin?: string) => mxsInProcess(args, { stdin, env: home.env });
  // The admin definitions the CLI serves (src/commands/admin/**), run in this process.
  const adm = (command: CommandDefinition<any, any, any>, argv: string[]) => runCommand(command as CommandDefinition, argv, { env: home.env });

  /** The plain user's devices, as Synapse's admin API lists them (not through mxs admin). */
  async function adminDevices(): Promise<string[]> {
    const token = (await run(['token'])).stdout.trim();
    const res = await fetch(`${url}/_synapse/admin/v2/users/${encodeURIComponent(plain.userId)}/devices`, { headers: { authorization: `Bearer ${token}` } });
    return ((await res.json()) as { devices: { device_id: string }[] }).devices.map((d) => d.device_id).sort();
  }

  beforeAll(async () => {
    url = testSynapseUrl();
    home = await makeHome('file');
    await registerUserWithSecret(url, process.env.MXS_TEST_SYNAPSE_SHARED_SECRET!, adminUser.user, adminUser.password, { admin: true });
    plain = await freshSynapseUser('plain', url);
    for (const id of ['DEVAAAAAAA', 'DEVBBBBBBB', 'DEVCCCCCCC']) await rawLogin(url, plain.user, plain.password, id, `Phone ${id.slice(3, 4)}`);
    const logins = [await run(['login', url, '-u', adminUser.user, '--password-stdin'], `${adminUser.password}\n`), await run(['login', url, '-u', plain.user, '--password-stdin', '--profile', 'plain'], `${plain.password}\n`)];
    expect(logins.map((r) => [r.code, r.stderr])).toEqual([
      [0, expect.any(String)],
      [0, expect.any(String)],
    ]);
  }, 60_000);
  afterAll(async () => {
    await home?.cleanup();
  });

  it('admin sessions LOCALPART --json: every device of the user as a session, newest activity first, with names and where last seen (schema-valid)', async () => {
    const r = await adm(admin.sessions, [plain.user, '--json']);
    expect([r.exitCode, r.stderr]).toEqual([0, USING]);
    const doc = r.json();
    expectShape('sessions', doc);
    expect(doc).toMatchObject({ profile: 'default', api: 'synapse', user: plain.userId });
    const sessions = doc.sessions as { id: string; lastActiveAt: string | null }[];
    // Beside the three: the device of the shared-secret registration and the user's own mxs login (profile plain).
    expect(sessions).toHaveLength(5);
    const seen = sessions.map((s) => s.lastActiveAt).filter((t): t is string => t !== null);
    expect(seen).toEqual([...seen].sort().reverse());
    expect(sessions.slice(0, seen.length).every((s) => s.lastActiveAt !== null)).toBe(true);
    const mine = sessions.filter((s) => s.id.startsWith('DEV')).sort((x, y) => x.id.localeCompare(y.id));
    expect(mine).toEqual(
      ['A', 'B', 'C'].map((l) => ({
        kind: 'device',
        id: `DEV${l.repeat(7)}`,
        deviceId: `DEV${l.repeat(7)}`,
        client: `Phone ${l}`,
        createdAt: null,
        lastActiveAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
        lastActiveIp: '127.0.0.1',
        userAgent: `TestClient/DEV${l.repeat(7)}`,
        finishedAt: null,
      })),
    );
  });

  it('admin sessions @user:server: the same sessions for people, one block per device', async () => {
    const r = await adm(admin.sessions, [plain.userId]);
    expect([r.exitCode, r.stderr]).toEqual([0, USING]);
    expect(r.stdout).toContain(`Sessions of ${plain.userId} (5):`);
    for (const l of ['A', 'B', 'C']) {
      expect(r.stdout).toMatch(new RegExp(`^device +DEV${l.repeat(7)} +device DEV${l.repeat(7)} +client Phone ${l}$`, 'm'));
      expect(r.stdout).toMatch(new RegExp(`^ +TestClient/DEV${l.repeat(7)}$`, 'm'));
    }
    expect(r.stdout).toMatch(/last active \d{4}-\d\d-\d\dT\S+ from 127\.0\.0\.1/);
  });

  it('admin sessions for a user the server does not know: exit 2', async () => {
    const r = await adm(admin.sessions, [`nobody-${randomBytes(3).toString('hex')}`]);
    expect([r.exitCode, r.stdout]).toEqual([2, '']);
    expect(r.stderr).toMatch(/^mxs: Using the Synapse admin API\.\nError: There is no user @nobody-\w+:localhost on /);
  });

  it('admin sessions end DEVICE --user USER --yes deletes that device and only that one (checked with the admin API)', async () => {
    const r = await adm(admin.sessionsEnd, ['DEVBBBBBBB', '--user', plain.user, '--yes', '--json']);
    expect([r.exitCode, r.stderr]).toEqual([0, USING]);
    expectShape('ended', r.json());
    expect(r.json()).toMatchObject({ profile: 'default', ended: ['DEVBBBBBBB'] });
    const left = await adminDevices();
    expect(left).not.toContain('DEVBBBBBBB');
    expect(left).toEqual(expect.arrayContaining(['DEVAAAAAAA', 'DEVCCCCCCC']));
    expect(left).toHaveLength(4);
    const human = await adm(admin.sessionsEnd, ['DEVCCCCCCC', '--user', plain.userId, '--yes']);
    expect([human.exitCode, human.stdout, human.stderr]).toEqual([0, '', `${USING}Ended 1 session: DEVCCCCCCC.\n`]);
    expect(await adminDevices()).toEqual(left.filter((d) => d !== 'DEVCCCCCCC'));
  });

  it('admin token create USER --expires 1h (a process): stdout is the token alone, stderr names its session and expiry, whoami with it is the user', async () => {
    const before = Date.now();
    const r = await runMxs(['admin', 'token', 'create', plain.user, '--expires', '1h'], { env: home.env });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^\S+\n$/);
    const token = r.stdout.trim();
    expect(r.stderr).not.toContain(token);
    const m = /^mxs: Using the Synapse admin API\.\nToken for (\S+): session (\S+), expires (\S+)\.\n$/.exec(r.stderr);
    expect(m).not.toBeNull();
    expect(m![1]).toBe(plain.userId);
    const expires = Date.parse(m![3]!);
    expect(expires).toBeGreaterThanOrEqual(before + 3_600_000 - 1000);
    expect(expires).toBeLessThanOrEqual(Date.now() + 3_600_000 + 1000);
    const who = await run(['whoami', url, '--token-stdin', '--json'], `${token}\n`);
    expect([who.code, who.json().userId]).toEqual([0, plain.userId]);
    // Login-as-user makes no device: the user's devices are as they were.
    expect(await adminDevices()).not.toContain(who.json().deviceId);
  }, 30_000);

  it('admin token create --json: a schema-valid document, and the token stops working when it expires as asked', async () => {
    const before = Date.now();
    const r = await adm(admin.tokenCreate, [plain.userId, '--expires', '4s', '--json']);
    expect(r.exitCode).toBe(0);
    const doc = r.json();
    expectShape('token', doc);
    expect(doc.userId).toBe(plain.userId);
    expect(r.stderr).not.toContain(doc.token);
    expect(Date.parse(doc.expiresAt)).toBeGreaterThanOrEqual(before + 4000 - 1000);
    expect(Date.parse(doc.expiresAt)).toBeLessThanOrEqual(Date.now() + 4000);
    const who = await run(['whoami', url, '--token-stdin', '--json'], `${doc.token}\n`);
    expect([who.code, who.json().userId]).toEqual([0, plain.userId]);
    await new Promise((res) => setTimeout(res, Math.max(0, Date.parse(doc.expiresAt) - Date.now()) + 1000));
    const late = await run(['whoami', url, '--token-stdin', '--json'], `${doc.token}\n`);
    expect(late.code).toBe(4);
  }, 30_000);

  it('admin token list USER: exit 2, Synapse keeps no list of tokens', async () => {
    const r = await adm(admin.tokenList, [plain.user]);
    expect([r.exitCode, r.stdout]).toEqual([2, '']);
    expect(r.stderr).toContain('The Synapse admin API has no list of tokens');
  });

  it('a session without admin rights: exit 4 with the server\'s M_FORBIDDEN words and the hint to log in with --admin', async () => {
    const r = await adm(admin.sessions, [plain.userId, '--profile', 'plain']);
    expect([r.exitCode, r.stdout]).toEqual([4, '']);
    expect(r.stderr).toContain('You are not a server admin');
    expect(r.stderr).toMatch(/mxs login \S+.*--admin/);
    expect(r.stderr).toContain('--profile plain');
    const json = await adm(admin.tokenCreate, [plain.userId, '--profile', 'plain', '--json']);
    expect(json.exitCode).toBe(4);
    expect(json.json()).toMatchObject({ error: { code: 'M_FORBIDDEN', exitCode: 4, message: expect.stringContaining('You are not a server admin') } });
    expect(json.stderr).toMatch(/mxs login \S+.*--admin/);
  });
});
