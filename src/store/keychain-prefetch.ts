import type { KeychainBackend } from './keychain.js';

// A keychain read started before the rest of mxs has loaded (src/cli/early.ts), handed over to the
// KeychainSecretStore that later asks for the same item. The early code and the fast path are two
// bundles with a module state each, so the hand-over goes through one global slot.

export interface KeychainPrefetch {
  service: string;
  account: string;
  backend: KeychainBackend;
  /** The item's text, as backend.get answered (or failed). */
  read: Promise<string | null>;
}

const SLOT = Symbol.for('mxs.keychain.prefetch');
type Slot = { [SLOT]?: KeychainPrefetch | undefined };

export function publishPrefetch(prefetch: KeychainPrefetch): void {
  prefetch.read.catch(() => {}); // its failure is reported by whoever takes it, or by nobody
  (globalThis as Slot)[SLOT] = prefetch;
}

/** The backend a prefetch opened, to reuse rather than load a second one. */
export function prefetchedBackend(): KeychainBackend | undefined {
  return (globalThis as Slot)[SLOT]?.backend;
}

/** The prefetched read of this item, once: a later read of it asks the keychain again. */
export function takePrefetch(service: string, account: string): Promise<string | null> | undefined {
  const p = (globalThis as Slot)[SLOT];
  if (!p || p.service !== service || p.account !== account) return undefined;
  (globalThis as Slot)[SLOT] = { ...p, service: '', account: '' }; // the backend stays for reuse
  return p.read;
}
