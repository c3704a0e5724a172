import { describe, expect, it } from '@jest/globals';
import { Chalk } from 'chalk';
import { countdown } from '../../src/ui/render.js';

const color = new Chalk({ level: 1 });
const plain = new Chalk({ level: 0 });

const EXPIRES = '2030-01-01T21:03:12.000Z';
const expiresMs = Date.parse(EXPIRES);
const FIVE_MIN_BEFORE = new Date(expiresMs - 300_000).toISOString();

const GREEN = '\u001b[32m';
const YELLOW = '\u001b[33m';
const RED = '\u001b[31m';
const RESET_FG = '\u001b[39m';

describe('countdown', () => {
  it.each([
    ['plenty left', FIVE_MIN_BEFORE, 252_000, 'expires in 4m 12s (21:03:12 UTC)', GREEN],
    ['exactly 20% of the lifetime left', FIVE_MIN_BEFORE, 60_000, 'expires in 1m (21:03:12 UTC)', GREEN],
    ['under 20% of the lifetime left', FIVE_MIN_BEFORE, 59_000, 'expires in 59s (21:03:12 UTC)', YELLOW],
    ['under a second left', FIVE_MIN_BEFORE, 400, 'expires in 400ms (21:03:12 UTC)', YELLOW],
    ['little left but no known issue time', null, 5_000, 'expires in 5s (21:03:12 UTC)', GREEN],
    ['expired just now', FIVE_MIN_BEFORE, 0, 'expired 0ms ago (21:03:12 UTC)', RED],
    ['expired a while ago', FIVE_MIN_BEFORE, -90_000, 'expired 1m 30s ago (21:03:12 UTC)', RED],
  ])('%s: %j', (_case, issuedAt, leftMs, text, ansi) => {
    const now = expiresMs - leftMs;
    expect(countdown(issuedAt, EXPIRES, now, plain)).toBe(text);
    expect(countdown(issuedAt, EXPIRES, now, color)).toBe(`${ansi}${text}${RESET_FG}`);
  });

  it('says a token without expiry does not expire, in green', () => {
    expect(countdown(FIVE_MIN_BEFORE, null, expiresMs, plain)).toBe('does not expire');
    expect(countdown(null, null, expiresMs, color)).toBe(`${GREEN}does not expire${RESET_FG}`);
  });

  it('prints no escape codes at colour level 0', () => {
    for (const left of [252_000, 10_000, -5_000]) {
      expect(countdown(FIVE_MIN_BEFORE, EXPIRES, expiresMs - left, plain)).not.toMatch(/\u001b/);
    }
  });
});
