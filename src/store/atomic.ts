import { constants, lstatSync, readlinkSync, statSync, type Stats } from 'node:fs';
import { chmod, mkdir, open, rename, rm, stat, unlink } from 'node:fs/promises';
import { dirname, join, parse, resolve, sep } from 'node:path';
import { MxsError, storageError } from '../errors.js';
import { printable } from './paths.js';
import { uniqueId } from './unique.js';

// ---------------------------------------------------------------------------------------------
// File-system failures as exit-6 errors (issue 10 item 12): a read-only or full disk, a path whose
// parent is a file, a dangling symlink... name the path at fault and what to do, never "a bug".

const clauses = new WeakSet<MxsError>();

/** A path in a message: bare, with control characters escaped. */
const show = (p: string) => printable(p, 400, false);

/**
 * Finds what in `dir` (and its parents) stops it from being a usable directory: a regular file
 * where a directory is needed, a dangling or looping symlink. Only examined after a failure.
 */
function culpritIn(dir: string): { path: string; clause: string } | undefined {
  const abs = resolve(dir);
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

function kindOf(st: Stats): string {
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
        clause: `${show(path)}: ${printable(err.message ?? String(err), 200)}`,
        hint: `Check the permissions and free space of ${show(dir)}, ${ELSEWHERE}.`,
      };
  }
}

/**
 * A failed file-system call on a state path as an exit-6 MxsError. With `action` ("Cannot write
 * the sessions file /x"), the message is "ACTION: what is wrong."; without, it is just what is
 * wrong, for a caller that wraps it in its own sentence (the low-level helpers here do that).
 * An MxsError passes through (one from these helpers gains the action).
 */
export function fsFailure(err: unknown, path: string, action?: string, dir: string = dirname(path)): MxsError {
  if (err instanceof MxsError) {
    if (action && clauses.has(err)) return storageError(`${action}: ${err.message}.`, err.hint ?? '', err.cause ?? err);
    return err;
  }
  const { clause, hint } = describe(err as NodeJS.ErrnoException, path, dir);
  if (action) return storageError(`${action}: ${clause}.`, hint, err);
  const e = storageError(clause, hint, err);
  clauses.add(e);
  return e;
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
 * Replaces `path` atomically: write a temp file beside it (0600), fsync, rename, fsync the
 * directory. A reader sees the old or the new content, never a mix; a crash leaves the old.
 * Failures are exit-6 MxsErrors whose message says what is wrong (callers may wrap it). The
 * directory is made private (0700) first, unless `dirAsIs`: a file the user placed in a directory of
 * their own (`proxy --token-file`) leaves that directory as it is.
 */
export async function writeFileAtomic(path: string, data: string, opts: { dirAsIs?: boolean } = {}): Promise<void> {
  const dir = dirname(path);
  if (!opts.dirAsIs) await ensurePrivateDir(dir);
  const tmp = `${path}.${process.pid}.${uniqueId()}.tmp`;
  try {
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

/** The sessions and secrets files are a few hundred bytes; anything much larger is not ours. */
export const MAX_STATE_FILE_BYTES = 1 << 20;

const NONBLOCKING_READ = constants.O_RDONLY | (constants.O_NONBLOCK ?? 0) | (constants.O_NOCTTY ?? 0);

/**
 * Reads a small state file (issue 10 item 13), or null when it does not exist. Refuses, with an
 * exit-6 error naming the file, anything but a regular file of at most `maxBytes`, without ever
 * blocking on it: the file is opened with O_NONBLOCK (a FIFO opens at once, a reader of a FIFO
 * without O_NONBLOCK waits for a writer forever) and checked with fstat on that same descriptor
 * before a byte is read. Symlinks to regular files are followed. `what` names the file in messages
 * ("the sessions file"). Returns the text and the descriptor's stats (for mode checks).
 */
export async function readStateFile(
  path: string,
  what = 'the file',
  maxBytes = MAX_STATE_FILE_BYTES,
): Promise<{ text: string; stats: Stats } | null> {
  const action = `Cannot read ${what} ${show(path)}`;
  let fh;
  try {
    fh = await open(path, NONBLOCKING_READ);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && !culpritIn(dirname(path))) return null;
    if (code === 'ENXIO' || code === 'EOPNOTSUPP') {
      // open() of a Unix socket (or a device without a driver) fails this way.
      throw storageError(`Refusing to read ${what} ${show(path)}: it is not a regular file (a socket or device).`, refuseHint(path));
    }
    throw fsFailure(err, path, action);
  }
  try {
    const stats = await fh.stat();
    if (!stats.isFile()) {
      throw storageError(`Refusing to read ${what} ${show(path)}: it is ${kindOf(stats)}, not a regular file.`, refuseHint(path));
    }
    if (stats.size > maxBytes) {
      throw storageError(
        `Refusing to read ${what} ${show(path)}: it is too large (${stats.size} bytes; mxs writes less than ${maxBytes}).`,
        refuseHint(path),
      );
    }
    const buf = Buffer.alloc(Math.min(stats.size, maxBytes) + 1);
    let length = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, length, buf.length - length, length);
      if (bytesRead === 0) break;
      length += bytesRead;
      if (length >= buf.length) {
        throw storageError(`Refusing to read ${what} ${show(path)}: it is too large (it grew while being read).`, refuseHint(path));
      }
    }
    return { text: buf.subarray(0, length).toString('utf8'), stats };
  } catch (err) {
    throw fsFailure(err, path, action);
  } finally {
    await fh.close().catch(() => {});
  }
}

function refuseHint(path: string): string {
  return `mxs did not read it. Move it away (mv ${show(path)} ${show(path)}.bad), then log in again.`;
}

// ---------------------------------------------------------------------------------------------

/**
 * Proves that `dir` can hold state (issue 10 item 12): creates it (0700) if needed, then writes,
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
