// Ctrl-C and Ctrl-D at a prompt are the user cancelling (issue 10 item 4): one line, exit 130, nothing
// stored, nothing sent. Run on a real pseudo-terminal (test/support/pty-run.py), as a person types.
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { HomeserverDouble } from '../support/homeserver-double.js';
import { doublePerTest, homePerTest, onTerminal, type Home } from '../support/cli.js';

let hs: HomeserverDouble;
let home: Home;
doublePerTest({}, (d) => (hs = d));
homePerTest((h) => (home = h));

it.each([
  ['Ctrl-C at the password prompt', 'Password', '\x03', ['-u', 'alice']],
  ['Ctrl-D at the password prompt', 'Password', '\x04', ['-u', 'alice']],
  ['Ctrl-C at the user prompt', 'User', '\x03', []],
  ['Ctrl-D at the user prompt', 'User', '\x04', []],
])('%s cancels: exit 130, one line, nothing sent or stored', async (_case, prompt, keys, extra) => {
  const { screen, code } = await onTerminal(home.env, [[prompt, keys]], ['login', hs.url, ...extra]);
  expect(code).toBe(130);
  expect(screen).toMatch(/Error: Cancelled at the prompt/);
  expect(screen).not.toMatch(/Unexpected|bug|\n\s+at /);
  expect(screen.slice(screen.indexOf('Error:')).split('\n').filter((l) => l.trim() !== '')).toEqual([expect.stringMatching(/^Error: Cancelled/), `EXIT ${code}`]);
  expect(hs.requests.filter((q) => q.method === 'POST')).toEqual([]);
  // The config dir may have been checked (created) before the prompt; no session is in it.
  expect(await readdir(join(home.env.MXS_CONFIG_DIR!, 'sessions')).catch(() => [])).toEqual([]);
});

it('a user name of spaces at the user prompt is refused (exit 2) before the password is asked or anything sent', async () => {
  const { screen, code } = await onTerminal(home.env, [['User', '   \r']], ['login', hs.url]);
  expect(code).toBe(2);
  expect(screen).toMatch(/Error: The user name is blank\./);
  expect(screen).not.toContain('Password');
  expect(hs.requests.filter((q) => q.method === 'POST')).toEqual([]);
});
