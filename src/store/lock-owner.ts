import { readFileSync, readlinkSync } from 'node:fs';
import { hostname } from 'node:os';

// Who holds a lock, and whether that holder is provably alive or dead. A lock file's content names
// its holder (PID, the process's start time as the kernel counts it, hostname, boot id, PID
// namespace, a random nonce); on the same host that is enough to tell a live holder from a dead one,
// or from an unrelated process that got the same PID later, without comparing any clocks.

/** What a lock file says about its holder. */
export interface LockOwner {
  v: 1;
  pid: number;
  /** The holder's start time in clock ticks since boot (/proc/PID/stat field 22); null off Linux. */
  start: string | null;
  host: string;
  /** /proc/sys/kernel/random/boot_id; null off Linux. */
  boot: string | null;
  /** The PID namespace (/proc/self/ns/pid); null off Linux. */
  pidns: string | null;
  nonce: string;
  /** For people reading the file; never used to judge staleness. */
  since: string;
}

/** A /proc or /sys pseudo-file (they report size 0, so the state-file read does not apply). */
function readText(path: string): string | null {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return null;
  }
}

/** Field 22 of /proc/PID/stat (after the parenthesised command name, which may hold spaces). */
export function processStart(pid: number): string | null {
  const stat = readText(`/proc/${pid}/stat`);
  if (!stat) return null;
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return fields[19] ?? null;
}

function pidNamespace(): string | null {
  try {
    return readlinkSync('/proc/self/ns/pid') || null; // e.g. "pid:[4026531836]"
  } catch {
    return null;
  }
}

let self: Omit<LockOwner, 'nonce' | 'since'> | undefined;
export function me(): Omit<LockOwner, 'nonce' | 'since'> {
  self ??= {
    v: 1,
    pid: process.pid,
    start: processStart(process.pid),
    host: hostname(),
    boot: readText('/proc/sys/kernel/random/boot_id'),
    pidns: pidNamespace(),
  };
  return self;
}

export function parseOwner(text: string): LockOwner | null {
  try {
    const o = JSON.parse(text) as Partial<LockOwner>;
    if (o && o.v === 1 && Number.isSafeInteger(o.pid) && o.pid! > 0 && typeof o.host === 'string' && typeof o.nonce === 'string') return o as LockOwner;
  } catch {
    // unreadable
  }
  return null;
}

export type Verdict = 'alive' | 'dead' | 'unknown';

/** Whether the holder is provably alive or dead, from this host; 'unknown' when that cannot be told. */
export function holderState(owner: LockOwner): Verdict {
  const here = me();
  if (owner.host !== here.host || owner.boot !== here.boot || owner.pidns !== here.pidns) return 'unknown';
  try {
    process.kill(owner.pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return 'dead';
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return 'unknown';
  }
  if (owner.start === null || here.start === null) return 'unknown';
  const start = processStart(owner.pid);
  if (start === null) return 'unknown'; // alive, but /proc hides it (hidepid): cannot tell reuse
  return start === owner.start ? 'alive' : 'dead';
}
