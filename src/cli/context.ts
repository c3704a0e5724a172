import { parseDuration } from '../duration.js';
import { usageError } from '../errors.js';
import type { StoragePreference } from '../model.js';
import { buildDeps } from '../runtime.js';
import type { Deps } from '../services/deps.js';
import { validateProfile } from '../store/paths.js';
import type { Output } from '../ui/output.js';

export interface GlobalFlags {
  profile: string;
  verbose: boolean;
  storage: string;
  timeout: string;
}

export interface CommandContext {
  profile: string;
  storage: StoragePreference;
  deps: Deps;
  out: Output;
}

/** Validates the global flags and wires the services' dependencies (shared by oclif and the fast path). */
export function commandContext(flags: GlobalFlags, out: Output, env: NodeJS.ProcessEnv = process.env): CommandContext {
  const profile = validateProfile(flags.profile);
  const timeoutMs = parseDuration(flags.timeout, '--timeout');
  if (timeoutMs <= 0) throw usageError('--timeout must be longer than zero.', 'For example: --timeout 10s');
  const deps = buildDeps({ env, timeoutMs, verbose: flags.verbose, out });
  return { profile, storage: flags.storage as StoragePreference, deps, out };
}
