// Shell completion. @oclif/plugin-autocomplete (3.2.x, the last line for oclif 4 on Node 20) writes
// the bash and zsh scripts, completing commands, flags and flag options from the manifest. It knows
// neither fish nor completion of values that only exist at run time, so mxs adds both here: fish
// gets a script generated from the same command list, and bash and zsh get the plugin's function
// wrapped by one that offers the stored profile names after -p/--profile and for `mxs switch PROFILE`
// (the names of the files in the sessions directory, listed by the shell itself: no mxs process per Tab).
// The plugin's bash function also loses its way after a flag (`mxs status --json --<Tab>`) and offers
// no flag values, so the bash wrapper answers flags, their values and subcommands from tables of its own.

export type Shell = 'bash' | 'zsh' | 'fish';
export const SHELLS: readonly Shell[] = ['bash', 'zsh', 'fish'];

/** What completion needs of a command, as oclif's Config lists it (from the manifest). */
export interface CompletableCommand {
  id: string;
  summary?: string;
  description?: string;
  hidden?: boolean;
  flags: Record<string, { name: string; char?: string; type: 'boolean' | 'option'; options?: readonly string[]; hidden?: boolean; summary?: string; description?: string }>;
  args: Record<string, { name: string }>;
}

/** Flags and arguments with this name take a profile name. */
const PROFILE = 'profile';

/** A single-quoted literal for bash and zsh. */
function quote(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

/** A single-quoted literal for fish, where \\ and \' are the escapes inside single quotes. */
function fishQuote(text: string): string {
  return `'${text.replace(/[\\']/g, (c) => `\\${c}`)}'`;
}

/** Commands whose first argument is a profile (`switch`). */
function profileArgCommands(commands: CompletableCommand[]): string[] {
  return commands.filter((c) => Object.keys(c.args ?? {})[0] === PROFILE).map((c) => c.id);
}

/**
 * Appended to the plugin's bash script: `_<bin>_complete` answers profile positions itself and hands
 * everything else to the plugin's `_<bin>_autocomplete`.
 */
export function bashProfileCompletion(bin: string, commands: CompletableCommand[], defaultConfigDir: string): string {
  const switchers = profileArgCommands(commands).filter((id) => !id.includes(':'));
  const { ids, valueFlags, optionValues, flagTable, childTable } = bashTables(commands);
  return `
# ${bin}: profile names after -p/--profile and for: ${switchers.join(', ') || '-'} (added by ${bin} autocomplete)
_${bin}_profiles() {
  local dir=\${MXS_CONFIG_DIR:-} f
  [[ -n $dir ]] || dir=${quote(defaultConfigDir)}
  for f in "$dir"/sessions/*.json; do
    [[ -f $f ]] || continue
    f=\${f##*/}
    printf '%s\\n' "\${f%.json}"
  done
}

_${bin}_complete() {
  local cur=\${COMP_WORDS[COMP_CWORD]} prev=\${COMP_WORDS[COMP_CWORD-1]}
  # --profile=NAME: bash splits the word at "=".
  [[ $prev == = && COMP_CWORD -ge 2 ]] && prev=\${COMP_WORDS[COMP_CWORD-2]}
  if [[ $prev == -p || $prev == --${PROFILE} ]] || { [[ $cur != -* && COMP_CWORD -eq 2 ]] && [[ " ${switchers.join(' ')} " == *" \${COMP_WORDS[1]} "* ]]; }; then
    COMPREPLY=($(compgen -W "$(_${bin}_profiles)" -- "$cur"))
    return 0
  fi
  # A flag's value: its options (--storage auto|keychain|file, --method ...).
  local values
  values=$(_${bin}_flag_values "$prev")
  if [[ -n $values ]]; then
    COMPREPLY=($(compgen -W "$values" -- "$cur"))
    return 0
  fi
  # The command typed so far (topic:command), earlier flags and their values skipped.
  local id='' w next i skip=0
  for ((i = 1; i < COMP_CWORD; i++)); do
    w=\${COMP_WORDS[i]}
    if ((skip)); then skip=0; continue; fi
    if [[ $w == = ]]; then skip=1; continue; fi
    if [[ $w == -* ]]; then
      [[ " ${valueFlags.join(' ')} " == *" $w "* && \${COMP_WORDS[i+1]} != = ]] && skip=1
      continue
    fi
    next=\${id:+$id:}$w
    [[ " ${ids.join(' ')} " == *" $next "* ]] || break
    id=$next
  done
  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "$(_${bin}_flags "$id")" -- "$cur"))
    return 0
  fi
  local children
  children=$(_${bin}_children "$id")
  if [[ -n $children ]]; then
    COMPREPLY=($(compgen -W "$children" -- "$cur"))
    return 0
  fi
  _${bin}_autocomplete
}

_${bin}_flag_values() {
  case $1 in
${Object.entries(optionValues).map(([flag, values]) => `    ${flag}) echo ${quote(values.join(' '))} ;;`).join('\n')}
  esac
}

_${bin}_flags() {
  case $1 in
${flagTable.map(([id, flags]) => `    ${quote(id)}) echo ${quote(flags.join(' '))} ;;`).join('\n')}
  esac
}

_${bin}_children() {
  case $1 in
${childTable.map(([id, children]) => `    ${quote(id)}) echo ${quote(children.join(' '))} ;;`).join('\n')}
  esac
}

complete -F _${bin}_complete ${bin}
`;
}

/** The tables the bash completion needs: value flags, each flag's options, each command's flags, each topic's children. */
function bashTables(all: CompletableCommand[]) {
  const commands = all.filter((c) => !c.hidden);
  const idSet = new Set<string>();
  for (const c of commands) {
    const parts = c.id.split(':');
    for (let i = 1; i <= parts.length; i++) idSet.add(parts.slice(0, i).join(':'));
  }
  const ids = [...idSet].sort();
  const valueFlags = new Set<string>();
  const optionValues: Record<string, string[]> = {};
  const flagsOf = (c: CompletableCommand) =>
    Object.values(c.flags)
      .filter((f) => !f.hidden)
      .flatMap((f) => {
        if (f.type === 'option') {
          valueFlags.add(`--${f.name}`);
          if (f.char) valueFlags.add(`-${f.char}`);
          if (f.options) for (const n of [`--${f.name}`, ...(f.char ? [`-${f.char}`] : [])]) optionValues[n] = [...new Set([...(optionValues[n] ?? []), ...f.options])];
        }
        return [`--${f.name}`, ...(f.char ? [`-${f.char}`] : [])];
      })
      .sort();
  const flagTable: [string, string[]][] = commands.map((c) => [c.id, flagsOf(c)]);
  // Before the command: the global flags (those every command has).
  const global = (flagTable[0]?.[1] ?? []).filter((f) => flagTable.every(([, flags]) => flags.includes(f)));
  flagTable.push(['', global]);
  const childTable: [string, string[]][] = ['', ...ids]
    .map((parent): [string, string[]] => [parent, ids.filter((id) => (parent === '' ? !id.includes(':') : id.startsWith(`${parent}:`) && !id.slice(parent.length + 1).includes(':'))).map((id) => id.split(':').pop()!)])
    .filter(([, children]) => children.length > 0);
  return { ids, valueFlags: [...valueFlags].sort(), optionValues, flagTable, childTable };
}

/**
 * The plugin's zsh function file, with its `_<bin>` wrapped: the file's last line calls the function
 * it defines (how an autoloaded #compdef file runs the first time), so that call is replaced by the
 * wrapper and a call to it. Returns undefined when the file does not end as expected (a different
 * plugin version): it is then left as it is, without profile names.
 */
export function zshWithProfiles(generated: string, bin: string, commands: CompletableCommand[], defaultConfigDir: string): string | undefined {
  const tail = new RegExp(`\\n_${bin}\\n*$`);
  if (!tail.test(generated)) return undefined;
  const switchers = profileArgCommands(commands).filter((id) => !id.includes(':'));
  return `${generated.replace(tail, '\n')}
# ${bin}: profile names after -p/--profile and for: ${switchers.join(', ') || '-'} (added by ${bin} autocomplete)
_${bin}_profiles() {
  local dir=\${MXS_CONFIG_DIR:-${quote(defaultConfigDir)}}
  local -a profiles
  profiles=("$dir"/sessions/*.json(N:t:r))
  _describe -t profiles 'profile' profiles
}

functions[_${bin}_plugin]=$functions[_${bin}]
_${bin}() {
  if [[ \${words[CURRENT-1]} == (-p|--${PROFILE}) ]]; then
    _${bin}_profiles
  elif [[ $PREFIX == --${PROFILE}=* ]]; then
    compset -P '--${PROFILE}='
    _${bin}_profiles
  elif (( CURRENT == 3 )) && [[ $PREFIX != -* && " ${switchers.join(' ')} " == *" \${words[2]} "* ]]; then
    _${bin}_profiles
  else
    _${bin}_plugin "$@"
  fi
}

_${bin} "$@"
`;
}

/**
 * A fish completion script for the commands (topics and subcommands separated by spaces, as mxs
 * takes them), their flags with their options, and profile names where a profile is asked for.
 */
export function fishScript(bin: string, all: CompletableCommand[], defaultConfigDir: string): string {
  const commands = all.filter((c) => !c.hidden).sort((a, b) => a.id.localeCompare(b.id));
  const ids = new Set<string>();
  for (const c of commands) {
    const parts = c.id.split(':');
    for (let i = 1; i <= parts.length; i++) ids.add(parts.slice(0, i).join(':'));
  }
  const valueFlags = new Set<string>();
  for (const c of commands) {
    for (const f of Object.values(c.flags)) {
      if (f.type !== 'option') continue;
      valueFlags.add(`--${f.name}`);
      if (f.char) valueFlags.add(`-${f.char}`);
    }
  }
  const fn = `__${bin}_at`;
  const lines = [
    `# ${bin} completion for fish, written by ${bin} autocomplete`,
    '',
    `function __${bin}_command --description 'The ${bin} command typed so far, as topic:command'`,
    '    set -l words (commandline -opc)',
    '    set -e words[1]',
    `    set -l known ${[...ids].sort().map(fishQuote).join(' ')}`,
    '    set -l id',
    '    set -l skip 0',
    '    for w in $words',
    '        if test $skip -eq 1',
    '            set skip 0',
    '            continue',
    '        end',
    '        switch $w',
    `            case ${[...valueFlags].sort().map(fishQuote).join(' ')}`,
    '                set skip 1',
    "            case '-*'",
    "            case '*'",
    '                set -l next (string join : $id $w)',
    '                contains -- $next $known; or break',
    '                set id $id $w',
    '        end',
    '    end',
    '    string join : $id',
    'end',
    '',
    `function ${fn} --description 'True when the ${bin} command typed so far is $argv[1]'`,
    `    set -l id (__${bin}_command)`,
    '    test "$id" = "$argv[1]"',
    'end',
    '',
    `function __${bin}_profiles --description 'Stored ${bin} profiles'`,
    '    set -l dir $MXS_CONFIG_DIR',
    `    test -n "$dir"; or set dir ${fishQuote(defaultConfigDir)}`,
    '    for f in $dir/sessions/*.json',
    '        test -f $f; and basename $f .json',
    '    end',
    'end',
    '',
    `complete -c ${bin} -f`,
  ];
  const summaryOf = (c: { summary?: string; description?: string }) => (c.summary ?? c.description ?? '').split('\n')[0]!;
  // The first word after each topic (the empty topic is mxs itself): subcommands and subtopics.
  for (const parent of ['', ...[...ids].filter((id) => [...ids].some((x) => x.startsWith(`${id}:`)))]) {
    const children = [...ids].filter((id) => (parent === '' ? !id.includes(':') : id.startsWith(`${parent}:`) && !id.slice(parent.length + 1).includes(':')));
    for (const child of children) {
      const cmd = commands.find((c) => c.id === child);
      const word = child.split(':').pop()!;
      lines.push(`complete -c ${bin} -n ${fishQuote(`${fn} ${parent || '""'}`)} -a ${fishQuote(word)} -d ${fishQuote(cmd ? summaryOf(cmd) : `${word} commands`)}`);
    }
  }
  // Global flags may also stand before the command (`mxs -p work status`): those every command has.
  const globalFlags = Object.values(commands[0]?.flags ?? {}).filter((f) => commands.every((c) => c.flags[f.name]));
  for (const c of [{ id: '', flags: Object.fromEntries(globalFlags.map((f) => [f.name, f])), args: {} } as CompletableCommand, ...commands]) {
    const at = `-n ${fishQuote(`${fn} ${c.id || '""'}`)}`;
    for (const f of Object.values(c.flags)) {
      if (f.hidden) continue;
      const names = `${f.char ? `-s ${f.char} ` : ''}-l ${f.name}`;
      let value = '';
      if (f.type === 'option') {
        if (f.name === PROFILE) value = ` -x -a '(__${bin}_profiles)'`;
        else if (f.options) value = ` -x -a ${fishQuote(f.options.join(' '))}`;
        else value = ' -r -F';
      }
      lines.push(`complete -c ${bin} ${at} ${names}${value} -d ${fishQuote(summaryOf(f))}`);
    }
    if (Object.keys(c.args ?? {})[0] === PROFILE) lines.push(`complete -c ${bin} ${at} -x -a '(__${bin}_profiles)'`);
  }
  return lines.join('\n') + '\n';
}
