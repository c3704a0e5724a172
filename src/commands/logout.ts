import { Flags } from '@oclif/core';
import { MxsCommand } from '../base-command.js';
import { logoutService, type LogoutResult } from '../services/logout.js';

export default class Logout extends MxsCommand {
  static override summary = 'End the session on the server and forget it here.';
  static override description =
    'If the server cannot be reached nothing is forgotten (exit 3); retry, or use --local to forget the session only on this machine.';
  static override examples = ['<%= config.bin %> logout', '<%= config.bin %> logout --all --profile work', '<%= config.bin %> logout --local'];
  static override flags = {
    local: Flags.boolean({ summary: 'Only forget the session here; the server is not told.', exclusive: ['all'] }),
    all: Flags.boolean({ summary: 'Log out every device of the user (POST /logout/all).' }),
  };

  async run(): Promise<LogoutResult> {
    const { flags } = await this.parse(Logout);
    const { profile, deps } = this.setup(flags);
    const result = await logoutService(profile, { local: flags.local, all: flags.all }, deps);
    this.out.info(
      result.serverSide ? `Logged out${flags.all ? ' of every device' : ''}; profile ${profile} forgotten.` : `Profile ${profile} forgotten on this machine.`,
    );
    return result;
  }
}
