import { describe, expect, it } from '@jest/globals';
import { formatDuration, parseDuration } from '../../src/duration.js';
import { MxsError } from '../../src/errors.js';

describe('parseDuration', () => {
  it.each([
    ['1500ms', 1500],
    ['90s', 90_000],
    ['5m', 300_000],
    ['1h30m', 5_400_000],
    ['2d', 172_800_000],
    ['1h1m1s1ms', 3_661_001],
    [' 60s ', 60_000],
    ['0s', 0],
  ])('reads %j as %d ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it.each(['', '   ', '5', '5x', '-5s', '1.5s', 'ms', 's5', '5 s', '5m junk', '99999999999999999999d'])(
    'rejects %j as a usage error (exit 2)',
    (text) => {
      let thrown: unknown;
      try {
        parseDuration(text, '--min-valid');
      } catch (err) {
        thrown = err;
      }
      expect(thrown).toBeInstanceOf(MxsError);
      expect(thrown).toMatchObject({ code: 'usage', exitCode: 2 });
      expect((thrown as MxsError).message).toContain('--min-valid');
    },
  );
});

describe('parseDuration bounds (issue 10 item 16)', () => {
  const usage = (fn: () => unknown): MxsError => {
    try {
      fn();
    } catch (err) {
      expect(err).toBeInstanceOf(MxsError);
      expect(err).toMatchObject({ code: 'usage', exitCode: 2 });
      return err as MxsError;
    }
    throw new Error('expected a usage error');
  };

  it.each([
    ['--timeout', '1000h', '1h'],
    ['--timeout', '1h1ms', '1h'],
    ['--timeout', '25d', '1h'],
    ['--min-valid', '1d1s', '1d'],
    ['--lifetime', '367d', '366d'],
  ])('refuses %s %s: a usage error (exit 2) naming the flag and its maximum %s', (flag, text, max) => {
    const err = usage(() => parseDuration(text, flag));
    expect(err.message).toContain(flag);
    expect(`${err.message} ${err.hint}`).toContain(max);
  });

  it.each([
    ['--timeout', '1h', 3_600_000],
    ['--min-valid', '1d', 86_400_000],
    ['--lifetime', '366d', 366 * 86_400_000],
  ])('accepts %s at its maximum %s', (flag, text, ms) => {
    expect(parseDuration(text, flag)).toBe(ms);
  });

  it('an explicit maximum bounds any flag, and is named in the error', () => {
    expect(parseDuration('10m', '--drain', 600_000)).toBe(600_000);
    const err = usage(() => parseDuration('10m1ms', '--drain', 600_000));
    expect(err.message).toContain('--drain');
    expect(`${err.message} ${err.hint}`).toContain('10m');
  });

  it('never returns more than a timer can hold (2^31-1 ms) for a flag that feeds a timer', () => {
    for (const flag of ['--timeout', '--drain']) {
      const err = usage(() => parseDuration('25d', flag));
      expect(err.message).toContain(flag);
    }
  });

  it('a duration over the limit is refused before Node could warn TimeoutOverflowWarning', () => {
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.name);
    process.on('warning', onWarning);
    try {
      usage(() => parseDuration('1000h', '--timeout'));
    } finally {
      process.off('warning', onWarning);
    }
    expect(warnings).toEqual([]);
  });

  it('echoes a malformed value with its control characters escaped, on one line', () => {
    const err = usage(() => parseDuration('5s\n\u001b[2Jx', '--timeout'));
    expect(err.message).not.toMatch(/[\u0000-\u001f\u007f]/);
    expect(err.message).toContain('\\n');
    expect(err.message).toContain('\\x1b');
  });
});

describe('formatDuration', () => {
  it.each([
    [0, '0ms'],
    [850, '850ms'],
    [1000, '1s'],
    [59_999, '59s'],
    [252_000, '4m 12s'],
    [300_000, '5m'],
    [3_600_000, '1h'],
    [3_780_000, '1h 3m'],
    [3_605_000, '1h'],
    [187_200_000, '2d 4h'],
    [86_400_000 + 59_000, '1d'],
    [-90_000, '1m 30s'],
  ])('shows %d ms as %j (the two largest units)', (ms, text) => {
    expect(formatDuration(ms)).toBe(text);
  });
});
