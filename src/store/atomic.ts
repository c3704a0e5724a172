import { lstatSync, readlinkSync, statSync, type Stats } from 'node:fs';
import { chmod, mkdir, open, rename, rm, stat, unlink } from 'node:fs/promises';
import { dirname, join, parse, resolve, sep } from 'node:path';
import { MxsError, storageError } from '../errors.js';
import { printable } from '../printable.js';
import { uniqueId } from './unique.js';

// ---------------------------------------------------------------------------------------------
// File-system failures as exit-6 errors: a read-only or full disk, a path whose parent is a file, a
// dangling symlink... name the path at fault and what to do, never "a bug".

/** A path in a message: bare, with control characters escaped. */
export const show = (p: string) => printable(p, { maxChars: 400 });

/**
 * Finds what in `dir` (and its parents) stops it from being a usable directory: a regular file
 * where a directory is needed, a dangling or looping symlink. Only examined after a failure.
 */
export function culpritIn(dir: string): { path: string; clause: string } | undefined {
  const abs = resolve(dir);
  // The usual case, a directory that is there (a file in it is not: no config.json yet), costs one
  // stat instead of one per component: every component of a path that resolves is a directory.
  try {
    if (statSync(abs).isDirectory()) return undefined;
  } catch {
    // find the component at fault below
  }
  const { root } = parse(abs);
  let current = root;
  for (const part of abs.slice(root.length).split(sep).filter(Boolean)) {
    current = join(current, part);
    let st: Stats;
    try {
      st = lstatSync(current);
    } catch {
      return undefined; // missing from here on: mkdir creates it
    }
    if (st.isSymbolicLink()) {
      let target = '?';
      try {
        target = readlinkSync(current);
      } catch {
        // keep '?'
      }
      try {
        if (!statSync(current).isDirectory()) return { path: current, clause: `${show(current)} is a symbolic link to ${show(target)}, which is not a directory` };
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ELOOP') return { path: current, clause: `${show(current)} is a symbolic link in a loop` };
        return { path: current, clause: `${show(current)} is a symbolic link to ${show(target)}, which does not exist` };
      }
    } else if (!st.isDirectory()) {
      return { path: current, clause: `${show(current)} is ${kindOf(st)} where mxs needs a directory` };
    }
  }
  return undefined;
}

export function kindOf(st: Stats): string {
  if (st.isFile()) return 'a regular file';
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a named pipe (FIFO)';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSymbolicLink()) return 'a symbolic link';
  return 'not a regular file';
}

const ELSEWHERE = 'or point MXS_CONFIG_DIR at a directory you can write';

/**
 * Describes a failed file-system call on `path` (in directory `dir`) as a storage error (exit 6):
 * what is wrong, with the path at fault, and a hint saying what to fix.
 */
function describe(err: NodeJS.ErrnoException, path: string, dir: string): { clause: string; hint: string } {
  const code = err.code ?? '';
  const culprit = ['ENOENT', 'ENOTDIR', 'EEXIST', 'ELOOP'].includes(code) ? culpritIn(dir) : undefined;
  if (culprit) return { clause: culprit.clause, hint: `Move ${show(culprit.path)} out of the way or fix it, ${ELSEWHERE}.` };
  switch (code) {
    case 'EROFS':
      return { clause: `${show(dir)} is on a read-only file system (EROFS)`, hint: `Remount it read-write, ${ELSEWHERE}.` };
    case 'EACCES':
    case 'EPERM':
      return { clause: `permission denied on ${show(path)} (${code})`, hint: `Make ${show(dir)} writable by this user (chown/chmod), ${ELSEWHERE}.` };
    case 'ENOSPC':
      return { clause: `no space left on the file system of ${show(dir)} (ENOSPC)`, hint: `Free some space there, ${ELSEWHERE}.` };
    case 'EDQUOT':
      return { clause: `the disk quota is used up on ${show(dir)} (EDQUOT)`, hint: `Free some space there, ${ELSEWHERE}.` };
    case 'EISDIR':
      return { clause: `${show(path)} is a directory, not a file`, hint: `Move it out of the way, ${ELSEWHERE}.` };
    case 'ENOTDIR':
    case 'EEXIST':
      return { clause: `${show(dir)} is not a directory (${code})`, hint: `Move it out of the way, ${ELSEWHERE}.` };
    case 'ENAMETOOLONG':
      return { clause: `the path ${show(path)} is too long`, hint: `Point MXS_CONFIG_DIR at a shorter path.` };
    case 'EMFILE':
    case 'ENFILE':
      return { clause: `too many open files while opening ${show(path)} (${code})`, hint: 'Close some programs (or raise `ulimit -n`) and retry.' };
    case 'EIO':
      return { clause: `an I/O error on ${show(path)} (EIO)`, hint: 'Check the disk (dmesg) and retry.' };
    default:
      return {
        clause: `${show(path)}: ${printable(err.message ?? String(err), { maxChars: 200, quoted: true })}`,
        hint: `Check the permissions and free space of ${show(dir)}, ${ELSEWHERE}.`,
      };
  }
}

/**
 * A failed file-system call on a state path as an exit-6 MxsError whose `detail` says what is wrong.
 * With `action` ("Cannot write the sessions file /x"), the message is "ACTION: detail."; without, it
 * is the detail alone, for a caller that puts it in its own sentence (the low-level helpers here).
 * An MxsError passes through; one from these helpers (it has a detail) gains the action.
 */
export function fsFailure(err: unknown, path: string, action?: string, dir: string = dirname(path)): MxsError {
  if (err instanceof MxsError) {
    if (action && err.kind === 'storage' && err.detail !== undefined) {
      return storageError(`${action}: ${err.detail}.`, err.hint ?? '', err.cause ?? err).with({ detail: err.detail });
    }
    return err;
  }
  const { clause, hint } = describe(err as NodeJS.ErrnoException, path, dir);
  return storageError(action ? `${action}: ${clause}.` : clause, hint, err).with({ detail: clause });
}

// ---------------------------------------------------------------------------------------------

/** Creates `dir` (and parents) as 0700; tightens an existing one that others can enter. Failures are exit 6. */
export async function ensurePrivateDir(dir: string): Promise<void> {
  try {
    await mkdirs(dir);
    const st = await stat(dir);
    if (!st.isDirectory()) throw Object.assign(new Error('not a directory'), { code: 'ENOTDIR' });
    if ((st.mode & 0o077) !== 0) await chmod(dir, 0o700);
  } catch (err) {
    throw fsFailure(err, dir, undefined, dir);
  }
}

/**
 * `mkdir -p` with mode 0700, one level at a time: Node's recursive mkdir reports ENOENT for any
 * failure on the way (EROFS, EACCES...), which would hide what is actually wrong.
 */
async function mkdirs(dir: string): Promise<void> {
  try {
    await mkdir(dir, { mode: 0o700 });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return; // the caller checks that it is a directory
    const parent = dirname(dir);
    if (code !== 'ENOENT' || parent === dir) throw err;
    await mkdirs(parent);
    try {
      await mkdir(dir, { mode: 0o700 });
    } catch (again) {
      if ((again as NodeJS.ErrnoException).code !== 'EEXIST') throw again;
    }
  }
}

/**
 * Replaces `path` atomically with a file of mode 0600 (safe for secrets: a token file, the secrets
 * file): write a temp file beside it (created 0600, never wider), fsync, rename, fsync the directory.
 * A reader sees the old or the new content, never a mix; a crash leaves the old. A missing directory
 * is created (0700); an existing one is left as it is (its permissions are the caller's business:
 * the state stores call ensurePrivateDir). Failures are exit-6 MxsErrors whose message is what is
 * wrong (callers may wrap it with fsFailure).
 */
export async function writeFileAtomic(path: string, data: string): Promise<void> {
  const dir = dirname(path);
  const tmp = `${path}.${process.pid}.${uniqueId()}.tmp`;
  try {
    await mkdirs(dir);
    const fh = await open(tmp, 'wx', 0o600);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } catch (err) {
      await fh.close().catch(() => {});
      await rm(tmp, { force: true });
      throw err;
    }
    await fh.close();
    try {
      await rename(tmp, path);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
    const dh = await open(dir, 'r');
    try {
      await dh.sync();
    } finally {
      await dh.close();
    }
  } catch (err) {
    throw fsFailure(err, (err as NodeJS.ErrnoException).code === 'EISDIR' ? path : tmp, undefined, dir);
  }
}

// ---------------------------------------------------------------------------------------------

/**
 * Proves that `dir` can hold state: creates it (0700) if needed, then writes,
 * fsyncs and removes a small probe file in it. Throws an exit-6 error naming the path and what to
 * fix when the directory cannot be created, is read-only, full, not a directory, a dangling
 * symlink... Cheap (one small file), so it can run before anything irreversible.
 */
export async function assertDirWritable(dir: string, what = 'the state directory'): Promise<void> {
  const action = `Cannot use ${what} ${show(dir)}`;
  try {
    await ensurePrivateDir(dir);
  } catch (err) {
    throw fsFailure(err, dir, action, dir);
  }
  const probe = join(dir, `.probe.${process.pid}.${uniqueId()}.tmp`);
  try {
    const fh = await open(probe, 'wx', 0o600);
    try {
      // A few KiB, not zero bytes: an empty file can still be created on a full file system.
      await fh.writeFile(Buffer.alloc(4096));
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch (err) {
    await unlink(probe).catch(() => {});
    throw fsFailure(err, probe, action, dir);
  }
  try {
    await unlink(probe);
  } catch (err) {
    throw fsFailure(err, probe, action, dir);
  }
}

/**
 * Throws (exit 6) when something other than a regular file (or a symlink to one) sits where a
 * state file will be atomically replaced: a rename cannot replace a directory with a file.
 */
export async function assertReplaceable(path: string, what = 'the file'): Promise<void> {
  let st: Stats;
  try {
    st = await stat(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && !culpritIn(dirname(path))) return;
    throw fsFailure(err, path, `Cannot use ${what} ${show(path)}`);
  }
  if (!st.isFile()) {
    throw storageError(`Cannot use ${what} ${show(path)}: it is ${kindOf(st)}, not a regular file.`, `Move it out of the way, ${ELSEWHERE}.`);
  }
}
