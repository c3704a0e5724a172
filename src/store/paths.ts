import envPaths from 'env-paths';
import { join } from 'node:path';
import { usageError } from '../errors.js';

const PROFILE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** All state lives below one directory: MXS_CONFIG_DIR, else the platform's config dir. */
export function defaultConfigDir(): string {
  return envPaths('mxs', { suffix: '' }).config;
}

export function validateProfile(profile: string): string {
  if (!PROFILE_NAME.test(profile)) {
    throw usageError(
      `Invalid profile name "${profile}".`,
      'Use 1-64 letters, digits, ".", "_" or "-", starting with a letter or digit.',
    );
  }
  return profile;
}

export interface StatePaths {
  root: string;
  session(profile: string): string;
  sessionsDir: string;
  secret(profile: string): string;
  lock(profile: string): string;
}

export function statePaths(root: string): StatePaths {
  return {
    root,
    sessionsDir: join(root, 'sessions'),
    session: (p) => join(root, 'sessions', `${p}.json`),
    secret: (p) => join(root, 'secrets', `${p}.json`),
    lock: (p) => join(root, 'locks', `${p}.lock`),
  };
}
