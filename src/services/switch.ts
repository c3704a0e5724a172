import { loginHint, MxsError } from '../errors.js';
import type { ConfigStore } from '../store/config.js';
import type { SessionStore } from '../store/sessions.js';

export interface SwitchResult {
  defaultProfile: string;
}

export interface SwitchDeps {
  sessions: Pick<SessionStore, 'profiles'>;
  config: Pick<ConfigStore, 'setDefaultProfile'>;
}

/**
 * `mxs switch PROFILE`: later commands without --profile or MXS_PROFILE use PROFILE. Only a profile
 * with a stored session can become the default (a typo would otherwise send every later command to
 * an empty profile); the name has been validated by the caller.
 */
export async function switchService(profile: string, deps: SwitchDeps): Promise<SwitchResult> {
  const stored = await deps.sessions.profiles();
  if (!stored.includes(profile)) {
    throw new MxsError({
      code: 'usage',
      kind: 'usage',
      message: `No session is stored for profile "${profile}", so it cannot be the default.`,
      hint:
        stored.length === 0
          ? ['No profile has a session yet. Log in first: ', loginHint(profile)]
          : [`Stored profiles: ${stored.join(', ')}. Or log in first: `, loginHint(profile)],
    });
  }
  await deps.config.setDefaultProfile(profile);
  return { defaultProfile: profile };
}
