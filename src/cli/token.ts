import { parseDuration } from '../duration.js';
import { tokenService, type TokenResult } from '../services/tokens.js';
import type { CommandContext } from './context.js';

/** `mxs token`, free of oclif so the start-up fast path can run it. */
export async function runToken(ctx: CommandContext, flags: { 'min-valid': string }, json: boolean): Promise<TokenResult> {
  const minValidMs = parseDuration(flags['min-valid'], '--min-valid');
  const result = await tokenService(ctx.profile, minValidMs, ctx.deps);
  // The one output allowed to carry a token (contract: `token` prints it).
  ctx.out.secretData(json ? JSON.stringify(result, null, 2) : result.accessToken);
  return result;
}
