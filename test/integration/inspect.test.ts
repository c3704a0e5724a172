// `mxs inspect` on tokens that real servers issued: Synapse 1.163 (syt_/syr_ from a password login with
// refresh) and the OAuth homeserver (Synapse 1.156 delegating to oidc-provider, whose opaque tokens are
// no format mxs knows: kind unknown, no checksum). Matrix Authentication Service formats are checked
// against MAS's own test tokens and generated ones in test/unit/inspect.test.ts (no registry ships MAS).
// Every --json answer is validated against docs/schemas/inspect.schema.json, and no output may hold a token.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import _Ajv2020 from 'ajv/dist/2020.js';
import _addFormats from 'ajv-formats';
import { inspectCommand } from '../../src/cli/commands/inspect.js';
import { homesForSuite, REPO, startMxs } from '../support/cli.js';
import { sessionPaths, waitFor } from '../support/fault-kit.js';
import { describeWithOAuthHomeserver, oauthHomeserverFromEnv } from '../support/oauth-homeserver.js';
import { mxsInProcess, runCommand, type CommandRun } from '../support/run-command.js';
import { describeWithSynapse, freshSynapseUser, testSynapseUrl } from '../support/synapse.js';

const Ajv2020 = _Ajv2020.default;
const addFormats = _addFormats.default;
const fingerprint = (token: string) => createHash('sha256').update(token).digest('hex').slice(0, 12);

const suiteHome = homesForSuite();

async function newHome() {
  const home = await suiteHome();
  const configDir = home.env.MXS_CONFIG_DIR!;
  return {
    env: { ...home.env, MXS_NO_BROWSER: '1' },
    secret: async (): Promise<{ accessToken: string; refreshToken: string | null }> => JSON.parse(await readFile(sessionPaths(configDir).secret, 'utf8')),
  };
}

async function inspectJson(env: Record<string, string>, args: string[], stdin?: string): Promise<any> {
  const r = await runCommand(inspectCommand, [...args, '--json'], { env, stdin });
  expect({ code: r.exitCode, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
  const doc = r.json();
  const schema = JSON.parse(await readFile(join(REPO, 'docs', 'schemas', 'inspect.schema.json'), 'utf8'));
  const ajv = new Ajv2020({ allErrors: true, strict: true });
  addFormats(ajv);
  const validate = ajv.compile(schema);
  expect({ valid: validate(doc), errors: validate.errors ?? [] }).toEqual({ valid: true, errors: [] });
  return doc;
}

const shows = (r: CommandRun, ...tokens: string[]) => tokens.some((t) => r.stdout.includes(t) || r.stderr.includes(t));

describeWithSynapse('mxs inspect on Synapse 1.163 tokens', () => {
  it('syt_/syr_ from a real login: kinds, localpart, valid checksums; --online names the owner; a changed or logged-out token is valid: false', async () => {
    const url = testSynapseUrl();
    const { user, password, userId } = await freshSynapseUser('inspect');
    const home = await newHome();
    const login = await mxsInProcess(['login', url, '-u', user, '--password-stdin', '--json'], { env: home.env, stdin: `${password}\n` });
    expect({ code: login.code, stderr: login.code === 0 ? '' : login.stderr }).toEqual({ code: 0, stderr: '' });
    const { deviceId } = login.json();
    const { accessToken, refreshToken } = await home.secret();
    expect(refreshToken).not.toBeNull();
    expect(shows({ exitCode: 0, stdout: login.stdout, stderr: login.stderr, json: login.json }, accessToken, refreshToken!)).toBe(false);

    const stored = await inspectJson(home.env, ['--stored', '--online']);
    expect(stored).toEqual({
      tokens: [
        { source: 'access', kind: 'synapse_access', server: 'synapse', localpart: user, checksumValid: true, fingerprint: fingerprint(accessToken), userId, deviceId, valid: true },
        { source: 'refresh', kind: 'synapse_refresh', server: 'synapse', localpart: user, checksumValid: true, fingerprint: fingerprint(refreshToken!), userId: null, deviceId: null, valid: null },
      ],
    });

    // One character of the random part changed: the checksum catches it, and Synapse does not know the token.
    const i = accessToken.lastIndexOf('_') - 3;
    const altered = accessToken.slice(0, i) + (accessToken[i] === 'a' ? 'b' : 'a') + accessToken.slice(i + 1);
    expect(await inspectJson(home.env, ['--online'], `${altered}\n`)).toEqual({
      tokens: [{ source: 'stdin', kind: 'synapse_access', server: 'synapse', localpart: user, checksumValid: false, fingerprint: fingerprint(altered), userId: null, deviceId: null, valid: false }],
    });

    const text = await runCommand(inspectCommand, ['--stored', '--online'], { env: home.env });
    expect(text.exitCode).toBe(0);
    expect(text.stdout).toContain(`Owner:       ${userId} (device ${deviceId}) at ${url}`);
    expect(shows(text, accessToken, refreshToken!)).toBe(false);

    const logout = await mxsInProcess(['logout'], { env: home.env });
    expect(logout.code).toBe(0);
    const after = await runCommand(inspectCommand, ['--online', '--server', url, '--json'], { env: home.env, stdin: accessToken });
    expect(after.exitCode).toBe(0);
    expect(after.json().tokens[0]).toMatchObject({ kind: 'synapse_access', checksumValid: true, valid: false, userId: null });
    expect(shows(after, accessToken)).toBe(false);
  }, 60_000);
});

describeWithOAuthHomeserver('mxs inspect on the OAuth homeserver (Synapse 1.156 + oidc-provider)', () => {
  it("oidc-provider's opaque tokens are kind unknown with no checksum; --online still names the owner of the access token", async () => {
    const hs = oauthHomeserverFromEnv();
    const home = await newHome();
    const run = startMxs(['login', hs.baseUrl, '--browser', '--user', 'alice', '--json'], { env: home.env });
    let stderr = '';
    run.child.stderr!.on('data', (d) => (stderr += d));
    const AUTHORIZATION_URL = /Open this URL in a browser to log in:\r?\n\s+(http\S+)/;
    await waitFor('the authorization URL', () => AUTHORIZATION_URL.test(stderr), 20_000, 20);
    await hs.authorize(stderr.match(AUTHORIZATION_URL)![1]!, 'alice');
    const login = await run.done;
    expect({ code: login.code, stderr: login.code === 0 ? '' : login.stderr }).toEqual({ code: 0, stderr: '' });
    const { deviceId } = login.json();
    const { accessToken, refreshToken } = await home.secret();

    // oidc-provider issues opaque random strings (no prefix, no checksum): not a format mxs can read.
    const stored = await inspectJson(home.env, ['--stored', '--online']);
    expect(stored).toEqual({
      tokens: [
        { source: 'access', kind: 'unknown', server: null, localpart: null, checksumValid: null, fingerprint: fingerprint(accessToken), userId: '@alice:localhost', deviceId, valid: true },
        // Never sent: a stored refresh token is only checked by using it, whatever its format.
        { source: 'refresh', kind: 'unknown', server: null, localpart: null, checksumValid: null, fingerprint: fingerprint(refreshToken!), userId: null, deviceId: null, valid: null },
      ],
    });
    const text = await runCommand(inspectCommand, ['--stored'], { env: home.env });
    expect(text.stdout).toContain('Kind:        unknown');
    expect(shows(text, accessToken, refreshToken!)).toBe(false);
  }, 60_000);
});
