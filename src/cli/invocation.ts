import { parseDuration } from '../duration.js';
import { usageError } from '../errors.js';
import type { StoragePreference } from '../model.js';
import { ConfigStore, configFile } from '../store/config.js';
import { configDir, validateProfile } from '../store/paths.js';
import type { GlobalFlags } from './command.js';

/**
 * What one run of mxs was asked for, resolved once from the global flags and the environment: the
 * context wires the services from it, and the error reporter renders hints with it.
 */
export interface Invocation {
  profile: string;
  /** True when no --profile, MXS_PROFILE or PROFILE argument chose it (the `mxs switch` default did). */
  implicitProfile: boolean;
  /**
   * The profile used without --profile or MXS_PROFILE: the one chosen with `mxs switch`, else
   * `default`; null when the config file cannot be read (then every hint names its profile).
   */
  defaultProfile: string | null;
  storage: StoragePreference;
  timeoutMs: number;
  verbose: boolean;
  json: boolean;
  /** The config directory (MXS_CONFIG_DIR, else the platform's). */
  configDir: string;
  config: ConfigStore;
}

/** Throws a usage error for a bad profile name or timeout, exit 6 when the default must be read and cannot be. */
export function resolveInvocation(flags: GlobalFlags, env: NodeJS.ProcessEnv): Invocation {
  const dir = configDir(env);
  const config = new ConfigStore(configFile(dir));
  const { profile, implicit, defaultProfile } = resolveProfile(flags.profile, config);
  const timeoutMs = parseDuration(flags.timeout, '--timeout');
  if (timeoutMs <= 0) throw usageError('--timeout must be longer than zero.', 'For example: --timeout 10s');
  return {
    profile,
    implicitProfile: implicit,
    defaultProfile,
    storage: flags.storage as StoragePreference,
    timeoutMs,
    verbose: flags.verbose,
    json: flags.json === true,
    configDir: dir,
    config,
  };
}

/**
 * --profile and MXS_PROFILE (`given`) win over `mxs switch`, so a switch never changes a running
 * job's profile. Also used by the early keychain read (src/cli/early.ts), which must guess the same.
 */
export function resolveProfile(given: string | undefined, config: ConfigStore): { profile: string; implicit: boolean; defaultProfile: string | null } {
  let defaultProfile: string | null;
  try {
    defaultProfile = config.defaultProfile() ?? 'default';
  } catch (err) {
    // Needed only when nothing else names the profile; hints do without it.
    if (given === undefined) throw err;
    defaultProfile = null;
  }
  return { profile: validateProfile(given ?? defaultProfile!), implicit: given === undefined, defaultProfile };
}
