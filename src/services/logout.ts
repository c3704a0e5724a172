import { Exit, MxsError, notLoggedIn } from '../errors.js';
import { logout } from '../matrix/client.js';
import type { Deps } from './deps.js';
import { withAccessToken, withProfileLock } from './session.js';

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
  let serverSide = false;
  if (!opts.local) {
    try {
      // Synapse accepts an expired token on /logout, so no refresh first; MAS-style servers
      // answer 401 and get the contract's refresh-once-and-retry.
      await withAccessToken(profile, deps, () => false, (s) => logout(s.record.homeserver, s.secret.accessToken, opts.all, deps.http));
      serverSide = true;
    } catch (err) {
      const e = err as MxsError;
      if (e.exitCode !== Exit.auth) {
        throw e.with({ hint: `Nothing was forgotten. Retry, or forget the session only here: mxs logout --local${profile === 'default' ? '' : ` --profile ${profile}`}` });
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
