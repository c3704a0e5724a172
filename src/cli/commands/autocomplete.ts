import { basename, join } from 'node:path';
import { usageError } from '../../errors.js';
import { defaultConfigDir } from '../../store/paths.js';
import { writeCompletionScripts, type CompletionSetup } from '../autocomplete.js';
import type { CommandDefinition } from '../command.js';
import { SHELLS, type Shell } from '../completion.js';

// Takes the place of @oclif/plugin-autocomplete's own `autocomplete` command (a command of the CLI
// wins over a plugin's): the plugin's offers bash, zsh and PowerShell; mxs offers bash, zsh and fish,
// with profile names. The plugin still writes the bash and zsh scripts (its `autocomplete create`)
// and prints their setup line (`autocomplete script SHELL`).
export const autocompleteCommand: CommandDefinition<{ 'refresh-cache': boolean }, { shell?: string }, CompletionSetup> = {
  id: 'autocomplete',
  summary: 'Set up shell completion for bash, zsh or fish.',
  description:
    'Writes the completion script for SHELL (commands, flags, and stored profile names after --profile and for mxs switch) to the cache directory and prints how to load it. Run it again, or with --refresh-cache, after upgrading mxs.',
  examples: ['<%= config.bin %> autocomplete', '<%= config.bin %> autocomplete zsh', '<%= config.bin %> autocomplete --refresh-cache'],
  args: {
    shell: { description: 'bash, zsh or fish (default: the shell in $SHELL).', options: SHELLS },
  },
  flags: {
    'refresh-cache': { type: 'boolean', char: 'r', summary: 'Only rewrite the completion scripts; print no instructions.' },
  },
  async run({ env, host, out }, { flags, args, json }) {
    const shell = (args.shell ?? basename(env.SHELL ?? '')) as Shell;
    if (!SHELLS.includes(shell)) {
      throw usageError(`Cannot tell which shell to complete for${env.SHELL ? ` (SHELL is ${basename(env.SHELL)})` : ''}.`, 'Name it: mxs autocomplete bash, zsh or fish');
    }
    if (!host.oclif) throw new Error('autocomplete writes oclif\'s scripts: it runs under oclif only');
    const { instructions, ...setup } = await writeCompletionScripts(host.oclif, shell, {
      cacheDir: join(host.oclif.cacheDir, 'autocomplete'),
      configDir: defaultConfigDir(),
    });
    if (!flags['refresh-cache'] && !json) out.data(instructions.join('\n'));
    return { result: setup, exitCode: 0 };
  },
};
