// Usage as people type it (issue 10, items 5-7): conflicting flags name both flags, global flags before
// the command, help in every spelling, typo suggestions, and the --json error object on every usage error.
import { makeHome, runMxs } from '../support/cli.js';

let home: Awaited<ReturnType<typeof makeHome>>;
beforeEach(async () => {
  home = await makeHome('file');
});
afterEach(async () => {
  await home.cleanup();
});
const mxs = (args: string[], env: Record<string, string> = {}) => runMxs(args, { env: { ...home.env, ...env } });

describe('conflicting flags name both flags, exit 2, also as a --json error object', () => {
  it.each([
    [['logout', '--local', '--all'], ['--local', '--all']],
    [['login', 'example.org', '--password-stdin', '--token-stdin'], ['--password-stdin', '--token-stdin']],
    [['status', '--watch', '--json'], ['--watch', '--json']],
    [['login', 'example.org', '--browser', '--password-stdin'], ['--browser', '--password-stdin']],
  ])('mxs %j', async (args, flags) => {
    const r = await mxs([...args, '--json']);
    expect(r.code).toBe(2);
    const [line, hint] = r.stderr.trim().split('\n');
    for (const f of flags) expect(line).toContain(f);
    expect(line).toMatch(/cannot be used together/);
    expect(line).not.toMatch(/The following error occurred/);
    expect(hint).toBeTruthy();
    expect(JSON.parse(r.stdout.slice(r.stdout.indexOf('{')))).toEqual({ error: { code: 'usage', message: line!.replace(/^Error: /, ''), exitCode: 2 } });
  });
});

describe('help and global flags as the contract spells them', () => {
  it.each([[['-h']], [['--help']], [['help', 'status']], [['status', '--help']], [['-p', 'work', 'help', 'status']]])('mxs %j shows help, exit 0', async (args) => {
    const r = await mxs(args);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/USAGE|COMMANDS/);
  });

  it('help for a command shows that command', async () => {
    const r = await mxs(['help', 'status']);
    expect(r.stdout).toContain('$ mxs status');
  });

  it.each([
    [['-p', 'work', 'status', '--json']],
    [['--profile', 'work', 'status', '--json']],
    [['--profile=work', 'status', '--json']],
    [['--json', '-p', 'work', 'status']],
  ])('global flags before the command: mxs %j', async (args) => {
    const r = await mxs(args);
    expect(r.code).toBe(4); // not logged in
    expect(r.json()).toMatchObject({ profile: 'work', loggedIn: false });
    expect(r.stderr).toContain('--profile work');
  });

  it('the same goes through oclif when the fast path is off', async () => {
    const r = await mxs(['-p', 'work', 'status', '--json'], { MXS_NO_FAST_PATH: '1' });
    expect(r.code).toBe(4);
    expect(r.json()).toMatchObject({ profile: 'work' });
  });
});

describe('unknown commands and stray arguments', () => {
  it('a typo suggests the nearest command', async () => {
    const r = await mxs(['stauts']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/Unknown command "stauts"/);
    expect(r.stderr).toMatch(/Did you mean: mxs status\?/);
  });

  it('a stray argument is a usage error naming the command, not the command list', async () => {
    const r = await mxs(['status', 'extra']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/"status" takes no argument "extra"/);
    expect(r.stderr).toMatch(/mxs status --help/);
  });

  it.each([[['nosuch', '--json']], [['status', 'extra', '--json']]])('--json prints the error object for %j', async (args) => {
    const r = await mxs(args);
    expect(r.code).toBe(2);
    expect(r.json()).toEqual({ error: { code: 'usage', message: expect.any(String), exitCode: 2 } });
  });

  it('control characters in an unknown command are escaped, so the error stays two lines', async () => {
    const r = await mxs(['st\x1b]0;pwned\x07atus\nHint: run rm -rf']);
    expect(r.code).toBe(2);
    expect(r.stderr).not.toContain('\x1b');
    expect(r.stderr.trim().split('\n')).toHaveLength(2);
  });
});

describe('help everywhere: -h after the command, help alone, unknown subjects in mxs style', () => {
  it.each([[['login', '-h']], [['token', '-h']], [['devices', 'delete', '-h']], [['devices', '-h']], [['exec', '-h']], [['status', '--json', '-h']], [['help']], [['exec', '--help']]])(
    'mxs %j shows help, exit 0',
    async (args) => {
      const r = await mxs(args);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/USAGE|COMMANDS/);
    },
  );

  it('-h after -- belongs to the command exec runs, not to mxs', async () => {
    const r = await mxs(['exec', '--', 'true', '-h']);
    expect(r.stdout).not.toMatch(/USAGE/);
    expect(r.code).toBe(4); // not logged in: exec got as far as the session
  });

  it.each([[['help', 'foo']], [['foo', '--help']], [['foo', '-h']]])('mxs %j: an unknown command in mxs style, with the commands as typed', async (args) => {
    const r = await mxs(args);
    expect(r.code).toBe(2);
    expect(r.stderr).not.toContain('›');
    const [line, hint] = r.stderr.trim().split('\n');
    expect(line).toBe('Error: Unknown command "foo".');
    expect(hint).toContain('devices delete');
    expect(hint).not.toContain('devices:delete');
  });
});

describe('suggestions for mistyped commands and flags', () => {
  it('mxs devices delet: did you mean devices delete', async () => {
    const r = await mxs(['devices', 'delet']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/Did you mean: mxs devices delete\?/);
  });

  it('an unknown command lists the commands as typed (spaces, not colons)', async () => {
    const r = await mxs(['zzzzzzz']);
    expect(r.stderr).toContain('devices rename');
    expect(r.stderr).not.toMatch(/\w:\w/);
  });
});
