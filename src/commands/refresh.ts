import { Flags } from '@oclif/core';
import { MxsCommand } from '../base-command.js';
import { parseDuration } from '../duration.js';
import { refreshService, type RefreshResult } from '../services/tokens.js';
import { refreshLine } from '../ui/render.js';

export default class Refresh extends MxsCommand {
  static override summary = 'Exchange the stored refresh token for a new access token now.';
  static override description =
    'Concurrent runs refresh once: the others wait for it and report its result. A network or server failure leaves the stored session as it was (exit 3); a refused refresh token means logging in again (exit 4).';
  static override examples = ['<%= config.bin %> refresh', '<%= config.bin %> refresh --profile work --lifetime 7d --json'];
  static override flags = {
    lifetime: Flags.string({ summary: 'Ask for a custom refresh-token lifetime (com.famedly.refresh_token_lifetime_ms), e.g. 7d.' }),
  };

  async run(): Promise<RefreshResult> {
    const { flags } = await this.parse(Refresh);
    const { profile, deps } = this.setup(flags);
    const lifetimeMs = flags.lifetime === undefined ? undefined : parseDuration(flags.lifetime, '--lifetime');
    const result = await refreshService(profile, lifetimeMs, deps);
    this.out.info(refreshLine(result, Date.now(), this.out.color));
    return result;
  }
}
