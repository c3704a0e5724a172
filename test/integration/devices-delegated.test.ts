// `devices delete` against the real OAuth homeserver (Synapse 1.156 delegating to oidc-provider):
// delegated Synapse registers no /delete_devices (404 M_UNRECOGNIZED), as with the Matrix
// Authentication Service, and the provider's metadata names an account page with
// org.matrix.device_delete. The login is the built CLI (a browser login played through the provider's
// pages); the deletion runs in-process with a short interval and a "browser" that deletes the device
// as the account page would (Synapse's admin API).
import { devicesDeleteDefinition } from '../../src/cli/commands/devices.js';
import { makeHome } from '../support/cli.js';
import { startMxs, useIsolatedBuild, waitFor } from '../support/fault-kit.js';
import { describeWithOAuthHomeserver, oauthHomeserverFromEnv, type OAuthHomeserverHandle } from '../support/oauth-homeserver.js';
import { runCommand } from '../support/run-command.js';

const AUTHORIZATION_URL = /Open this URL in a browser to log in:\r?\n\s+(http\S+)/;
const ALICE = '@alice:localhost';

useIsolatedBuild();

describeWithOAuthHomeserver('devices delete on a homeserver that delegates auth (real Synapse 1.156)', () => {
  let hs: OAuthHomeserverHandle;
  beforeAll(() => {
    hs = oauthHomeserverFromEnv();
  });

  const admin = (method: string, path: string, body?: unknown) =>
    fetch(`${hs.baseUrl}/_synapse/admin/v2/users/${encodeURIComponent(ALICE)}/devices${path}`, {
      method,
      headers: { authorization: `Bearer ${hs.adminToken}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });

  it('prints the provider\'s account page for the device, waits, and succeeds once Synapse no longer lists it', async () => {
    const home = await makeHome('file');
    try {
      const env = { ...home.env, MXS_NO_BROWSER: '1' };
      const login = startMxs(['login', hs.baseUrl, '--browser', '--user', 'alice', '--json'], { env });
      let stderr = '';
      login.child.stderr!.on('data', (d) => (stderr += d));
      await waitFor('the authorization URL', () => AUTHORIZATION_URL.test(stderr), 20_000, 20);
      await hs.authorize(stderr.match(AUTHORIZATION_URL)![1]!, 'alice');
      const r = await login.done;
      expect(r.code).toBe(0);
      const other = `OTHER${Date.now()}`;
      expect((await admin('POST', '', { device_id: other })).status).toBe(201);
      expect(await hs.devices(ALICE)).toContain(other);

      const opened: string[] = [];
      const command = devicesDeleteDefinition({
        timing: { pollMs: 100, waitMs: 20_000 },
        async open(url) {
          opened.push(url);
          await admin('DELETE', `/${encodeURIComponent(other)}`); // the user deletes it on the account page
          return true;
        },
      });
      const del = await runCommand(command, [other, '--yes', '--browser', '--json'], { env });
      expect({ code: del.exitCode, stderr: del.exitCode === 0 ? '' : del.stderr }).toEqual({ code: 0, stderr: '' });
      expect(del.json()).toEqual({ profile: 'default', deleted: [other] });
      expect(opened).toEqual([`${hs.issuer}/account?action=org.matrix.device_delete&device_id=${other}`]);
      expect(del.stderr).toContain(`  ${other}: ${opened[0]}`);
      expect(await hs.devices(ALICE)).not.toContain(other);
      expect(await hs.devices(ALICE)).toContain(r.json().deviceId);
    } finally {
      await home.cleanup();
    }
  }, 60_000);
});
