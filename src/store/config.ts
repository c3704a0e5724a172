import { dirname, join } from 'node:path';
import { storageError } from '../errors.js';
import { ensurePrivateDir, fsFailure, show, writeFileAtomic } from './atomic.js';
import { readSmallFileSync } from './small-file.js';
import { printable } from '../printable.js';
import { validateProfile } from './paths.js';

/**
 * The config file (`config.json` in the config dir): settings that are not a session. Today only
 * the default profile chosen with `mxs switch`. Format 1: `{"format": 1, "defaultProfile": NAME}`;
 * keys this version does not know are kept when it writes.
 */
export const CONFIG_FORMAT = 1;
const MAX_CONFIG_BYTES = 64 * 1024;

export function configFile(configDir: string): string {
  return join(configDir, 'config.json');
}

export class ConfigStore {
  private cached: { defaultProfile: string | null } | undefined;

  constructor(readonly file: string) {}

  /**
   * The profile chosen with `mxs switch`, or null when none was. Synchronous and read once per run:
   * the profile is resolved while the command is wired (also on the start-up fast path, where one
   * small read is all it may cost). A config file that cannot be read or is corrupt is an exit-6
   * error naming it: guessing `default` instead could act on another account.
   */
  defaultProfile(): string | null {
    this.cached ??= { defaultProfile: parseConfig(readConfig(this.file), this.file).defaultProfile ?? null };
    return this.cached.defaultProfile;
  }

  /** Makes `profile` the default: read, change, replace atomically (other keys are kept). */
  async setDefaultProfile(profile: string): Promise<void> {
    const current = parseConfig(readConfig(this.file), this.file);
    const next = { ...current, format: CONFIG_FORMAT, defaultProfile: profile };
    try {
      await ensurePrivateDir(dirname(this.file));
      await writeFileAtomic(this.file, JSON.stringify(next, null, 2) + '\n');
    } catch (err) {
      throw fsFailure(err, this.file, `Cannot write the config file ${show(this.file)}`);
    }
    this.cached = { defaultProfile: profile };
  }
}

function corrupt(file: string, why: string) {
  return storageError(
    `The config file ${show(file)} is corrupt (${why}); it was left as it is.`,
    `Inspect or delete it (it only holds the default profile), then choose one again: mxs switch PROFILE`,
  );
}

function parseConfig(text: string | null, file: string): Record<string, unknown> & { defaultProfile?: string } {
  if (text === null) return {};
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    throw corrupt(file, 'not valid JSON');
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data)) throw corrupt(file, 'not an object');
  const c = data as Record<string, unknown>;
  if (c.format !== CONFIG_FORMAT) throw corrupt(file, `unknown format ${printable(JSON.stringify(c.format) ?? 'undefined', { maxChars: 40, quoted: true })}`);
  if (c.defaultProfile !== undefined) {
    if (typeof c.defaultProfile !== 'string') throw corrupt(file, 'bad defaultProfile');
    try {
      validateProfile(c.defaultProfile);
    } catch {
      throw corrupt(file, `invalid defaultProfile "${printable(c.defaultProfile, { maxChars: 64, quoted: true })}"`);
    }
  }
  return c as Record<string, unknown> & { defaultProfile?: string };
}

/** The config file's text, or null when there is none; a FIFO or device planted there is refused (exit 6), never waited on. */
function readConfig(file: string): string | null {
  const refusedHint = `Move it away (mv ${show(file)} ${show(file)}.bad), then choose the default again: mxs switch PROFILE`;
  return readSmallFileSync(file, { what: 'the config file', refusedHint, maxBytes: MAX_CONFIG_BYTES })?.text ?? null;
}
