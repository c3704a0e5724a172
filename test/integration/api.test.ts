// `mxs api` (issue 11 item 1): against the homeserver double for refresh, retries, errors and hostile
// input, in-process through the command definition (stdin handling through the real CLI); against a real Synapse 1.163 for rooms, pagination, the admin API, media
// upload and a 100 MiB streamed download; against the real OAuth homeserver for an OAuth session.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startHomeserverDouble, type HomeserverDouble } from '../support/homeserver-double.js';
import { BIN, homePerTest, runMxs, startMxs, type Home } from '../support/cli.js';
import { waitFor } from '../support/fault-kit.js';
import { mxsInProcess } from '../support/run-command.js';
import { describeWithOAuthHomeserver, oauthHomeserverFromEnv } from '../support/oauth-homeserver.js';
import { describeWithSynapse, registerUserWithSecret, startSynapse, testSynapseUrl, type SynapseHandle } from '../support/synapse.js';

let home: Home;
homePerTest((h) => (home = h));
const mxs = (args: string[], input?: string, env: Record<string, string> = {}) => runMxs(args, { input, env: { ...home.env, ...env }, timeoutMs: 120_000 });

describe('against the homeserver double', () => {
  const run = (args: string[], input?: string) => mxsInProcess(args, { stdin: input, env: home.env });
  let hs: HomeserverDouble;
  beforeEach(async () => {
    hs = await startHomeserverDouble({ accessTokenLifetimeMs: 60_000 });
    expect((await run(['login', hs.url, '-u', 'alice', '--password-stdin'], 'alice-pw\n')).code).toBe(0);
  });
  afterEach(async () => {
    await hs.close();
  });
  const whoamiRequests = () => hs.requests.filter((q) => q.path.startsWith('/_matrix/client/v3/account/whoami'));

  it('GET a relative path: the body on stdout as received, the token in the header only', async () => {
    const r = await run(['api', 'account/whoami']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ user_id: '@alice:localhost' });
    const [q] = whoamiRequests();
    expect(String(q!.headers.authorization)).toMatch(/^Bearer syt_/);
    expect(q!.path).not.toContain('access_token');
  });

  it('on a terminal, a JSON answer is pretty-printed and ends with a newline (as gh api does); piped, it is the bytes as received', async () => {
    const tty = await mxsInProcess(['api', 'account/whoami'], { env: home.env, tty: true });
    expect(tty.code).toBe(0);
    expect(tty.stdout).toBe(JSON.stringify(JSON.parse(tty.stdout), null, 2) + '\n');
    const piped = await run(['api', 'account/whoami']);
    expect(piped.stdout).toBe(JSON.stringify(JSON.parse(piped.stdout)));
  });

  it('on a terminal, a JSON error answer is pretty-printed too, then the error on stderr', async () => {
    const r = await mxsInProcess(['api', 'rooms/!nope:localhost/state'], { env: home.env, tty: true });
    expect(r.code).toBe(7);
    expect(r.stdout).toMatch(/^\{\n {2}"errcode"/);
    expect(r.stdout.endsWith('}\n')).toBe(true);
  });

  it('/_matrix/ paths are used as given, and {userId}/{deviceId} are filled in URL-encoded', async () => {
    const r = await run(['api', '/_matrix/client/v3/account/whoami?x={userId}']);
    expect(r.code).toBe(0);
    const device = (await run(['status', '--json'])).json().deviceId;
    await run(['api', 'devices/{deviceId}']);
    expect(hs.requests.some((q) => q.path === `/_matrix/client/v3/devices/${device}`)).toBe(true);
  });

  it('--json gives {status, headers, body}, for error answers too (exit 7)', async () => {
    const ok = await run(['api', 'account/whoami', '--json']);
    expect(ok.code).toBe(0);
    expect(ok.json()).toMatchObject({ status: 200, headers: { 'content-type': expect.stringContaining('json') }, body: { user_id: '@alice:localhost' } });
    const missing = await run(['api', 'no/such/endpoint', '--json']);
    expect(missing.code).toBe(7);
    expect(missing.json()).toMatchObject({ status: 404, body: { errcode: 'M_UNRECOGNIZED' } });
    expect(missing.stderr).toMatch(/HTTP 404 M_UNRECOGNIZED/);
  });

  it('a 4xx answer: the body on stdout, one error line and a hint on stderr, exit 7', async () => {
    const r = await run(['api', 'no/such/endpoint']);
    expect(r.code).toBe(7);
    expect(JSON.parse(r.stdout)).toMatchObject({ errcode: 'M_UNRECOGNIZED' });
    expect(r.stderr.trim().split('\n')).toHaveLength(2);
  });

  it('-i puts the status line and headers first', async () => {
    const r = await run(['api', '-i', 'account/whoami']);
    expect(r.stdout).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(r.stdout).toMatch(/\r\ncontent-type: application\/json/i);
    expect(JSON.parse(r.stdout.split('\r\n\r\n')[1]!)).toMatchObject({ user_id: '@alice:localhost' });
  });

  it('an expired session refreshes first; a 401 M_UNKNOWN_TOKEN refreshes once and retries once', async () => {
    hs.expireAccessTokens();
    const r = await run(['api', 'account/whoami']);
    expect(r.code).toBe(0);
    expect(hs.count('/_matrix/client/v3/refresh')).toBe(1);
    hs.inject('GET /_matrix/client/v3/account/whoami', { status: 401, json: { errcode: 'M_UNKNOWN_TOKEN', error: 'Token is not active', soft_logout: false } });
    const again = await run(['api', 'account/whoami']);
    expect(again.code).toBe(0);
    expect(hs.count('/_matrix/client/v3/refresh')).toBe(2);
  });

  it('5xx: GET is retried, POST is not; both exit 3', async () => {
    hs.inject('GET /_matrix/client/v3/account/whoami', { status: 502 }, { status: 502 }, { status: 502 });
    const get = await run(['api', 'account/whoami']);
    expect(get.code).toBe(3);
    expect(whoamiRequests()).toHaveLength(3);
    hs.inject('POST /_matrix/client/v3/account/whoami', { status: 503 }, { status: 503 });
    const post = await run(['api', 'POST', 'account/whoami', '-f', 'a=b']);
    expect(post.code).toBe(3);
    expect(hs.requests.filter((q) => q.method === 'POST' && q.path.includes('whoami'))).toHaveLength(1);
  });

  it('fields: a JSON body by default (POST, as gh api does), the query string with -X GET, typed values with -F', async () => {
    await run(['api', 'account/whoami', '-X', 'GET', '-f', 'a=1', '-F', 'b=2']);
    expect(whoamiRequests()[0]!.path).toBe('/_matrix/client/v3/account/whoami?a=1&b=2');
    await run(['api', 'account/whoami', '-f', 'name=x', '-F', 'n=5', '-F', 't=true', '-F', 'z=null', '-F', 's=text']);
    const post = hs.requests.find((q) => q.method === 'POST' && q.path.includes('whoami'))!;
    expect(post.body).toEqual({ name: 'x', n: 5, t: true, z: null, s: 'text' });
    const file = join(home.dir, 'value.txt');
    await writeFile(file, 'from a file');
    await run(['api', 'POST', 'account/whoami', '-F', `v=@${file}`]);
    expect(hs.requests.filter((q) => q.method === 'POST' && q.path.includes('whoami'))[1]!.body).toEqual({ v: 'from a file' });
  });

  it('--input - sends standard input as the body', async () => {
    await run(['api', 'POST', 'account/whoami', '--input', '-'], '{"raw":true}');
    expect(hs.requests.find((q) => q.method === 'POST' && q.path.includes('whoami'))!.body).toEqual({ raw: true });
  });

  it('--input - with the path alone: standard input is the body, never taken for a missing argument (oclif reads stdin into one)', async () => {
    const r = await mxs(['api', 'account/whoami', '--input', '-'], '{"raw":true}');
    expect(r.stderr).not.toMatch(/Unknown HTTP method/);
    expect(hs.requests.find((q) => q.method === 'POST' && q.path.includes('whoami'))!.body).toEqual({ raw: true });
  });

  describe('hostile input is refused before anything is sent (exit 2)', () => {
    it.each([
      ['an absolute URL', ['api', 'https://evil.example/_matrix/client/v3/account/whoami']],
      ['a scheme-relative URL', ['api', '//evil.example/x']],
      ['a .. segment', ['api', '/_matrix/client/v3/../../_synapse/admin/v1/users']],
      ['an encoded .. segment', ['api', 'rooms/%2e%2e/x']],
      ['a path with a newline', ['api', 'account/whoami\r\nX-Evil: 1']],
      ['a header with CR/LF', ['api', 'account/whoami', '-H', 'X-Test: a\r\nX-Evil: 1']],
      ['an Authorization header', ['api', 'account/whoami', '-H', 'Authorization: Bearer other']],
      ['a field without =', ['api', 'account/whoami', '-f', 'novalue']],
      ['an unknown method', ['api', 'FETCH', 'account/whoami']],
      ['--paginate with POST', ['api', '--paginate', '-X', 'POST', 'account/whoami']],
    ])('%s', async (_case, args) => {
      const before = hs.requests.length;
      const r = await run(args);
      expect(r.code).toBe(2);
      expect(r.stderr).not.toMatch(/[\r\x1b]/);
      expect(hs.requests.length).toBe(before);
    });
  });

  it('a response larger than the --json cap is refused cleanly (exit 3), not held in memory', async () => {
    hs.inject('GET /_matrix/client/v3/account/whoami', { status: 200, body: Buffer.alloc(70 * 1024 * 1024, 0x61), contentType: 'application/json' });
    const r = await run(['api', 'account/whoami', '--json']);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/larger than 64 MiB/);
  });
});

/** Runs mxs with its stdout hashed as it streams (never buffered here), and its peak RSS measured. */
function hashedRun(args: string[], env: Record<string, string>): Promise<{ code: number | null; sha256: string; bytes: number; maxRssKiB: number; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('/usr/bin/time', ['-f', 'MAXRSS=%M', process.execPath, BIN, ...args], { env: { ...process.env, NO_COLOR: '1', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const hash = createHash('sha256');
    let bytes = 0;
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      bytes += d.length;
      hash.update(d);
    });
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => {
      const m = /MAXRSS=(\d+)/.exec(stderr);
      resolve({ code, sha256: hash.digest('hex'), bytes, maxRssKiB: m ? Number(m[1]) : -1, stderr: stderr.replace(/MAXRSS=\d+\n?/, '') });
    });
  });
}

describeWithSynapse('against a real Synapse', () => {
  const admin = { user: `apiadmin${process.pid}`, password: 'admin-pw-1' };
  beforeAll(async () => {
    await registerUserWithSecret(testSynapseUrl(), process.env.MXS_TEST_SYNAPSE_SHARED_SECRET!, admin.user, admin.password, { admin: true });
  });
  beforeEach(async () => {
    expect((await mxs(['login', testSynapseUrl(), '-u', admin.user, '--password-stdin'], `${admin.password}\n`)).code).toBe(0);
  });
  afterEach(async () => {
    await mxs(['logout']);
  });

  it('creates a room, sends messages, reads them back, and pages through them with --paginate', async () => {
    const room = await mxs(['api', 'POST', 'createRoom', '-f', 'name=api test', '-F', 'is_direct=false']);
    expect(room.code).toBe(0);
    const roomId = JSON.parse(room.stdout).room_id as string;
    expect(roomId).toMatch(/^!/);
    for (let i = 0; i < 5; i++) {
      const sent = await mxs(['api', 'PUT', `rooms/${encodeURIComponent(roomId)}/send/m.room.message/txn${i}-${Date.now()}`, '-f', 'msgtype=m.text', '-f', `body=message ${i}`]);
      expect(sent.code).toBe(0);
    }
    const name = await mxs(['api', `rooms/${encodeURIComponent(roomId)}/state/m.room.name`]);
    expect(JSON.parse(name.stdout)).toEqual({ name: 'api test' });
    const pages = await mxs(['api', '--paginate', `rooms/${encodeURIComponent(roomId)}/messages?dir=b`, '-F', 'limit=2']);
    expect(pages.code).toBe(0);
    const lines = pages.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.length).toBeGreaterThanOrEqual(3);
    const bodies = lines.flatMap((p) => p.chunk).filter((e: any) => e.type === 'm.room.message').map((e: any) => e.content.body);
    expect(bodies).toEqual(['message 4', 'message 3', 'message 2', 'message 1', 'message 0']);
  });

  it('calls the Synapse admin API with an admin user, and pages through it (next_token) with --paginate', async () => {
    const r = await mxs(['api', '-X', 'GET', '/_synapse/admin/v2/users', '-F', 'limit=100', '--json']);
    expect(r.code).toBe(0);
    const all = r.json().body.users.map((u: { name: string }) => u.name);
    expect(all).toContain(`@${admin.user}:localhost`);
    const paged = await mxs(['api', '--paginate', '/_synapse/admin/v2/users', '-F', 'limit=1']);
    expect(paged.code).toBe(0);
    const pages = paged.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(pages.length).toBe(all.length);
    expect(pages.flatMap((p) => p.users.map((u: { name: string }) => u.name))).toEqual(all);
  });

  it('an expired session refreshes once; 20 concurrent api calls on it refresh once', async () => {
    await new Promise((r) => setTimeout(r, 6500)); // the test Synapse's tokens live 6 s
    const runs = await Promise.all(Array.from({ length: 20 }, () => mxs(['api', 'account/whoami'])));
    expect(runs.map((r) => r.code)).toEqual(Array(20).fill(0));
    for (const r of runs) expect(JSON.parse(r.stdout).user_id).toBe(`@${admin.user}:localhost`);
    // One refresh: every run ended up with the same stored pair.
    expect(new Set((await Promise.all([mxs(['token']), mxs(['token'])])).map((r) => r.stdout)).size).toBe(1);
  });
});

describeWithSynapse('media through a real Synapse (100 MiB)', () => {
  let big: SynapseHandle;
  beforeAll(async () => {
    big = await startSynapse({ accessTokenLifetime: '5m', extraConfig: { max_upload_size: '200M' } });
    await big.registerUser('media', 'media-pw-1');
  }, 120_000);
  afterAll(async () => {
    await big?.stop();
  });

  it('uploads a file with --input and streams the 100 MiB download to stdout byte for byte, in bounded memory', async () => {
    expect((await mxs(['login', big.baseUrl, '-u', 'media', '--password-stdin'], 'media-pw-1\n')).code).toBe(0);
    const file = join(home.dir, 'blob.bin');
    const data = randomBytes(100 * 1024 * 1024);
    await writeFile(file, data);
    const sha = createHash('sha256').update(data).digest('hex');
    const up = await hashedRun(['api', 'POST', '/_matrix/media/v3/upload?filename=blob.bin', '--input', file, '-H', 'Content-Type: application/octet-stream'], home.env);
    expect({ code: up.code, stderr: up.stderr }).toEqual({ code: 0, stderr: '' });
    const upload = await mxs(['api', 'POST', '/_matrix/media/v3/upload?filename=small.txt', '--input', '-', '-H', 'Content-Type: text/plain'], 'hello');
    expect(upload.code).toBe(0);
    // Find the big upload's URI again from a fresh upload answer (hashedRun kept only a hash of stdout).
    const again = await mxs(['api', 'POST', '/_matrix/media/v3/upload?filename=blob.bin', '--input', file, '-H', 'Content-Type: application/octet-stream']);
    const mxc = JSON.parse(again.stdout).content_uri as string;
    const [, server, mediaId] = /^mxc:\/\/([^/]+)\/(.+)$/.exec(mxc)!;
    const down = await hashedRun(['api', `/_matrix/client/v1/media/download/${server}/${mediaId}`], home.env);
    expect(down.code).toBe(0);
    expect(down.bytes).toBe(data.length);
    expect(down.sha256).toBe(sha);
    // The same command on a 5-byte file: what mxs and Node take anyway. Holding the 100 MiB body
    // would add 100 MiB on top; streaming adds only Node's buffering (measured: 30-60 MiB).
    const small = JSON.parse(upload.stdout).content_uri as string;
    const [, sServer, sId] = /^mxc:\/\/([^/]+)\/(.+)$/.exec(small)!;
    const baseline = await hashedRun(['api', `/_matrix/client/v1/media/download/${sServer}/${sId}`], home.env);
    expect(baseline.bytes).toBe(5);
    process.stderr.write(
      `[api media] peak RSS: 5-byte download ${Math.round(baseline.maxRssKiB / 1024)} MiB, 100 MiB download ${Math.round(down.maxRssKiB / 1024)} MiB, 100 MiB upload ${Math.round(up.maxRssKiB / 1024)} MiB\n`,
    );
    expect(down.maxRssKiB - baseline.maxRssKiB).toBeLessThan(80 * 1024);
    expect(up.maxRssKiB - baseline.maxRssKiB).toBeLessThan(80 * 1024);
  }, 240_000);
});

describeWithOAuthHomeserver('on an OAuth session (Synapse 1.156 + oidc-provider)', () => {
  it('calls the API with the OAuth token, and refreshes it at the token endpoint once it expired', async () => {
    const hs = oauthHomeserverFromEnv();
    const env = { ...home.env, MXS_NO_BROWSER: '1' };
    const login = startMxs(['login', hs.baseUrl, '--browser', '--user', 'alice', '--json'], { env });
    let stderr = '';
    login.child.stderr!.on('data', (d) => (stderr += d));
    await waitFor('the authorization URL', () => /\n\s+(http\S+\/auth\S*)/.test(stderr), 20_000, 20);
    const url = /\n\s+(http\S+\/auth\S*)/.exec(stderr)![1]!;
    await hs.authorize(url, 'alice');
    expect((await login.done).code).toBe(0);
    const first = await mxs(['api', 'account/whoami']);
    expect(first.code).toBe(0);
    expect(JSON.parse(first.stdout)).toMatchObject({ user_id: '@alice:localhost' });
    const before = JSON.parse(await readFile(join(home.env.MXS_CONFIG_DIR!, 'secrets', 'default.json'), 'utf8'));
    await new Promise((r) => setTimeout(r, Math.max(0, Date.parse(before.expiresAt) - Date.now()) + 500));
    const after = await mxs(['api', 'account/whoami']);
    expect(after.code).toBe(0);
    const secret = JSON.parse(await readFile(join(home.env.MXS_CONFIG_DIR!, 'secrets', 'default.json'), 'utf8'));
    expect(secret.accessToken).not.toBe(before.accessToken);
    expect(secret.refreshToken).not.toBe(before.refreshToken);
    expect((await mxs(['logout'])).code).toBe(0);
  }, 60_000);
});
