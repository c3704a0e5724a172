import envPaths from 'env-paths';
import { join } from 'node:path';
import { usageError } from '../errors.js';

const PROFILE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** All state lives below one directory: MXS_CONFIG_DIR, else the platform's config dir. */
export function defaultConfigDir(): string {
  return envPaths('mxs', { suffix: '' }).config;
}

/** The state directory of this run: MXS_CONFIG_DIR, else the platform's config dir. */
export function configDir(env: NodeJS.ProcessEnv): string {
  return env.MXS_CONFIG_DIR || defaultConfigDir();
}

/**
 * User or file text made safe to show inside quotes on one terminal line: control characters
 * (C0, DEL, C1), line and paragraph separators, bidi overrides and lone surrogates become escapes
 * (`\n`, `\x1b`, `\u202e`), as do `\` and `"` (unless `quoted` is false, e.g. for a path shown
 * bare); text longer than `maxChars` is cut with `…`.
 */
export function printable(text: string, maxChars = 80, quoted = true): string {
  const chars = Array.from(text);
  const cut = chars.length > maxChars;
  const table = quoted ? QUOTED_ESCAPES : ESCAPES;
  const shown = (cut ? chars.slice(0, maxChars) : chars).map((c) => table[c] ?? (UNSAFE.test(c) ? escapeCode(c) : c)).join('');
  return cut ? `${shown}…` : shown;
}

const ESCAPES: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };
const QUOTED_ESCAPES: Record<string, string> = { ...ESCAPES, '\\': '\\\\', '"': '\\"' };
// C0, DEL, C1, zero-width and bidi formatting characters, line/paragraph separators, lone surrogates.
const UNSAFE = /^(?:[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]|[\ud800-\udfff])$/;

function escapeCode(c: string): string {
  const code = c.codePointAt(0)!;
  return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
}

/** NAME is 1–64 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit (contract); a bad one is echoed escaped. */
export function validateProfile(profile: string): string {
  if (!PROFILE_NAME.test(profile)) {
    throw usageError(
      profile === '' ? 'Invalid profile name: it is empty.' : `Invalid profile name "${printable(profile, 64)}".`,
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
