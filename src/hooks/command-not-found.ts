import type { Hook } from '@oclif/core';

/** An unknown command is a usage error like any other: one line, one hint, exit 2. */
const hook: Hook<'command_not_found'> = async function (opts) {
  const words = opts.id.split(':');
  const known = opts.config.commands.map((c) => c.id);
  const message = known.includes(words[0]!)
    ? `"${words[0]}" takes no argument "${words.slice(1).join(' ')}".`
    : `Unknown command "${words.join(' ')}".`;
  process.stderr.write(`Error: ${message}\nCommands: ${known.sort().join(', ')}. See: mxs --help\n`);
  process.exit(2);
};

export default hook;
