// Output.pipeData streams a body to stdout: when it resolves, every byte has been handed to stdout, not
// just queued in its buffer. The CLI exits right after the command returns, and a process that exits with
// writes still queued for a full pipe loses them (seen: a 100 MiB `mxs api` download piped to a slow reader
// came out 11 KB short).
import { describe, expect, it } from '@jest/globals';
import { Readable, Writable } from 'node:stream';
import { Output } from '../../src/ui/output.js';

/** A pipe whose reader is slow: each chunk is taken 2 ms after it was written, 4 KiB at a time. */
function slowPipe(): { stream: Writable; received: () => number } {
  let received = 0;
  const stream = new Writable({
    highWaterMark: 4096,
    write(chunk: Buffer, _enc, done) {
      setTimeout(() => {
        received += chunk.length;
        done();
      }, 2);
    },
  });
  return { stream, received: () => received };
}

describe('Output.pipeData', () => {
  it('resolves only once stdout has taken every byte of the body (a slow reader, the last chunks still queued)', async () => {
    const pipe = slowPipe();
    const out = new Output(pipe.stream as unknown as NodeJS.WriteStream, new Writable({ write: (_c, _e, d) => d() }) as unknown as NodeJS.WriteStream);
    const chunks = Array.from({ length: 64 }, (_, i) => Buffer.alloc(16 * 1024, i));
    await out.pipeData(Readable.from(chunks));
    expect(pipe.received()).toBe(64 * 16 * 1024);
    expect(pipe.stream.writableLength).toBe(0);
  });
});
