import { Flags } from '@oclif/core';
import { MxsCommand } from '../base-command.js';
import { runToken } from '../cli/token.js';
import type { TokenResult } from '../services/tokens.js';

export default class Token extends MxsCommand {
  static override summary = 'Print the access token alone, refreshing it first when it is about to expire.';
  static override description =
    'For scripts: curl -H "Authorization: Bearer $(mxs token)". Refreshes first when less than --min-valid is left (at most half the token lifetime, so short-lived tokens are not refreshed on every call). Concurrent runs refresh once.';
  static override examples = [
    'curl -H "Authorization: Bearer $(<%= config.bin %> token)" https://matrix.example.org/_matrix/client/v3/account/whoami',
    '<%= config.bin %> token --min-valid 5m --profile work',
  ];
  static override flags = {
    'min-valid': Flags.string({ default: '60s', summary: 'Refresh first when the token has less than this left.' }),
  };

  async run(): Promise<TokenResult> {
    const { flags } = await this.parse(Token);
    return runToken(this.setup(flags), flags, this.jsonEnabled());
  }

  override logJson(): void {
    // runToken already printed the result: the token is the one thing that bypasses redaction.
  }
}
