import { closeSync, constants, fstatSync, openSync, readSync, type Stats } from 'node:fs';
import { dirname } from 'node:path';
import { storageError } from '../errors.js';
import { culpritIn, fsFailure, kindOf, show } from './atomic.js';

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

/**
 * The one read of a small file that mxs keeps (sessions, secrets, config, a lock's owner): null when
 * it does not exist; otherwise only a regular file of at most `maxBytes`, without ever blocking on
 * anything else. The file is opened with O_NONBLOCK (a FIFO opens at once, where a plain read of a FIFO
 * waits for a writer forever) and checked with fstat on that same descriptor before a byte is read, so
 * it cannot be swapped between the check and the read. Symlinks to regular files are followed.
 * Synchronous: the files are tiny, and the config is read while a command is being wired. Every failure
 * is an exit-6 MxsError naming the file. Returns the text and the descriptor's stats (for mode checks).
 */
export function readSmallFile(path: string, opts: SmallFileOptions): { text: string; stats: Stats } | null {
  const { what, maxBytes = MAX_STATE_FILE_BYTES } = opts;
  const refused = (why: string) =>
    storageError(`Refusing to read ${what} ${show(path)}: ${why}.`, opts.refusedHint ?? `mxs did not read it. Move it away (mv ${show(path)} ${show(path)}.bad), then log in again.`);
  const action = `Cannot read ${what} ${show(path)}`;
  let fd: number;
  try {
    fd = openSync(path, NONBLOCKING_READ);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && !culpritIn(dirname(path))) return null;
    // open() of a Unix socket (or a device without a driver) fails this way.
    if (code === 'ENXIO' || code === 'EOPNOTSUPP') throw refused('it is not a regular file (a socket or device)');
    throw fsFailure(err, path, action);
  }
  try {
    const stats = fstatSync(fd);
    if (!stats.isFile()) throw refused(`it is ${kindOf(stats)}, not a regular file`);
    if (stats.size > maxBytes) throw refused(`it is too large (${stats.size} bytes; mxs writes less than ${maxBytes})`);
    const buf = Buffer.alloc(stats.size + 1);
    let length = 0;
    for (;;) {
      const bytesRead = readSync(fd, buf, length, buf.length - length, length);
      if (bytesRead === 0) break;
      length += bytesRead;
      if (length >= buf.length) throw refused('it is too large (it grew while being read)');
    }
    return { text: buf.subarray(0, length).toString('utf8'), stats };
  } catch (err) {
    throw fsFailure(err, path, action);
  } finally {
    closeSync(fd);
  }
}
