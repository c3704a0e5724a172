// A session stored by the previous release (sessions-file format 1, written by mxs 0.1: see
// test/fixtures/format1) keeps working with this one: status, token, refresh, whoami and logout,
// against the homeserver double, through the real CLI.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { HomeserverDouble } from '../support/homeserver-double.js';
import { doublePerTest, homePerTest, REPO, runMxs, type Home } from '../support/cli.js';
import { FORMAT } from '../../src/store/sessions.js';

let hs: HomeserverDouble;
let home: Home;
const mxs = (args: string[], input?: string) => runMxs(args, { input, env: home.env });
const sessionFile = () => join(home.env.MXS_CONFIG_DIR!, 'sessions', 'default.json');

doublePerTest({ accessTokenLifetimeMs: 60_000 }, (d) => (hs = d));
homePerTest((h) => (home = h));

/** Logs in with today's mxs, then puts the session back in format 1 exactly as mxs 0.1 wrote it. */
async function sessionInFormat1(): Promise<Record<string, unknown>> {
  expect((await mxs(['login', hs.url, '-u', 'alice', '--password-stdin'], 'alice-pw\n')).code).toBe(0);
  const current = JSON.parse(await readFile(sessionFile(), 'utf8'));
  const fixture = JSON.parse(await readFile(join(REPO, 'test', 'fixtures', 'format1', 'default.json'), 'utf8'));
  const old = { ...fixture, homeserver: current.homeserver, userId: current.userId, deviceId: current.deviceId, issuedAt: current.issuedAt, expiresAt: current.expiresAt };
  expect(Object.keys(old).sort()).toEqual(Object.keys(fixture).sort());
  await writeFile(sessionFile(), JSON.stringify(old, null, 2) + '\n');
  return old;
}

it('status reads a format-1 session as a password session', async () => {
  const old = await sessionInFormat1();
  const r = await mxs(['status', '--json']);
  expect(r.code).toBe(0);
  expect(r.json()).toMatchObject({ loggedIn: true, userId: old.userId, deviceId: old.deviceId, method: 'password', issuer: null });
});

it('token, refresh and whoami work on a format-1 session; the refresh rewrites it in the current format', async () => {
  await sessionInFormat1();
  expect((await mxs(['token'])).code).toBe(0);
  const refreshed = await mxs(['refresh', '--json']);
  expect(refreshed.code).toBe(0);
  expect(hs.count('/_matrix/client/v3/refresh')).toBe(1);
  const upgraded = JSON.parse(await readFile(sessionFile(), 'utf8'));
  expect(upgraded).toMatchObject({ format: 2, method: 'password', auth: { type: 'matrix' } });
  const who = await mxs(['whoami', '--json']);
  expect(who.code).toBe(0);
  expect(who.json().userId).toBe('@alice:localhost');
});

it('logout ends a format-1 session on the server', async () => {
  await sessionInFormat1();
  const r = await mxs(['logout', '--json']);
  expect(r.code).toBe(0);
  expect(r.json()).toEqual({ profile: 'default', serverSide: true });
  expect(hs.sessions()).toEqual([]);
});

describe('a sessions file written by a newer mxs', () => {
  /** A session of `default` in a format after this mxs's, plus a session of `work` this mxs wrote. */
  async function newerDefaultAndWork(): Promise<string> {
    expect((await mxs(['login', hs.url, '-u', 'alice', '--password-stdin'], 'alice-pw\n')).code).toBe(0);
    expect((await mxs(['login', hs.url, '-u', 'alice', '--password-stdin', '--profile', 'work'], 'alice-pw\n')).code).toBe(0);
    const current = JSON.parse(await readFile(sessionFile(), 'utf8'));
    // One past the newest format this mxs reads (it writes older ones where they suffice).
    const newer = JSON.stringify({ ...current, format: FORMAT + 1 }, null, 2) + '\n';
    await writeFile(sessionFile(), newer);
    return newer;
  }

  it('token says a newer mxs wrote it (exit 6), and what to do, in two lines', async () => {
    const newer = await newerDefaultAndWork();
    const r = await mxs(['token']);
    expect(r.code).toBe(6);
    expect(r.stdout).toBe('');
    const lines = r.stderr.trimEnd().split('\n');
    expect(lines).toEqual([expect.stringMatching(/^Error: The sessions file .*default\.json was written by a newer mxs/), expect.stringMatching(/newer mxs.*--profile NAME/)]);
    expect(r.stderr).not.toMatch(/corrupt/);
    expect(await readFile(sessionFile(), 'utf8')).toBe(newer);
  });

  it('status --all shows the other profiles and names the one it could not read (exit 6)', async () => {
    await newerDefaultAndWork();
    const r = await mxs(['status', '--all', '--json']);
    expect(r.code).toBe(6);
    expect(r.json().profiles.map((p: { profile: string }) => p.profile)).toEqual(['work']);
    expect(r.stderr).toMatch(/default\.json was written by a newer mxs/);
  });

  it('login on that profile refuses (exit 6): the file is not replaced and the session on the server not ended', async () => {
    const newer = await newerDefaultAndWork();
    const sessionsBefore = hs.sessions();
    const r = await mxs(['login', hs.url, '-u', 'alice', '--password-stdin'], 'alice-pw\n');
    expect(r.code).toBe(6);
    expect(r.stderr).toMatch(/newer mxs/);
    expect(await readFile(sessionFile(), 'utf8')).toBe(newer);
    expect(hs.sessions()).toEqual(sessionsBefore);
  });
});
