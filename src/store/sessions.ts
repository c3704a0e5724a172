import { readdir, rm } from 'node:fs/promises';
import { storageError } from '../errors.js';
import type { SessionAuth, SessionRecord } from '../model.js';
import { dirname } from 'node:path';
import { assertDirWritable, assertReplaceable, ensurePrivateDir, fsFailure, writeFileAtomic } from './atomic.js';
import { readSmallFile } from './small-file.js';
import { probeLockDir } from './lock.js';
import { printable } from '../printable.js';
import type { StatePaths } from './paths.js';

/**
 * The sessions-file format. 1 (mxs 0.1): Matrix sessions only, `refreshPath` at the top level.
 * 2: `method` and `auth` (`matrix` with its refresh path, or `oauth` with issuer, client and
 * endpoints). Every older format is read without loss; the next write upgrades the file.
 * Optional fields added later within a format (`auth.scopes`) are kept as they are by readers that
 * predate them (they validate only the fields they know and write the record back whole).
 */
export const FORMAT = 3;

/**
 * 3: a client-credentials session (method `client_credentials`, `auth.grant`, no user or device). Only
 * such records are written as 3, so that an mxs that predates them says a newer mxs wrote the file
 * instead of taking the client secret for a refresh token; every other record is still written as 2.
 */
const formatOf = (record: SessionRecord) => (record.method === 'client_credentials' ? 3 : 2);

/** The sessions files: one small JSON file per profile with the session's non-secret metadata. */
export class SessionStore {
  constructor(private readonly paths: StatePaths) {}

  async read(profile: string): Promise<SessionRecord | null> {
    const file = this.paths.session(profile);
    // Never a blocking read: a FIFO or device planted here is refused, not waited on (exit 6).
    const read = await readSmallFile(file, { what: 'the sessions file' });
    return read === null ? null : parseRecord(read.text, file, profile);
  }

  /**
   * The record a new login would replace: null when there is none, or when it is unreadable (the
   * login repairs that). A file from a newer mxs is never replaced: it throws, as `read` does.
   */
  async readReplaceable(profile: string): Promise<SessionRecord | null> {
    try {
      return await this.read(profile);
    } catch (err) {
      if (writtenByNewer.has(err as Error)) throw err;
      return null;
    }
  }

  /**
   * A cheap probe that state for `profile` can be written, to run before anything irreversible
   * (login calls it before sending the password): creates the sessions and locks directories (and,
   * with `secrets`, the secrets directory) 0700 if needed, writes and removes a probe file in each,
   * takes and releases a probe lock, and checks that nothing but a regular file sits where the
   * profile's files go. Throws an exit-6 error naming the path and what to fix (read-only or full
   * file system, a file where a directory belongs, a dangling symlink…). Leaves existing state alone.
   */
  async assertStateWritable(profile: string, opts: { secrets?: boolean } = {}): Promise<void> {
    await assertDirWritable(this.paths.sessionsDir, 'the sessions directory');
    await assertReplaceable(this.paths.session(profile), 'the sessions file');
    await probeLockDir(dirname(this.paths.lock(profile)));
    if (opts.secrets) {
      await assertDirWritable(dirname(this.paths.secret(profile)), 'the secrets directory');
      await assertReplaceable(this.paths.secret(profile), 'the secrets file');
    }
  }

  async write(record: SessionRecord): Promise<void> {
    const file = this.paths.session(record.profile);
    try {
      await ensurePrivateDir(dirname(file));
      await writeFileAtomic(file, JSON.stringify({ format: formatOf(record), ...record }, null, 2) + '\n');
    } catch (err) {
      throw fsFailure(err, file, `Cannot write the sessions file ${file}`);
    }
  }

  async remove(profile: string): Promise<void> {
    const file = this.paths.session(profile);
    try {
      await rm(file, { force: true });
    } catch (err) {
      // Nothing there to remove: a path through a file or a symlink loop holds no session.
      if (['ENOTDIR', 'ELOOP'].includes((err as NodeJS.ErrnoException).code ?? '')) return;
      throw fsFailure(err, file, `Cannot remove the sessions file ${file}`);
    }
  }

  async profiles(): Promise<string[]> {
    try {
      const names = await readdir(this.paths.sessionsDir);
      return names.filter((n) => n.endsWith('.json')).map((n) => n.slice(0, -5)).sort();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw storageError(`Cannot list ${this.paths.sessionsDir}: ${(err as Error).message}.`, 'Check its permissions.', err);
    }
  }
}

/** The errors saying a newer mxs wrote the file, which no login may overwrite. */
const writtenByNewer = new WeakSet<Error>();

function newerFormat(file: string, format: number, profile: string): Error {
  const err = storageError(
    `The sessions file ${file} was written by a newer mxs (format ${format}; this one reads up to ${FORMAT}); it was left as it is.`,
    `Use the newer mxs for profile ${profile}, or log in with this one under another profile: mxs login SERVER --profile NAME`,
  );
  writtenByNewer.add(err);
  return err;
}

function parseRecord(text: string, file: string, profile: string): SessionRecord {
  const corrupt = (why: string) =>
    storageError(
      `The sessions file ${file} is corrupt (${why}); it was left as it is.`,
      ['Inspect or delete it, then log in again: ', { next: 'login', profile }],
    );
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    throw corrupt('not valid JSON');
  }
  if (typeof data !== 'object' || data === null) throw corrupt('not an object');
  const r = data as Record<string, unknown>;
  // Contract: a newer mxs's file is never "repaired" or overwritten by this one.
  if (Number.isInteger(r.format) && (r.format as number) > FORMAT) throw newerFormat(file, r.format as number, profile);
  if (r.format !== 1 && r.format !== 2 && r.format !== 3) throw corrupt(`unknown format ${JSON.stringify(r.format)}`);
  const str = (k: string, o: Record<string, unknown> = r) => typeof o[k] === 'string' && (o[k] as string).length > 0;
  const time = (k: string) => typeof r[k] === 'string' && !Number.isNaN(Date.parse(r[k] as string));
  const clientCredentials = r.format === 3 && r.method === 'client_credentials';
  for (const k of ['homeserver', 'userId', 'deviceId']) if (!str(k) && !(clientCredentials && k !== 'homeserver' && r[k] === null)) throw corrupt(`missing ${k}`);
  if (!time('issuedAt')) throw corrupt('bad issuedAt');
  if (r.expiresAt !== null && !time('expiresAt')) throw corrupt('bad expiresAt');
  if (typeof r.refreshable !== 'boolean') throw corrupt('bad refreshable');
  if (r.storage !== 'keychain' && r.storage !== 'file') throw corrupt('bad storage');
  if (r.profile !== profile) throw corrupt(`it names profile ${typeof r.profile === 'string' ? `"${printable(r.profile, { maxChars: 64, quoted: true })}"` : String(r.profile)}`);
  if (r.format === 1) {
    // Format 1 knew only Matrix password/token sessions and did not record which of the two.
    const { format: _f, refreshPath, ...rest } = r;
    const auth: SessionAuth = typeof refreshPath === 'string' ? { type: 'matrix', refreshPath } : { type: 'matrix' };
    return { ...rest, method: 'password', auth } as unknown as SessionRecord;
  }
  if (!['password', 'token', 'oauth', ...(r.format === 3 ? ['client_credentials'] : [])].includes(r.method as string)) throw corrupt('bad method');
  const auth = r.auth as Record<string, unknown> | null;
  if (typeof auth !== 'object' || auth === null) throw corrupt('missing auth');
  if (auth.type === 'oauth') {
    for (const k of ['issuer', 'clientId', 'tokenEndpoint', 'revocationEndpoint']) if (!str(k, auth)) throw corrupt(`missing auth.${k}`);
    if (clientCredentials !== (auth.grant === 'client_credentials')) throw corrupt('bad auth.grant');
    if (clientCredentials && auth.clientAuthMethod !== 'client_secret_basic' && auth.clientAuthMethod !== 'client_secret_post') throw corrupt('bad auth.clientAuthMethod');
    if (auth.scopes !== undefined && !(Array.isArray(auth.scopes) && auth.scopes.every((x) => typeof x === 'string'))) throw corrupt('bad auth.scopes');
  } else if (auth.type !== 'matrix' || clientCredentials) {
    throw corrupt('bad auth.type');
  }
  const { format: _format, ...record } = r;
  return record as unknown as SessionRecord;
}
