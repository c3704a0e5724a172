// `mxs switch`: the config file that holds the default profile, the service, the hints that name
// --profile only when it is needed, and the completion scripts that offer profile names.
import { execFileSync } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { bashProfileCompletion, fishScript, zshWithProfiles, type CompletableCommand } from '../../src/cli/completion.js';
import { resolveInvocation } from '../../src/cli/invocation.js';
import { loginHint, MxsError, notLoggedIn } from '../../src/errors.js';
import { switchService } from '../../src/services/switch.js';
import { ConfigStore, configFile } from '../../src/store/config.js';
import { renderHint } from '../../src/ui/hints.js';
import { makeDeps, rejectionOf, type UnitWorld } from '../support/unit-deps.js';
import { statusCommand } from '../../src/cli/commands/status.js';
import { runCommand } from '../support/run-command.js';

let w: UnitWorld;
let config: ConfigStore;
beforeEach(async () => {
  w = await makeDeps();
  config = new ConfigStore(configFile(w.dir));
});
afterEach(() => w.cleanup());

describe('ConfigStore', () => {
  it('has no default profile until one is chosen, then keeps it in config.json (format 1)', async () => {
    expect(config.defaultProfile()).toBeNull();
    await config.setDefaultProfile('work');
    expect(new ConfigStore(config.file).defaultProfile()).toBe('work');
    expect(JSON.parse(await readFile(config.file, 'utf8'))).toEqual({ format: 1, defaultProfile: 'work' });
  });

  it('keeps keys it does not know when it writes (a newer mxs may have added them)', async () => {
    await writeFile(config.file, JSON.stringify({ format: 1, defaultProfile: 'a', later: { x: 1 } }));
    await config.setDefaultProfile('b');
    expect(JSON.parse(await readFile(config.file, 'utf8'))).toEqual({ format: 1, defaultProfile: 'b', later: { x: 1 } });
  });

  it.each([
    ['not JSON', '{"format": 1, ', /not valid JSON/],
    ['not an object', '[1]', /not an object/],
    ['an unknown format', '{"format": 9}', /unknown format 9/],
    ['a profile name that is not one', '{"format": 1, "defaultProfile": "../x"}', /invalid defaultProfile/],
    ['a profile that is not a string', '{"format": 1, "defaultProfile": 3}', /bad defaultProfile/],
  ])('refuses a config file with %s: exit 6 naming the file, and switch leaves it as it is', async (_why, text, message) => {
    await writeFile(config.file, text);
    const read = (() => {
      try {
        new ConfigStore(config.file).defaultProfile();
      } catch (err) {
        return err as MxsError;
      }
      throw new Error('expected an error');
    })();
    expect(read).toBeInstanceOf(MxsError);
    expect(read).toMatchObject({ exitCode: 6, code: 'storage' });
    expect(read.message).toContain(config.file);
    expect(read.message).toMatch(message);
    const written = await rejectionOf(() => config.setDefaultProfile('work'));
    expect(written).toMatchObject({ exitCode: 6 });
    expect(await readFile(config.file, 'utf8')).toBe(text);
  });

  it('refuses a FIFO where the config file belongs instead of waiting on it (exit 6)', async () => {
    try {
      execFileSync('mkfifo', [config.file]);
    } catch {
      return; // no mkfifo on this system
    }
    expect(() => config.defaultProfile()).toThrow(/not a regular file/);
  });

  it('refuses a directory where the config file belongs (exit 6)', async () => {
    await mkdir(config.file);
    expect(() => config.defaultProfile()).toThrow(MxsError);
    expect(await rejectionOf(() => config.setDefaultProfile('work'))).toMatchObject({ exitCode: 6 });
  });
});

describe('switchService', () => {
  it('makes a profile with a stored session the default', async () => {
    await w.seed({ profile: 'work' });
    expect(await switchService('work', { sessions: w.deps.sessions, config })).toEqual({ defaultProfile: 'work' });
    expect(config.defaultProfile()).toBe('work');
  });

  it('refuses a profile without a session (exit 2), naming the stored ones, and changes nothing', async () => {
    await w.seed({ profile: 'work' });
    await w.seed({ profile: 'default' });
    const err = await rejectionOf(() => switchService('wrok', { sessions: w.deps.sessions, config }));
    expect(err).toMatchObject({ exitCode: 2, code: 'usage' });
    expect(err.message).toMatch(/"wrok"/);
    const hint = renderHint(err.hint!, { defaultProfile: 'default' });
    expect(hint).toMatch(/Stored profiles: default, work\./);
    expect(hint).toMatch(/mxs login SERVER --profile wrok/);
    expect(config.defaultProfile()).toBeNull();
  });

  it('says so when no profile has a session at all', async () => {
    const err = await rejectionOf(() => switchService('work', { sessions: w.deps.sessions, config }));
    expect(renderHint(err.hint!, { defaultProfile: 'default' })).toMatch(/^No profile has a session yet\. Log in first: mxs login SERVER --profile work$/);
  });
});

describe('profile resolution and hints', () => {
  const ctx = (flags: { profile?: string }) => resolveInvocation({ verbose: false, storage: 'file', timeout: '30s', ...flags }, { MXS_CONFIG_DIR: w.dir });

  it.each([
    ['nothing chosen', undefined, undefined, 'default'],
    ['a switched default', 'work', undefined, 'work'],
    ['--profile (or MXS_PROFILE, which oclif puts in the same flag) over the switched default', 'work', 'ci', 'ci'],
  ])('uses %s', async (_case, switched, flag, expected) => {
    if (switched) await config.setDefaultProfile(switched);
    expect(ctx({ profile: flag }).profile).toBe(expected);
  });

  it('needs no config file when --profile names the profile: a corrupt one stops only commands that need it', async () => {
    await writeFile(config.file, 'garbage');
    expect(ctx({ profile: 'work' }).profile).toBe('work');
    expect(() => ctx({})).toThrow(/config file .* is corrupt/);
  });

  it.each([
    // [switched default, profile of the hint, hint]
    ['nothing', 'default', 'Run: mxs login SERVER'],
    ['nothing', 'work', 'Run: mxs login SERVER --profile work'],
    ['work', 'work', 'Run: mxs login SERVER'],
    ['work', 'default', 'Run: mxs login SERVER --profile default'],
  ])('after switching to %s, a hint for %s is runnable as it stands: %s', async (switched, profile, hint) => {
    if (switched !== 'nothing') await config.setDefaultProfile(switched);
    const invocation = ctx({ profile: 'anything' });
    expect(renderHint(loginHint(profile), invocation)).toBe(hint);
    expect(renderHint(notLoggedIn(profile).hint!, invocation)).toBe(hint);
  });

  it('names --profile in every hint when the default cannot be read', async () => {
    await writeFile(config.file, 'garbage');
    const invocation = ctx({ profile: 'default' });
    expect(invocation.defaultProfile).toBeNull();
    expect(renderHint(loginHint('default'), invocation)).toBe('Run: mxs login SERVER --profile default');
  });
});

describe('completion scripts', () => {
  const flags = {
    profile: { name: 'profile', char: 'p', type: 'option' as const, summary: 'Named session.' },
    storage: { name: 'storage', type: 'option' as const, options: ['auto', 'file'], summary: "Where it's kept." },
    json: { name: 'json', type: 'boolean' as const, summary: 'JSON.' },
  };
  const commands: CompletableCommand[] = [
    { id: 'status', summary: 'Show the session.', flags: { ...flags, all: { name: 'all', type: 'boolean', summary: 'Every profile.' } }, args: {} },
    { id: 'switch', summary: 'Make PROFILE the default.', flags, args: { profile: { name: 'profile' } } },
    { id: 'devices', summary: 'List devices.', flags, args: {} },
    { id: 'devices:delete', summary: 'Delete devices.', flags: { ...flags, yes: { name: 'yes', type: 'boolean', summary: 'Yes.' } }, args: {} },
    { id: 'autocomplete:create', hidden: true, flags: {}, args: {} },
  ];
  const dir = "/home/o'neil/.config/mxs";

  it('fish: commands, subcommands, flags with their options, and profile names where a profile is asked for', () => {
    const fish = fishScript('mxs', commands, dir);
    expect(fish).toContain(`complete -c mxs -n '__mxs_at ""' -a 'status' -d 'Show the session.'`);
    expect(fish).toContain(`complete -c mxs -n '__mxs_at devices' -a 'delete' -d 'Delete devices.'`);
    expect(fish).toContain(`complete -c mxs -n '__mxs_at devices:delete' -l yes -d 'Yes.'`);
    expect(fish).toContain(`complete -c mxs -n '__mxs_at status' -l storage -x -a 'auto file' -d 'Where it\\'s kept.'`);
    expect(fish).toContain(`complete -c mxs -n '__mxs_at status' -s p -l profile -x -a '(__mxs_profiles)' -d 'Named session.'`);
    expect(fish).toContain(`complete -c mxs -n '__mxs_at switch' -x -a '(__mxs_profiles)'`);
    // Global flags before the command: those every command has.
    expect(fish).toContain(`complete -c mxs -n '__mxs_at ""' -s p -l profile -x -a '(__mxs_profiles)'`);
    expect(fish).not.toContain(`__mxs_at ""' -l all`);
    expect(fish).not.toContain('create');
    expect(fish).toContain(`set dir '/home/o\\'neil/.config/mxs'`);
  });

  it('bash: a wrapper that completes profiles after -p/--profile and for switch, flags and their values itself, else calls the plugin', () => {
    const bash = bashProfileCompletion('mxs', commands, dir);
    expect(bash).toContain(`dir='/home/o'\\''neil/.config/mxs'`);
    expect(bash).toContain('" switch " == *" ${COMP_WORDS[1]} "*');
    expect(bash).toMatch(/\n {2}_mxs_autocomplete\n\}\n/);
    expect(bash.endsWith('\ncomplete -F _mxs_complete mxs\n')).toBe(true);
  });

  it('zsh: wraps the plugin function and calls the wrapper where the plugin called its own; leaves an unexpected file alone', () => {
    const generated = '#compdef mxs\n_mxs() {\n  _arguments\n}\n\n_mxs\n';
    const zsh = zshWithProfiles(generated, 'mxs', commands, dir)!;
    expect(zsh.startsWith('#compdef mxs\n_mxs() {\n  _arguments\n}\n')).toBe(true);
    expect(zsh).toContain('functions[_mxs_plugin]=$functions[_mxs]');
    expect(zsh.trimEnd().endsWith('_mxs "$@"')).toBe(true);
    expect(zsh.match(/^_mxs$/m)).toBeNull();
    expect(zshWithProfiles('#compdef mxs\nsomething else\n', 'mxs', commands, dir)).toBeUndefined();
  });
});

describe('status --all', () => {
  it('marks the default profile once: a profile named default that is the default needs no "(default)"; a blank line between profiles', async () => {
    const w = await makeDeps();
    try {
      await w.seed({ profile: 'default', storage: 'file' });
      await w.seed({ profile: 'work', storage: 'file' });
      const r = await runCommand(statusCommand, ['--all'], { env: { MXS_CONFIG_DIR: w.dir } });
      const profileLines = r.stdout.split('\n').filter((l) => l.startsWith('Profile:'));
      expect(profileLines).toEqual(['Profile:   default', 'Profile:   work']);
      expect(r.stdout).toMatch(/\n\nProfile: {3}work/);
    } finally {
      await w.cleanup();
    }
  });
});
