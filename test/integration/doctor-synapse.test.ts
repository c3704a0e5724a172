// `mxs doctor` against a real Synapse 1.163: the token, device and clock checks on what the real
// server says. Staged for real: a token logged out through the API, a device deleted from another
// session, and this machine's clock 10 minutes ahead (faketime). The other failures: doctor.test.ts.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { doctorCommand } from '../../src/cli/commands/doctor.js';
import { makeHome } from '../support/cli.js';
import { schemaErrors } from '../support/doctor-kit.js';
import { haveFaketime, runFaketime } from '../support/cli.js';
import { mxsInProcess, runCommand } from '../support/run-command.js';
import { describeWithSynapse, freshSynapseUser, testSynapseUrl } from '../support/synapse.js';

type Home = Awaited<ReturnType<typeof makeHome>>;
type Check = { id: string; status: string; detail: string; fix: string | null };
const check = (doc: { checks: Check[] }, id: string) => doc.checks.find((c) => c.id === id)!;

describeWithSynapse('mxs doctor against Synapse 1.163', () => {
  let home: Home;
  let user: Awaited<ReturnType<typeof freshSynapseUser>>;
  beforeEach(async () => {
    home = await makeHome('file');
    user = await freshSynapseUser('doctor');
  });
  afterEach(async () => {
    await home.cleanup();
  });

  /** A session that does not expire (--no-refresh), so the checks judge the server's answers, not the test's pace. */
  async function login(profile = 'default'): Promise<{ deviceId: string; accessToken: string }> {
    const r = await mxsInProcess(['login', testSynapseUrl(), '-u', user.user, '--password-stdin', '--no-refresh', '--json', '-p', profile], { env: home.env, stdin: `${user.password}\n` });
    expect(r.code).toBe(0);
    const secret = JSON.parse(await readFile(join(home.env.MXS_CONFIG_DIR!, 'secrets', `${profile}.json`), 'utf8'));
    return { deviceId: r.json().deviceId, accessToken: secret.accessToken };
  }
  const doctor = async (profile = 'default') => {
    const r = await runCommand(doctorCommand, ['--json', '-p', profile, '--timeout', '10s'], { env: { ...home.env, NO_COLOR: '1' } });
    return { code: r.exitCode, doc: r.json() as { profile: string; ok: boolean; checks: Check[] } };
  };

  it('a live session: token accepted for its user and device, the device exists, the clocks agree; exit 0', async () => {
    const { deviceId } = await login();
    const { code, doc } = await doctor();
    expect(await schemaErrors('doctor.schema.json', doc)).toEqual([]);
    expect(check(doc, 'token')).toMatchObject({ status: 'ok', detail: `Accepted for ${user.userId} on device ${deviceId}; it does not expire.` });
    expect(check(doc, 'device')).toMatchObject({ status: 'ok', detail: `Device ${deviceId} exists.` });
    expect(check(doc, 'clock').status).toBe('ok');
    expect(code).toBe(0);
  });

  it('a token logged out through the API: token fails (exit 4) with the login hint, device skipped', async () => {
    const { accessToken } = await login();
    const out = await fetch(`${testSynapseUrl()}/_matrix/client/v3/logout`, { method: 'POST', headers: { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json' }, body: '{}' });
    expect(out.status).toBe(200);
    const { code, doc } = await doctor();
    expect(check(doc, 'token')).toMatchObject({ status: 'failure', detail: expect.stringMatching(/^The server refused the access token \(M_UNKNOWN_TOKEN/), fix: `Run: mxs login ${testSynapseUrl()}` });
    expect(check(doc, 'device').status).toBe('skipped');
    expect(code).toBe(4);
  });

  it('a device deleted from another session: Synapse ends its tokens with it, so token fails (exit 4) and says why it may be', async () => {
    const { deviceId } = await login('a');
    await login('b');
    const del = await mxsInProcess(['devices', 'delete', deviceId, '--yes', '--password-stdin', '-p', 'b'], { env: home.env, stdin: `${user.password}\n` });
    expect(del.code).toBe(0);
    const { code, doc } = await doctor('a');
    expect(check(doc, 'token')).toMatchObject({ status: 'failure', detail: expect.stringMatching(/the session was logged out, or its device deleted\.$/) });
    expect(check(doc, 'device')).toMatchObject({ status: 'skipped', detail: 'The server does not accept the access token (see token).' });
    expect(code).toBe(4);
    // The other session is untouched.
    expect((await doctor('b')).code).toBe(0);
  });

  it('this machine 10 minutes ahead (faketime +10m): clock fails (exit 4) naming the skew; the token is still accepted', async () => {
    if (!haveFaketime()) return void process.stderr.write('skipped: faketime is not installed\n');
    await login();
    const r = await runFaketime('+10m', ['doctor', '--json', '--timeout', '10s'], home.env);
    const doc = r.json();
    expect(check(doc, 'clock')).toMatchObject({ status: 'failure', detail: expect.stringMatching(/^This machine's clock is (9m 5\ds|10m|10m \ds) ahead of the server's/), fix: "Set this machine's clock right (enable NTP: timedatectl set-ntp true)." });
    expect(check(doc, 'token').status).toBe('ok');
    expect(r.code).toBe(4);
  }, 30_000);
});
