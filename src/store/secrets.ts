import { readdir, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { storageError } from '../errors.js';
import type { SessionSecret, StorageKind } from '../model.js';
import { assertDirWritable, assertReplaceable, ensurePrivateDir, fsFailure, writeFileAtomic } from './atomic.js';
import { readSmallFile } from './small-file.js';
import type { StatePaths } from './paths.js';

/** Where the tokens of a session live, by profile. One item per profile holds both tokens and their times. */
export interface SecretStore {
  readonly kind: StorageKind;
  /** A human-readable place, for messages ("the OS keychain", a file path). */
  describe(profile: string): string;
  get(profile: string): Promise<SessionSecret | null>;
  set(profile: string, secret: SessionSecret): Promise<void>;
  delete(profile: string): Promise<void>;
  /** Throws when a new secret could not be stored (used before logging in). */
  assertWritable?(profile: string): Promise<void>;
}

export function parseSecret(text: string, where: string, profile = 'default'): SessionSecret {
  const corrupt = (why: string) =>
    storageError(`The stored tokens in ${where} are unreadable (${why}).`, ['Log in again to replace them: ', { next: 'login', profile }]);
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    throw corrupt('not valid JSON');
  }
  const s = data as Partial<SessionSecret> | null;
  if (typeof s !== 'object' || s === null) throw corrupt('not an object');
  if (typeof s.accessToken !== 'string' || s.accessToken === '') throw corrupt('no access token');
  if (s.refreshToken !== null && typeof s.refreshToken !== 'string') throw corrupt('bad refresh token');
  if (typeof s.issuedAt !== 'string' || Number.isNaN(Date.parse(s.issuedAt))) throw corrupt('bad issuedAt');
  if (s.expiresAt !== null && (typeof s.expiresAt !== 'string' || Number.isNaN(Date.parse(s.expiresAt)))) throw corrupt('bad expiresAt');
  return { accessToken: s.accessToken, refreshToken: s.refreshToken, issuedAt: s.issuedAt, expiresAt: s.expiresAt };
}

export function serializeSecret(secret: SessionSecret): string {
  const { accessToken, refreshToken, issuedAt, expiresAt } = secret;
  return JSON.stringify({ accessToken, refreshToken, issuedAt, expiresAt });
}

/** Secrets in a 0600 JSON file per profile, in a 0700 directory, replaced atomically. */
export class FileSecretStore implements SecretStore {
  readonly kind = 'file' as const;
  constructor(private readonly paths: StatePaths) {}

  describe(profile: string): string {
    return this.paths.secret(profile);
  }

  async get(profile: string): Promise<SessionSecret | null> {
    const file = this.paths.secret(profile);
    // Never a blocking read (a FIFO planted here is refused, exit 6); the mode is checked on the
    // descriptor that was read, so the file cannot be swapped between the check and the read.
    const read = await readSmallFile(file, { what: 'the secrets file' });
    if (read === null) return null;
    const mode = read.stats.mode;
    if ((mode & 0o077) !== 0) {
      throw storageError(
        `Refusing to use ${file}: other users can read it (mode ${(mode & 0o777).toString(8).padStart(4, '0')}).`,
        `Run: chmod 600 ${file}  (and consider the tokens in it leaked: log in again)`,
      );
    }
    return parseSecret(read.text, file, profile);
  }

  async set(profile: string, secret: SessionSecret): Promise<void> {
    const file = this.paths.secret(profile);
    try {
      await ensurePrivateDir(dirname(file));
      await writeFileAtomic(file, serializeSecret(secret) + '\n');
    } catch (err) {
      throw fsFailure(err, file, `Cannot write the secrets file ${file}`);
    }
  }

  /** Proves a secret could be stored (before logging in): the secrets directory exists or can be made, and takes a file. */
  async assertWritable(profile: string): Promise<void> {
    const file = this.paths.secret(profile);
    await assertDirWritable(dirname(file), 'the secrets directory');
    await assertReplaceable(file, 'the secrets file');
  }

  async delete(profile: string): Promise<void> {
    const file = this.paths.secret(profile);
    try {
      await rm(file, { force: true });
    } catch (err) {
      // A parent that is not a directory (or a symlink loop): there is no such file to delete.
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOTDIR' || code === 'ELOOP') return;
      throw fsFailure(err, file, `Cannot delete the secrets file ${file}`);
    }
    // Also any temp file a crashed write left beside it: it may hold tokens.
    const dir = dirname(file);
    const prefix = `${basename(file)}.`;
    const debris = await readdir(dir).catch(() => [] as string[]);
    await Promise.all(debris.filter((n) => n.startsWith(prefix) && n.endsWith('.tmp')).map((n) => rm(join(dir, n), { force: true }).catch(() => {})));
  }
}
