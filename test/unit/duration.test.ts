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
