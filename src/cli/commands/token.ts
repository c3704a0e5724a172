import { parseDuration } from '../../duration.js';
import { tokenService, type TokenResult } from '../../services/tokens.js';
import type { CommandDefinition } from '../command.js';

export interface TokenFlags {
  'min-valid': string;
}

/** `mxs token`: the access token alone, refreshed first when it is about to expire. */
export const tokenCommand: CommandDefinition<TokenFlags, object, TokenResult> = {
  id: 'token',
  summary: 'Print the access token alone, refreshing it first when it is about to expire.',
  description:
    'For scripts: curl -H "Authorization: Bearer $(mxs token)". Refreshes first when less than --min-valid is left (at most half the token lifetime, so short-lived tokens are not refreshed on every call). Concurrent runs refresh once.',
  examples: [
    'curl -H "Authorization: Bearer $(<%= config.bin %> token)" https://matrix.example.org/_matrix/client/v3/account/whoami',
    '<%= config.bin %> token --min-valid 5m --profile work',
  ],
  flags: {
    'min-valid': { type: 'option', default: '60s', summary: 'Refresh first when the token has less than this left.' },
  },
  // The keychain read is most of a keychain `token`: a helper process would double its time.
  keychain: 'in-process',
  async run(ctx, { flags }) {
    const minValidMs = parseDuration(flags['min-valid'], '--min-valid');
    return { result: await tokenService(ctx.profile, minValidMs, ctx.deps), exitCode: 0 };
  },
  text: (ctx, result) => ctx.out.secretData(result.accessToken),
  // The one output allowed to carry a token (contract: `token` prints it), so it bypasses redaction.
  json: 'unredacted',
};
