import { lstat, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { loginHint, type Hint } from '../../errors.js';
import type { SessionRecord, SessionSecret } from '../../model.js';
import { holderState, parseOwner } from '../../store/lock-owner.js';
import { readSmallFile } from '../../store/small-file.js';
import { FORMAT } from '../../store/sessions.js';
import { failure, failureOf, formatMs, ok, warning, type DoctorDeps, type Finding } from './types.js';

// The checks that need no network: the state files (config), the secret store (storage) and the
// profile lock (lock). None of them writes anything or takes the lock.

const mode = (m: number) => (m & 0o777).toString(8).padStart(4, '0');

/** The mode of `path`, or null when it does not exist. */
async function modeOf(path: string): Promise<number | null> {
  try {
    return (await stat(path)).mode;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return null;
    throw err;
  }
}

export interface ConfigOutcome {
  finding: Finding;
  /** The profile's session, when the sessions file could be read and holds one. */
  record: SessionRecord | null;
}

/**
 * `config`: the config directory and the profile's files are private (directories 0700, files 0600),
 * and the sessions file is in a format this mxs reads. A secrets file others can read is a failure
 * (every command refuses it); anything else not private is a warning.
 */
export async function checkConfig(profile: string, deps: DoctorDeps): Promise<ConfigOutcome> {
  let record: SessionRecord | null;
  try {
    record = await deps.sessions.read(profile);
  } catch (err) {
    return { finding: failureOf('config', err, 'storage', ['Inspect or delete it, then log in again: ', loginHint(profile)]), record: null };
  }
  if (!record) {
    return { finding: failure('config', 'auth', `No session is stored for profile "${profile}" in ${deps.root}.`, loginHint(profile)), record: null };
  }
  const secretFile = deps.paths.secret(profile);
  if (record.storage === 'file') {
    const m = await modeOf(secretFile);
    if (m !== null && (m & 0o077) !== 0) {
      return {
        finding: failure('config', 'storage', `The secrets file ${secretFile} is readable by others (mode ${mode(m)}).`, `Run: chmod 600 ${secretFile}  (and consider the tokens in it leaked: log in again)`),
        record,
      };
    }
  }
  const dirs = [deps.root, deps.paths.sessionsDir, dirname(secretFile), dirname(deps.paths.lock(profile))];
  const files = [deps.paths.session(profile)];
  for (const dir of dirs) {
    const m = await modeOf(dir);
    if (m !== null && (m & 0o077) !== 0) return { finding: warning('config', `${dir} is open to other users (mode ${mode(m)}).`, `Run: chmod 700 ${dir}`), record };
  }
  for (const file of files) {
    const m = await modeOf(file);
    if (m !== null && (m & 0o077) !== 0) return { finding: warning('config', `${file} is readable by others (mode ${mode(m)}).`, `Run: chmod 600 ${file}`), record };
  }
  const where = record.storage === 'file' ? 'sessions and secrets files' : 'sessions file';
  return { finding: ok('config', `${deps.root} is private (0700), its ${where} 0600; the sessions file is in a format this mxs reads (1 to ${FORMAT}).`), record };
}

export interface StorageOutcome {
  finding: Finding;
  secret: SessionSecret | null;
}

/** `storage`: the secret store answers and holds this profile's tokens; how long the keychain took. */
export async function checkStorage(record: SessionRecord, deps: DoctorDeps, monotonic: () => number = () => performance.now()): Promise<StorageOutcome> {
  const store = deps.secretStores[record.storage];
  const started = monotonic();
  let secret: SessionSecret | null;
  try {
    secret = await store.get(record.profile);
  } catch (err) {
    return { finding: failureOf('storage', err, 'storage', 'Unlock or start your keychain, or log in again with --storage file.'), secret: null };
  }
  const took = formatMs(monotonic() - started);
  if (!secret) {
    const relogin = loginHint(record.profile, record.homeserver);
    if (store.kind === 'keychain') {
      return {
        finding: failure('storage', 'storage', `The OS keychain answered in ${took} but holds no tokens for profile "${record.profile}": it is locked, or the item was deleted.`, ['Unlock the keychain; if the item is gone, log in again: ', relogin]),
        secret: null,
      };
    }
    return { finding: failure('storage', 'auth', `The tokens of profile "${record.profile}" are missing from ${store.describe(record.profile)}.`, relogin), secret: null };
  }
  deps.rememberSecret(secret.accessToken, secret.refreshToken);
  const what = secret.refreshToken ? 'the access and refresh tokens' : 'the access token';
  const detail = store.kind === 'keychain' ? `The OS keychain answered in ${took} and holds ${what}.` : `${store.describe(record.profile)} (0600) holds ${what}.`;
  return { finding: ok('storage', detail), secret };
}

/** What the lock check is told about the world (tests stage each case). */
export interface LockFacts {
  now: number;
  /** How long a command waits for the lock before giving up. */
  waitMs: number;
}

/**
 * `lock`: free; held by a live process (which PID, since when) — a failure once it has been held
 * longer than any command waits for it —; or stale, left by a dead process (the next run takes it over).
 * Only reads the lock file (src/store/lock-owner.ts tells a live holder from a dead one).
 */
export async function checkLock(lockPath: string, facts: LockFacts): Promise<Finding> {
  if (await isDirectory(lockPath)) return warning('lock', `${lockPath} is a directory (a lock from mxs 0.1).`, staleFix(lockPath));
  let read;
  try {
    read = await readSmallFile(lockPath, { what: 'the lock', maxBytes: 4096 });
  } catch (err) {
    return failureOf('lock', err, 'storage', `Inspect ${lockPath}; if no mxs is running, remove it.`);
  }
  if (read === null) return ok('lock', 'Free.');
  const owner = parseOwner(read.text);
  if (!owner) return warning('lock', `${lockPath} is held, by an owner it does not name (unreadable).`, staleFix(lockPath));
  const since = Date.parse(owner.since);
  const age = Number.isNaN(since) ? null : formatMs(facts.now - since);
  const held = age === null ? '' : ` for ${age}`;
  const state = holderState(owner);
  if (state === 'dead') {
    return warning('lock', `Stale: left by PID ${owner.pid}, which is no longer running${age === null ? '' : ` (taken ${age} ago)`}.`, staleFix(lockPath));
  }
  if (state === 'unknown') {
    return warning('lock', `Held by PID ${owner.pid} on ${owner.host}${held}; whether it still runs cannot be told from here.`, `If no mxs runs there, remove ${lockPath}`);
  }
  const stuck: Hint = `If PID ${owner.pid} is stuck, end it (kill ${owner.pid}); mxs never takes a live process's lock.`;
  if (!Number.isNaN(since) && facts.now - since > facts.waitMs) {
    return failure('lock', 'storage', `Held by PID ${owner.pid}, still running,${held}: longer than any mxs command waits for it (${formatMs(facts.waitMs)}).`, stuck);
  }
  return warning('lock', `Held by PID ${owner.pid}, still running,${held} (a refresh in progress?).`, stuck);
}

function staleFix(lockPath: string): Hint {
  return `Nothing needs doing: the next mxs command takes it over (or remove ${lockPath}).`;
}

/** A lock that is not a file: a directory from mxs 0.1. */
async function isDirectory(path: string): Promise<boolean> {
  return (await lstat(path).catch(() => null))?.isDirectory() ?? false;
}
