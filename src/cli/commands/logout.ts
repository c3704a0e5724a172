import { logoutService, type LogoutResult } from '../../services/logout.js';
import type { CommandDefinition } from '../command.js';

export const logoutCommand: CommandDefinition<{ local: boolean; all: boolean }, object, LogoutResult> = {
  id: 'logout',
  summary: 'End the session on the server and forget it here.',
  description: 'If the server cannot be reached nothing is forgotten (exit 3); retry, or use --local to forget the session only on this machine.',
  examples: ['<%= config.bin %> logout', '<%= config.bin %> logout --all --profile work', '<%= config.bin %> logout --local'],
  flags: {
    local: { type: 'boolean', summary: 'Only forget the session here; the server is not told.', exclusive: ['all'] },
    all: { type: 'boolean', summary: 'Log out every device of the user (POST /logout/all).' },
  },
  async run({ profile, deps, out }, { flags }) {
    const result = await logoutService(profile, { local: flags.local, all: flags.all }, deps);
    out.info(result.serverSide ? `Logged out${flags.all ? ' of every device' : ''}; profile ${profile} forgotten.` : `Profile ${profile} forgotten on this machine.`);
    return { result, exitCode: 0 };
  },
};
