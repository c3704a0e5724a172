import { MxsError } from '../errors.js';
import type { StoragePreference } from '../model.js';
import type { SecretStore } from '../store/secrets.js';
import type { Deps } from './deps.js';

/**
 * Picks where a new session's secrets go. `keychain` insists (exit 6 when unusable); `auto`
 * falls back to the 0600 file store and says so, never silently.
 */
export async function chooseSecretStore(pref: StoragePreference, profile: string, deps: Deps): Promise<SecretStore> {
  if (pref === 'file') return deps.secretStores.file;
  const keychain = deps.secretStores.keychain;
  try {
    if (keychain.assertWritable) await keychain.assertWritable(profile);
    else await keychain.get(profile);
    return keychain;
  } catch (err) {
    if (pref === 'keychain') throw err;
    const file = deps.secretStores.file;
    const reason = (err as MxsError).message.replace(/^The OS keychain is unusable: /, '').replace(/\.$/, '');
    deps.notice(`OS keychain unavailable (${reason}); storing secrets in ${file.describe(profile)} (mode 0600) instead.`);
    return file;
  }
}
