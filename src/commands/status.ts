import { Flags } from '@oclif/core';
import { MxsCommand } from '../base-command.js';
import { runStatus } from '../cli/status.js';
import type { StatusResult } from '../services/status.js';

export default class Status extends MxsCommand {
  static override summary = 'Show the stored session and how long its access token has left.';
  static override description =
    'Reads local state only: no network, no keychain. Exit 0 when the token is valid, 5 when it has expired but can be refreshed (run mxs refresh), 4 when not logged in or expired for good.';
  static override examples = ['<%= config.bin %> status', '<%= config.bin %> status --all --json', '<%= config.bin %> status --watch'];
  static override flags = {
    all: Flags.boolean({ summary: 'Every stored profile.' }),
    watch: Flags.boolean({ summary: 'Live countdown on a terminal until expiry or Ctrl-C.', exclusive: ['json'] }),
  };

  async run(): Promise<StatusResult | { defaultProfile: string; profiles: StatusResult[] }> {
    const { flags } = await this.parse(Status);
    const { result, exitCode } = await runStatus(this.setup(flags), flags, this.jsonEnabled());
    this.exitWith(exitCode);
    return result;
  }
}
