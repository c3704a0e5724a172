import envPaths from 'env-paths';
import { join } from 'node:path';
import { usageError } from '../errors.js';
import { printable } from '../printable.js';

const PROFILE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** All state lives below one directory: MXS_CONFIG_DIR, else the platform's config dir. */
export function defaultConfigDir(): string {
  return envPaths('mxs', { suffix: '' }).config;
}

/** The state directory of this run: MXS_CONFIG_DIR, else the platform's config dir. */
export function configDir(env: NodeJS.ProcessEnv): string {
  return env.MXS_CONFIG_DIR || defaultConfigDir();
}

/** NAME is 1–64 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit (contract); a bad one is echoed escaped. */
export function validateProfile(profile: string): string {
  if (!PROFILE_NAME.test(profile)) {
    throw usageError(
      profile === '' ? 'Invalid profile name: it is empty.' : `Invalid profile name "${printable(profile, { maxChars: 64, quoted: true })}".`,
      'Use 1-64 letters, digits, ".", "_" or "-", starting with a letter or digit.',
    );
  }
  return profile;
}

export interface StatePaths {
  session(profile: string): string;
  sessionsDir: string;
  secret(profile: string): string;
  lock(profile: string): string;
}

export function statePaths(root: string): StatePaths {
  return {
    sessionsDir: join(root, 'sessions'),
    session: (p) => join(root, 'sessions', `${p}.json`),
    secret: (p) => join(root, 'secrets', `${p}.json`),
    lock: (p) => join(root, 'locks', `${p}.lock`),
  };
}
