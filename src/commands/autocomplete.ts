import { Args, Flags } from '@oclif/core';
import { basename, join } from 'node:path';
import { MxsCommand } from '../base-command.js';
import { writeCompletionScripts, type CompletionSetup } from '../cli/autocomplete.js';
import { SHELLS, type Shell } from '../cli/completion.js';
import { usageError } from '../errors.js';
import { defaultConfigDir } from '../store/paths.js';

// Takes the place of @oclif/plugin-autocomplete's own `autocomplete` command (a command of the CLI
// wins over a plugin's): the plugin's offers bash, zsh and PowerShell; mxs offers bash, zsh and fish,
// with profile names. The plugin still writes the bash and zsh scripts (its `autocomplete create`)
// and prints their setup line (`autocomplete script SHELL`).
export default class Autocomplete extends MxsCommand {
  static override summary = 'Set up shell completion for bash, zsh or fish.';
  static override description =
    'Writes the completion script for SHELL (commands, flags, and stored profile names after --profile and for mxs switch) to the cache directory and prints how to load it. Run it again, or with --refresh-cache, after upgrading mxs.';
  static override examples = ['<%= config.bin %> autocomplete', '<%= config.bin %> autocomplete zsh', '<%= config.bin %> autocomplete --refresh-cache'];
  static override args = {
    shell: Args.string({ description: 'bash, zsh or fish (default: the shell in $SHELL).', options: [...SHELLS] }),
  };
  static override flags = {
    'refresh-cache': Flags.boolean({ char: 'r', summary: 'Only rewrite the completion scripts; print no instructions.' }),
  };

  async run(): Promise<CompletionSetup> {
    const { args, flags } = await this.parse(Autocomplete);
    const shell = (args.shell ?? basename(process.env.SHELL ?? '')) as Shell;
    if (!SHELLS.includes(shell)) {
      throw usageError(`Cannot tell which shell to complete for${process.env.SHELL ? ` (SHELL is ${basename(process.env.SHELL)})` : ''}.`, 'Name it: mxs autocomplete bash, zsh or fish');
    }
    const { instructions, ...setup } = await writeCompletionScripts(this.config, shell, {
      cacheDir: join(this.config.cacheDir, 'autocomplete'),
      configDir: defaultConfigDir(),
    });
    if (!flags['refresh-cache'] && !this.jsonEnabled()) this.out.data(instructions.join('\n'));
    return setup;
  }
}
