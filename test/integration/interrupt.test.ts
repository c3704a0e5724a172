// Ctrl-C while a command waits on the network: every command that waits ends at once, exit 130, one
// line, nothing stored. Real processes (a signal is what only a process shows) against a server that
// accepts connections and never answers.
import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { startMxs } from '../support/cli.js';
import { waitFor } from '../support/fault-kit.js';
import { makeDeps, type UnitWorld } from '../support/unit-deps.js';

let silent: Server;
let url: string;
const sockets: Socket[] = [];
let w: UnitWorld;

beforeAll(async () => {
  silent = createServer((s) => {
    sockets.push(s);
    s.on('error', () => {});
  });
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(silent.address() as AddressInfo).port}`;
});
afterAll(async () => {
  for (const s of sockets) s.destroy();
  await new Promise((r) => silent.close(r));
});
beforeEach(async () => {
  w = await makeDeps();
});
afterEach(async () => {
  await w.cleanup();
});

async function interrupted(args: string[], input = ''): Promise<{ code: number | null; stderr: string; ms: number }> {
  const connected = sockets.length;
  const run = startMxs(args, { env: { MXS_CONFIG_DIR: w.dir, MXS_STORAGE: 'file' }, input });
  // Waiting on the server for real: it has connected, and a second has passed.
  await waitFor('mxs to connect', () => sockets.length > connected, 20_000, 20);
  await new Promise((r) => setTimeout(r, 1000));
  const sent = Date.now();
  run.child.kill('SIGINT');
  const r = await run.done;
  return { code: r.code, stderr: r.stderr, ms: Date.now() - sent };
}

it.each([
  ['login (password) waiting for the server', () => ['login', url, '-u', 'alice', '--password-stdin'], 'pw\n'],
  ['login waiting for discovery', () => ['login', url], ''],
  ['whoami on a stored session', () => ['whoami'], ''],
  ['refresh', () => ['refresh'], ''],
  ['token (the fast path) refreshing', () => ['token'], ''],
  ['devices', () => ['devices'], ''],
  ['api', () => ['api', 'account/whoami'], ''],
  ['logout', () => ['logout'], ''],
])('Ctrl-C during %s: exit 130 at once, one line, nothing stored', async (what, args, input) => {
  // A stored session on the silent server, its token expired so that whoami refreshes first.
  if (!what.startsWith('login')) await w.seed({ homeserver: url, storage: 'file', issuedAt: Date.now() - 600_000 });
  const before = await w.stored();
  const r = await interrupted(args(), input);
  expect(r.code).toBe(130);
  expect(r.ms).toBeLessThan(2000);
  expect(r.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^Error: .*[Cc]ancelled/)]);
  expect(await w.stored()).toEqual(before);
});
