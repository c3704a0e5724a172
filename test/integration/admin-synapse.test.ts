// The Synapse admin back end (src/services/admin/synapse.ts) against a real Synapse 1.163: an admin
// user and a plain user with several devices; sessions, ending one, a token for the user (used by
// whoami, expiring when asked), and a session without admin rights. Through the back end's functions
// on the session mxs stored (the `mxs admin` commands get their command-level cases beside them).
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { buildDeps } from '../../src/runtime.js';
import { synapseAdminBackend } from '../../src/services/admin/synapse.js';
import type { Deps } from '../../src/services/deps.js';
import { refreshWhenBelow, withAccessToken } from '../../src/services/session.js';
import { Output } from '../../src/ui/output.js';
import { hintText } from '../support/unit-deps.js';
import { makeHome } from '../support/cli.js';
import { mxsInProcess } from '../support/run-command.js';
import { describeWithSynapse, freshSynapseUser, registerUserWithSecret, testSynapseUrl } from '../support/synapse.js';

class Sink extends Writable {
  text = '';
  isTTY = false;
  override _write(chunk: Buffer | string, _e: BufferEncoding, done: () => void): void {
    this.text += chunk.toString();
    done();
  }
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

describeWithSynapse('the Synapse admin back end against Synapse 1.163', () => {
  let home: Awaited<ReturnType<typeof makeHome>>;
  let url: string;
  let deps: Deps;
  let plain: { user: string; password: string; userId: string };
  const admin = { user: `adm-${randomBytes(4).toString('hex')}`, password: `pw-${randomBytes(6).toString('hex')}` };
  const run = (args: string[], stdin?: string) => mxsInProcess(args, { stdin, env: home.env });

  /** The back end on a stored profile's session, connected as `mxs admin` connects it. */
  const backendFor = (profile: string) =>
    synapseAdminBackend({
      record: { homeserver: url },
      http: deps.http,
      serverName: 'localhost',
      rememberSecret: (...v) => deps.rememberSecret(...v),
      authed: async (call) => (await withAccessToken(profile, deps, refreshWhenBelow(60_000), (s) => call(s.secret.accessToken))).value,
    });

  async function adminDevices(): Promise<string[]> {
    const token = (await run(['token'])).stdout.trim();
    const res = await fetch(`${url}/_synapse/admin/v2/users/${encodeURIComponent(plain.userId)}/devices`, { headers: { authorization: `Bearer ${token}` } });
    return ((await res.json()) as { devices: { device_id: string }[] }).devices.map((d) => d.device_id).sort();
  }

  beforeAll(async () => {
    url = testSynapseUrl();
    home = await makeHome('file');
    deps = buildDeps({ env: home.env, timeoutMs: 30_000, verbose: false, out: new Output(new Sink() as never, new Sink() as never) });
    await registerUserWithSecret(url, process.env.MXS_TEST_SYNAPSE_SHARED_SECRET!, admin.user, admin.password, { admin: true });
    plain = await freshSynapseUser('plain', url);
    for (const id of ['DEVAAAAAAA', 'DEVBBBBBBB', 'DEVCCCCCCC']) await rawLogin(url, plain.user, plain.password, id, `Phone ${id.slice(3, 4)}`);
    const logins = [await run(['login', url, '-u', admin.user, '--password-stdin'], `${admin.password}\n`), await run(['login', url, '-u', plain.user, '--password-stdin', '--profile', 'plain'], `${plain.password}\n`)];
    expect(logins.map((r) => [r.code, r.stderr])).toEqual([
      [0, expect.any(String)],
      [0, expect.any(String)],
    ]);
  }, 60_000);
  afterAll(async () => {
    await home?.cleanup();
  });

  it('resolves a localpart and lists the user\'s devices as sessions, with their names and where they were last seen', async () => {
    const b = backendFor('default');
    const user = await b.resolveUser(plain.user);
    expect(user).toEqual({ userId: plain.userId, adminId: plain.userId });
    const sessions = await b.sessions(user, { active: true });
    const mine = sessions.filter((s) => s.id.startsWith('DEV')).sort((x, y) => x.id.localeCompare(y.id));
    // Beside these: the device of the shared-secret registration and the user's own mxs login (profile plain).
    expect(sessions).toHaveLength(5);
    const seen = sessions.map((s) => s.lastActiveAt).filter((t): t is string => t !== null);
    expect(seen).toEqual([...seen].sort().reverse()); // newest activity first
    expect(sessions.slice(0, seen.length).every((s) => s.lastActiveAt !== null)).toBe(true);
    expect(mine.map((s) => [s.kind, s.id, s.deviceId, s.client])).toEqual([
      ['device', 'DEVAAAAAAA', 'DEVAAAAAAA', 'Phone A'],
      ['device', 'DEVBBBBBBB', 'DEVBBBBBBB', 'Phone B'],
      ['device', 'DEVCCCCCCC', 'DEVCCCCCCC', 'Phone C'],
    ]);
    for (const s of mine) expect(s).toMatchObject({ lastActiveIp: '127.0.0.1', userAgent: `TestClient/${s.id}`, createdAt: null, finishedAt: null, lastActiveAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT/) });
  });

  it('a user the server does not know: exit 2', async () => {
    await expect(backendFor('default').resolveUser(`nobody-${randomBytes(3).toString('hex')}`)).rejects.toMatchObject({ exitCode: 2 });
  });

  it('ends a session by deleting that device, and only that one (checked with the admin API)', async () => {
    const b = backendFor('default');
    const user = await b.resolveUser(plain.userId);
    const target = (await b.sessions(user, { active: true })).filter((s) => s.id === 'DEVBBBBBBB');
    await expect(b.endSessions(target)).resolves.toEqual(['DEVBBBBBBB']);
    const left = await adminDevices();
    expect(left).not.toContain('DEVBBBBBBB');
    expect(left).toEqual(expect.arrayContaining(['DEVAAAAAAA', 'DEVCCCCCCC']));
  });

  it('creates a token for the user: whoami with it is the user, and it stops working when it expires as asked', async () => {
    const b = backendFor('default');
    const user = await b.resolveUser(plain.user);
    const before = Date.now();
    const created = await b.createToken(user, { expiresInMs: 4000, name: null });
    expect(created.userId).toBe(plain.userId);
    expect(Date.parse(created.expiresAt!)).toBeGreaterThanOrEqual(before + 4000);
    expect(Date.parse(created.expiresAt!)).toBeLessThanOrEqual(Date.now() + 4000);
    const who = await run(['whoami', url, '--token-stdin', '--json'], `${created.token}\n`);
    expect([who.code, who.json().userId]).toEqual([0, plain.userId]);
    await new Promise((r) => setTimeout(r, Math.max(0, Date.parse(created.expiresAt!) - Date.now()) + 1000));
    const late = await run(['whoami', url, '--token-stdin', '--json'], `${created.token}\n`);
    expect(late.code).toBe(4);
  }, 30_000);

  it('a session without admin rights: exit 4 with the server\'s refusal and the hint naming mxs login --admin', async () => {
    const b = backendFor('plain');
    const err = await b.resolveUser(plain.userId).then(
      () => null,
      (e: unknown) => e as { exitCode: number; code: string; message: string; hint: never },
    );
    expect(err).toMatchObject({ exitCode: 4, code: 'M_FORBIDDEN' });
    expect(err!.message).toContain('You are not a server admin');
    expect(hintText(err!)).toContain('mxs login SERVER --admin');
  });
});
