import { MxsError, notLoggedIn, usageError } from '../errors.js';
import type { Deps } from './deps.js';
import { loadSession, withAccessToken, withProfileLock } from './session.js';
import { strategyFor } from './strategy.js';

export interface LogoutResult {
  profile: string;
  serverSide: boolean;
}

/**
 * `logout`: end the session on the server, then forget it here. If the server cannot be
 * reached, nothing is forgotten (the user can retry, or choose --local).
 */
export async function logoutService(profile: string, opts: { local: boolean; all: boolean }, deps: Deps): Promise<LogoutResult> {
  const record = await deps.sessions.read(profile);
  if (!record) throw notLoggedIn(profile);
  if (opts.all && record.auth.type === 'oauth') {
    const page = record.auth.accountManagementUri;
    throw usageError(
      'An OAuth 2.0 session cannot end the account\'s other sessions: --all is for password sessions.',
      page ? `End other sessions on the account page: ${page}?action=org.matrix.devices_list` : 'End other sessions on your server\'s account page.',
    );
  }
  let serverSide = false;
  // Forgetting the session must be possible once the server has ended it: check before telling the server.
  await deps.sessions.assertStateWritable(profile, { secrets: record.storage === 'file' });
  if (!opts.local) {
    try {
      const strategy = strategyFor(record.auth);
      if (strategy.endNeedsAccessToken) {
        // Synapse accepts an expired token on /logout, so no refresh first; MAS-style servers
        // answer 401 and get the contract's refresh-once-and-retry.
        await withAccessToken(profile, deps, () => false, (s) => strategy.end(s.record, s.secret, { all: opts.all }, deps.http));
      } else {
        const s = await loadSession(profile, deps);
        await strategy.end(s.record, s.secret, { all: opts.all }, deps.http);
      }
      serverSide = true;
    } catch (err) {
      const e = err as MxsError;
      if (e.kind !== 'auth') {
        throw e.with({ hint: ['Nothing was forgotten. Retry, or forget the session only here: ', { next: 'logout', flags: '--local', profile }] });
      }
      // The server no longer knows this session: it is over there already.
      deps.notice(`The server no longer recognised the session (${e.code}); forgetting it here.`);
    }
  }
  await withProfileLock(profile, deps, async () => {
    await deps.secretStores[record.storage].delete(record.profile).catch((err: unknown) => {
      if (!opts.local) throw err;
    });
    await deps.sessions.remove(profile);
  });
  return { profile, serverSide };
}
