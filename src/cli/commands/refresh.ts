import { parseDuration } from '../../duration.js';
import { refreshService, type RefreshResult } from '../../services/tokens.js';
import { refreshLine } from '../../ui/render.js';
import type { CommandDefinition } from '../command.js';

export const refreshCommand: CommandDefinition<{ lifetime?: string }, object, RefreshResult> = {
  id: 'refresh',
  summary: 'Exchange the stored refresh token for a new access token now.',
  description:
    'Concurrent runs refresh once: the others wait for it and report its result. A network or server failure leaves the stored session as it was (exit 3); a refused refresh token means logging in again (exit 4).',
  examples: ['<%= config.bin %> refresh', '<%= config.bin %> refresh --profile work --lifetime 7d --json'],
  flags: {
    lifetime: { type: 'option', summary: 'Ask for a custom refresh-token lifetime (com.famedly.refresh_token_lifetime_ms), e.g. 7d.' },
  },
  async run({ profile, deps, out }, { flags }) {
    const lifetimeMs = flags.lifetime === undefined ? undefined : parseDuration(flags.lifetime, '--lifetime');
    const result = await refreshService(profile, lifetimeMs, deps);
    out.info(refreshLine(result, Date.now(), out.color));
    return { result, exitCode: 0 };
  },
};
