import { MxsError, asMxsError } from '../errors.js';
import type { StoragePreference } from '../model.js';
import type { SecretStore } from '../store/secrets.js';
import type { Deps } from './deps.js';

/**
 * Picks where a new session's secrets go. `keychain` insists (exit 6 when unusable); `auto`
 * falls back to the 0600 file store and says so, never silently.
 */
export async function chooseSecretStore(pref: StoragePreference, profile: string, deps: Deps): Promise<{ store: SecretStore; fallbackNotice?: string }> {
  if (pref === 'file') return { store: deps.secretStores.file };
  const keychain = deps.secretStores.keychain;
  try {
    if (keychain.assertWritable) await keychain.assertWritable(profile);
    else await keychain.get(profile);
    return { store: keychain };
  } catch (err) {
    if (pref === 'keychain') throw err;
    const file = deps.secretStores.file;
    const reason = err instanceof MxsError && err.detail !== undefined ? `${err.detail}.` : asMxsError(err).message;
    // Said only once something was stored there (login prints it after storing).
    return {
      store: file,
      fallbackNotice: `OS keychain unavailable: ${reason} Secrets are stored in ${file.describe(profile)} (mode 0600) instead; choose that on purpose with --storage file or MXS_STORAGE=file.`,
    };
  }
}
