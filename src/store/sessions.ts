import { readFile, readdir, rm } from 'node:fs/promises';
import { storageError } from '../errors.js';
import type { SessionRecord } from '../model.js';
import { writeFileAtomic } from './atomic.js';
import type { StatePaths } from './paths.js';

const FORMAT = 1;

/** The sessions files: one small JSON file per profile with the session's non-secret metadata. */
export class SessionStore {
  constructor(private readonly paths: StatePaths) {}

  async read(profile: string): Promise<SessionRecord | null> {
    const file = this.paths.session(profile);
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw storageError(`Cannot read the sessions file ${file}: ${(err as Error).message}.`, 'Check its permissions.', err);
    }
    return parseRecord(text, file, profile);
  }

  async write(record: SessionRecord): Promise<void> {
    const file = this.paths.session(record.profile);
    try {
      await writeFileAtomic(file, JSON.stringify({ format: FORMAT, ...record }, null, 2) + '\n');
    } catch (err) {
      throw storageError(`Cannot write the sessions file ${file}: ${(err as Error).message}.`, 'Check the free space and permissions of the config directory.', err);
    }
  }

  async remove(profile: string): Promise<void> {
    await rm(this.paths.session(profile), { force: true });
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

function parseRecord(text: string, file: string, profile: string): SessionRecord {
  const corrupt = (why: string) =>
    storageError(
      `The sessions file ${file} is corrupt (${why}); it was left as it is.`,
      `Inspect or delete it, then log in again: mxs login SERVER${profile === 'default' ? '' : ` --profile ${profile}`}`,
    );
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    throw corrupt('not valid JSON');
  }
  if (typeof data !== 'object' || data === null) throw corrupt('not an object');
  const r = data as Record<string, unknown>;
  if (r.format !== FORMAT) throw corrupt(`unknown format ${JSON.stringify(r.format)}`);
  const str = (k: string) => typeof r[k] === 'string' && (r[k] as string).length > 0;
  const time = (k: string) => typeof r[k] === 'string' && !Number.isNaN(Date.parse(r[k] as string));
  for (const k of ['homeserver', 'userId', 'deviceId']) if (!str(k)) throw corrupt(`missing ${k}`);
  if (!time('issuedAt')) throw corrupt('bad issuedAt');
  if (r.expiresAt !== null && !time('expiresAt')) throw corrupt('bad expiresAt');
  if (typeof r.refreshable !== 'boolean') throw corrupt('bad refreshable');
  if (r.storage !== 'keychain' && r.storage !== 'file') throw corrupt('bad storage');
  if (r.profile !== profile) throw corrupt(`it names profile ${JSON.stringify(r.profile)}`);
  const { format: _format, ...record } = r;
  return record as unknown as SessionRecord;
}
