import type { Config } from '@oclif/core';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fsFailure, writeFileAtomic } from '../store/atomic.js';
import { bashProfileCompletion, fishScript, zshWithProfiles, type CompletableCommand, type Shell } from './completion.js';

export interface CompletionSetup {
  shell: Shell;
  /** The script the shell loads. */
  completionFile: string;
  /** The one command that makes the shell load it. */
  setup: string;
}

/**
 * Writes the completion scripts below `cacheDir` (oclif's cache dir + `autocomplete`, where the
 * plugin writes): the plugin's bash and zsh scripts with profile names added, and the fish script.
 */
export async function writeCompletionScripts(config: Config, shell: Shell, opts: { cacheDir: string; configDir: string }): Promise<CompletionSetup & { instructions: string[] }> {
  const { bin } = config;
  const commands = config.commands as unknown as CompletableCommand[];
  const files = {
    bash: join(opts.cacheDir, 'functions', 'bash', `${bin}.bash`),
    zsh: join(opts.cacheDir, 'functions', 'zsh', `_${bin}`),
    fish: join(opts.cacheDir, 'functions', 'fish', `${bin}.fish`),
  };
  await config.runCommand('autocomplete:create');
  const bash = await read(files.bash);
  await write(files.bash, bash + bashProfileCompletion(bin, commands, opts.configDir));
  const zsh = zshWithProfiles(await read(files.zsh), bin, commands, opts.configDir);
  if (zsh !== undefined) await write(files.zsh, zsh);
  await write(files.fish, fishScript(bin, commands, opts.configDir));

  const rc = { bash: '~/.bashrc', zsh: '~/.zshrc', fish: '' }[shell];
  const setup =
    shell === 'fish'
      ? `mkdir -p ~/.config/fish/completions && ln -sf '${files.fish.replace(/'/g, `'\\''`)}' ~/.config/fish/completions/${bin}.fish`
      : `${bin} autocomplete script ${shell} >> ${rc}`;
  const instructions = [
    `Shell completion for ${shell} is in ${files[shell]}.`,
    '',
    shell === 'fish' ? 'Set it up once (fish loads it from its completions directory):' : `Set it up once (this adds one line to ${rc}):`,
    '',
    `  ${setup}`,
    '',
    shell === 'fish' ? 'Then open a new fish and try:' : `Then open a new shell (or run: source ${rc}) and try:`,
    '',
    `  ${bin} <TAB>                  commands`,
    `  ${bin} status --<TAB>         flags`,
    `  ${bin} switch <TAB>           stored profiles (also after --profile)`,
    '',
    `After upgrading ${bin}, run: ${bin} autocomplete --refresh-cache`,
  ];
  return { shell, completionFile: files[shell], setup, instructions };
}

async function read(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    throw fsFailure(err, file, `Cannot read the completion script ${file}`);
  }
}

async function write(file: string, text: string): Promise<void> {
  try {
    await writeFileAtomic(file, text);
  } catch (err) {
    throw fsFailure(err, file, `Cannot write the completion script ${file}`);
  }
}
