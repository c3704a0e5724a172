import { storageError } from '../errors.js';
import type { SessionSecret } from '../model.js';
import { prefetchedBackend, takePrefetch } from './keychain-prefetch.js';
import { parseSecret, serializeSecret, type SecretStore } from './secrets.js';

export const KEYCHAIN_SERVICE = 'mxs';

/** The few keychain operations mxs needs; keytar today, replaceable later. */
export interface KeychainBackend {
  get(service: string, account: string): Promise<string | null>;
  set(service: string, account: string, value: string): Promise<void>;
  delete(service: string, account: string): Promise<boolean>;
  /** Gives up on calls in flight (after a timeout), so they cannot hold the process. */
  abort?(): void;
}

/**
 * keytar (a native, optional dependency); only commands that touch secrets pay for it. It runs in a
 * helper process, so that a hung keyring can be killed, unless the command asks for 'in-process' and
 * this Node can always end the process on time with a call still hung (src/store/keytar-direct.ts).
 */
export async function loadKeytar(where?: 'in-process'): Promise<KeychainBackend> {
  const early = prefetchedBackend();
  if (early) return early;
  try {
    if (where === 'in-process') {
      const direct = await import('./keytar-direct.js');
      if (direct.canExitWithCallsHung()) return direct.directKeytarBackend();
    }
    const { childKeytarBackend } = await import('./keytar-child.js');
    return childKeytarBackend();
  } catch (err) {
    throw keychainUnavailable(`the keytar native module is not installed (${firstLine(err)})`, err);
  }
}

/**
 * The keychain account of a profile: the profile name, or `NAME@CONFIGDIR` when MXS_CONFIG_DIR
 * names a config dir of its own, so that two dirs (tests, demos) never share an item.
 */
export function keychainAccount(profile: string, root: string, isDefaultDir: boolean): string {
  return isDefaultDir ? profile : `${profile}@${root}`;
}

export function keychainUnavailable(reason: string, cause?: unknown) {
  return storageError(
    `The OS keychain is unusable: ${reason}.`,
    'Unlock or start your keychain (on Linux: a Secret Service such as gnome-keyring), or use --storage file.',
    cause,
  ).with({ detail: reason });
}

function firstLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split('\n')[0]!.trim();
}

/**
 * Secrets as one keychain item per profile. Every call is bounded: a locked or absent keyring
 * can block libsecret for tens of seconds (D-Bus activation, unlock prompts), and a CLI must not hang.
 */
export class KeychainSecretStore implements SecretStore {
  readonly kind = 'keychain' as const;
  private backend: KeychainBackend | undefined;

  constructor(
    private readonly loadBackend: () => KeychainBackend | Promise<KeychainBackend>,
    private readonly timeoutMs: number,
    /** The keychain account for a profile: distinct per config dir, so two dirs never share an item. */
    private readonly accountFor: (profile: string) => string = (p) => p,
  ) {}

  describe(): string {
    return 'the OS keychain';
  }

  async get(profile: string): Promise<SessionSecret | null> {
    const account = this.accountFor(profile);
    // Started before mxs had loaded (src/cli/early.ts), when the command is sure to read this item.
    const early = takePrefetch(KEYCHAIN_SERVICE, account);
    const text = await this.call('read', (b) => early ?? b.get(KEYCHAIN_SERVICE, account));
    return text === null ? null : parseSecret(text, 'the OS keychain', profile);
  }

  async set(profile: string, secret: SessionSecret): Promise<void> {
    await this.call('write', (b) => b.set(KEYCHAIN_SERVICE, this.accountFor(profile), serializeSecret(secret)));
  }

  /**
   * Proves the keychain can store an item, by writing and removing a probe. A read is not proof:
   * libsecret answers reads from a locked collection with "not found", and only a write fails.
   */
  async assertWritable(profile: string): Promise<void> {
    const probe = `${this.accountFor(profile)}.probe`;
    await this.call('write', (b) => b.set(KEYCHAIN_SERVICE, probe, 'probe'));
    await this.call('delete', (b) => b.delete(KEYCHAIN_SERVICE, probe));
  }

  async delete(profile: string): Promise<void> {
    await this.call('delete', (b) => b.delete(KEYCHAIN_SERVICE, this.accountFor(profile)));
  }

  private async call<T>(what: string, op: (b: KeychainBackend) => Promise<T>): Promise<T> {
    this.backend ??= await this.loadBackend();
    const backend = this.backend;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        reject(keychainUnavailable(`a keychain ${what} did not answer within ${this.timeoutMs} ms (locked or not running?)`));
        backend.abort?.();
      }, this.timeoutMs);
      timer.unref();
    });
    try {
      return await Promise.race([op(backend), timeout]);
    } catch (err) {
      if ((err as { code?: string }).code === 'storage') throw err;
      throw keychainUnavailable(`${what} failed (${firstLine(err)})`, err);
    } finally {
      clearTimeout(timer);
    }
  }
}
