import { closeSync, constants, fstatSync, openSync, readSync, type Stats } from 'node:fs';
import { open } from 'node:fs/promises';
import { dirname } from 'node:path';
import { storageError, type MxsError } from '../errors.js';
import { culpritIn, fsFailure, kindOf, show } from './atomic.js';

// The one read of a small file that mxs keeps (sessions, secrets, config, a lock's owner): null when
// it does not exist; otherwise only a regular file of at most `maxBytes`, without ever blocking on
// anything else. The file is opened with O_NONBLOCK (a FIFO opens at once, where a plain read of a
// FIFO waits for a writer forever) and checked with fstat on that same descriptor before a byte is
// read, so it cannot be swapped between the check and the read. Symlinks to regular files are
// followed. Every failure is an exit-6 MxsError naming the file. It returns the text and the
// descriptor's stats (for mode checks). Two forms of the same steps: the config is read while a
// command is being wired (synchronously); the rest is read without holding up the event loop.

/** The sessions, secrets and config files are a few hundred bytes; anything much larger is not ours. */
export const MAX_STATE_FILE_BYTES = 1 << 20;

const NONBLOCKING_READ = constants.O_RDONLY | (constants.O_NONBLOCK ?? 0) | (constants.O_NOCTTY ?? 0);

export interface SmallFileOptions {
  /** Names the file in messages ("the sessions file"). */
  what: string;
  /** What to do about a file mxs refuses to read; default: move it away and log in again. */
  refusedHint?: string;
  maxBytes?: number;
}

export interface SmallFile {
  text: string;
  stats: Stats;
}

export async function readSmallFile(path: string, opts: SmallFileOptions): Promise<SmallFile | null> {
  let fh;
  try {
    fh = await open(path, NONBLOCKING_READ);
  } catch (err) {
    return openFailed(err, path, opts);
  }
  try {
    const stats = await fh.stat();
    const buf = bufferFor(stats, path, opts);
    let length = 0;
    for (let n; (n = (await fh.read(buf, length, buf.length - length, length)).bytesRead) > 0; ) length = grown(length + n, buf, path, opts);
    return { text: buf.subarray(0, length).toString('utf8'), stats };
  } catch (err) {
    throw fsFailure(err, path, readAction(path, opts));
  } finally {
    await fh.close().catch(() => {});
  }
}

export function readSmallFileSync(path: string, opts: SmallFileOptions): SmallFile | null {
  let fd: number;
  try {
    fd = openSync(path, NONBLOCKING_READ);
  } catch (err) {
    return openFailed(err, path, opts);
  }
  try {
    const stats = fstatSync(fd);
    const buf = bufferFor(stats, path, opts);
    let length = 0;
    for (let n; (n = readSync(fd, buf, length, buf.length - length, length)) > 0; ) length = grown(length + n, buf, path, opts);
    return { text: buf.subarray(0, length).toString('utf8'), stats };
  } catch (err) {
    throw fsFailure(err, path, readAction(path, opts));
  } finally {
    closeSync(fd);
  }
}

const readAction = (path: string, opts: SmallFileOptions) => `Cannot read ${opts.what} ${show(path)}`;

function refused(path: string, opts: SmallFileOptions, why: string): MxsError {
  const hint = opts.refusedHint ?? `mxs did not read it. Move it away (mv ${show(path)} ${show(path)}.bad), then log in again.`;
  return storageError(`Refusing to read ${opts.what} ${show(path)}: ${why}.`, hint);
}

/** null for a file that is simply not there; else throws what is wrong. */
function openFailed(err: unknown, path: string, opts: SmallFileOptions): null {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT' && !culpritIn(dirname(path))) return null;
  // open() of a Unix socket (or a device without a driver) fails this way.
  if (code === 'ENXIO' || code === 'EOPNOTSUPP') throw refused(path, opts, 'it is not a regular file (a socket or device)');
  throw fsFailure(err, path, readAction(path, opts));
}

/** A buffer one byte larger than the file, so that a file that grows while being read is noticed. */
function bufferFor(stats: Stats, path: string, opts: SmallFileOptions): Buffer {
  const maxBytes = opts.maxBytes ?? MAX_STATE_FILE_BYTES;
  if (!stats.isFile()) throw refused(path, opts, `it is ${kindOf(stats)}, not a regular file`);
  if (stats.size > maxBytes) throw refused(path, opts, `it is too large (${stats.size} bytes; mxs writes less than ${maxBytes})`);
  return Buffer.alloc(stats.size + 1);
}

function grown(length: number, buf: Buffer, path: string, opts: SmallFileOptions): number {
  if (length >= buf.length) throw refused(path, opts, 'it is too large (it grew while being read)');
  return length;
}
