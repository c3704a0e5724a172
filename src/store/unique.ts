/**
 * A name part unique on this host for temp files and lock nonces: the monotonic clock in ns, a
 * per-process counter and Math.random (callers add the PID). Not a secret, so not node:crypto,
 * whose load is a large part of a short command's start-up (measured: issue 12).
 */
let counter = 0;

export function uniqueId(): string {
  counter = (counter + 1) % 0x100000;
  return `${process.hrtime.bigint().toString(36)}${counter.toString(36)}${Math.floor(Math.random() * 0x100000000).toString(36)}`;
}
