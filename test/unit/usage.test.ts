// Usage errors from the parser, in-process: missing arguments named with the usage line, and the
// nearest flag suggested for a typo.
import { describe, expect, it } from '@jest/globals';
import { apiCommand } from '../../src/cli/commands/api.js';
import { devicesRenameCommand } from '../../src/cli/commands/devices.js';
import { loginCommand } from '../../src/cli/commands/login.js';
import { statusCommand } from '../../src/cli/commands/status.js';
import { switchCommand } from '../../src/cli/commands/switch.js';
import { runCommand } from '../support/run-command.js';

const env = { MXS_CONFIG_DIR: '/nonexistent/mxs-usage-test' };

describe('a missing argument is named, with the usage line', () => {
  it.each([
    ['mxs switch', switchCommand, [], 'Error: Missing PROFILE. Usage: mxs switch PROFILE'],
    ['mxs api', apiCommand, [], 'Error: Missing PATH. Usage: mxs api [METHOD] PATH'],
    ['mxs devices rename', devicesRenameCommand, [], 'Error: Missing ID and NAME. Usage: mxs devices rename ID NAME'],
    ['mxs devices rename ABC', devicesRenameCommand, ['ABC'], 'Error: Missing NAME. Usage: mxs devices rename ID NAME'],
  ])('%s', async (_label, command, argv, line) => {
    const r = await runCommand(command, argv as string[], { env });
    expect(r.exitCode).toBe(2);
    const lines = r.stderr.trim().split('\n');
    expect(lines[0]).toBe(line);
    expect(lines[1]).toBe(`See: mxs ${command.id.replace(/:/g, ' ')} --help`);
  });

  it('the same in --json', async () => {
    const r = await runCommand(switchCommand, ['--json'], { env });
    expect(r.exitCode).toBe(2);
    expect(r.json()).toEqual({ error: { code: 'usage', message: 'Missing PROFILE. Usage: mxs switch PROFILE', exitCode: 2 } });
  });
});

describe('a mistyped flag suggests the nearest one', () => {
  it.each([
    ['mxs status --jsn', statusCommand, ['--jsn'], '--json'],
    ['mxs login example.org --usr alice', loginCommand, ['example.org', '--usr', 'alice'], '--user'],
    ['mxs status --verbsoe', statusCommand, ['--verbsoe'], '--verbose'],
  ])('%s', async (_label, command, argv, nearest) => {
    const r = await runCommand(command, argv, { env });
    expect(r.exitCode).toBe(2);
    const lines = r.stderr.trim().split('\n');
    expect(lines[0]).toBe(`Error: Unknown flag ${argv.find((a) => a.startsWith('--'))}.`);
    expect(lines[1]).toBe(`Did you mean ${nearest}? See: mxs ${command.id} --help`);
  });

  it('no suggestion when nothing is near', async () => {
    const r = await runCommand(statusCommand, ['--zzzzzzzz'], { env });
    expect(r.stderr.trim().split('\n')).toEqual(['Error: Unknown flag --zzzzzzzz.', 'See: mxs status --help']);
  });
});
