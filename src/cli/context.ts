import { parseDuration } from '../duration.js';
import { setImplicitProfile, usageError } from '../errors.js';
import type { StoragePreference } from '../model.js';
import { buildDeps } from '../runtime.js';
import type { Deps } from '../services/deps.js';
import { ConfigStore, configFile } from '../store/config.js';
import { configDir, validateProfile } from '../store/paths.js';
import type { Output } from '../ui/output.js';

export interface GlobalFlags {
  /** As given with --profile or MXS_PROFILE; undefined when neither names one. */
  profile?: string | undefined;
  verbose: boolean;
  storage: string;
  timeout: string;
}

export interface CommandContext {
  profile: string;
  storage: StoragePreference;
  deps: Deps;
  out: Output;
  config: ConfigStore;
  /** The profile used without --profile or MXS_PROFILE: the one chosen with `mxs switch`, else `default` (exit 6 when the config file is unreadable). */
  defaultProfile(): string;
}

export interface ContextOptions {
  /** 'in-process': keytar may run in this process (see src/store/keytar-direct.ts); else in a helper process. */
  keychain?: 'in-process' | undefined;
}

/** Validates the global flags and wires the services' dependencies (shared by oclif and the fast path). */
export function commandContext(flags: GlobalFlags, out: Output, env: NodeJS.ProcessEnv = process.env, opts: ContextOptions = {}): CommandContext {
  const config = new ConfigStore(configFile(configDir(env)));
  const defaultProfile = () => config.defaultProfile() ?? 'default';
  // Hints leave out --profile only for this profile; with the config unreadable they always name it.
  setImplicitProfile(() => {
    try {
      return defaultProfile();
    } catch {
      return null;
    }
  });
  // --profile and MXS_PROFILE win over `mxs switch`, so a switch never changes a running job's profile;
  // the config file is read only when neither is given.
  const profile = validateProfile(flags.profile ?? defaultProfile());
  const timeoutMs = parseDuration(flags.timeout, '--timeout');
  if (timeoutMs <= 0) throw usageError('--timeout must be longer than zero.', 'For example: --timeout 10s');
  const deps = buildDeps({ env, timeoutMs, verbose: flags.verbose, out, keychain: opts.keychain });
  return { profile, storage: flags.storage as StoragePreference, deps, out, config, defaultProfile };
}
