import { usageError } from './errors.js';
import { printable } from './printable.js';

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const PART = /(\d+)(ms|s|m|h|d)/gy;

const HOUR = UNIT_MS.h!;
const DAY = UNIT_MS.d!;

/**
 * The most each duration flag accepts, used when the caller gives no maximum. `--timeout` is capped
 * by the contract; flags that feed a timer stay far below a Node timer's limit (2^31-1 ms, about 24.8 days); the others are sane bounds.
 */
export const DURATION_MAX_MS: Readonly<Record<string, number>> = {
  '--timeout': HOUR, // contract: at most 1h; also bounds the connect phase and the lock wait
  '--drain': HOUR, // proxy shutdown (a timer)
  '--min-valid': DAY, // refresh-ahead margin; capped at half the token's lifetime anyway
  '--lifetime': 366 * DAY, // requested refresh-token lifetime
  '--older-than': 3660 * DAY, // devices not seen for this long
};

/**
 * Parses `1500ms`, `90s`, `5m`, `1h30m`, `7d` (parts in any order, each once-or-more) into
 * milliseconds. Anything longer than `maxMs` (default: DURATION_MAX_MS[flag], else no bound but
 * Number.MAX_SAFE_INTEGER) is a usage error (exit 2) naming the flag and the maximum.
 */
export function parseDuration(input: string, flag = 'duration', maxMs: number = DURATION_MAX_MS[flag] ?? Number.MAX_SAFE_INTEGER): number {
  const text = input.trim();
  let total = 0;
  let matched = 0;
  PART.lastIndex = 0;
  for (let m = PART.exec(text); m; m = PART.exec(text)) {
    total += Number(m[1]) * UNIT_MS[m[2]!]!;
    matched = PART.lastIndex;
  }
  if (text === '' || matched !== text.length || !Number.isSafeInteger(total)) {
    throw usageError(
      `Invalid ${flag} "${printable(input, { maxChars: 40, quoted: true })}": expected a duration such as 1500ms, 90s, 5m or 1h30m.`,
      'Give a whole number followed by a unit: ms, s, m, h or d.',
    );
  }
  if (total > maxMs) {
    const max = durationText(maxMs);
    throw usageError(`${flag} ${printable(text, { maxChars: 40, quoted: true })} is too long: the most it accepts is ${max}.`, `Give at most ${max}, e.g. ${flag} ${max}`);
  }
  return total;
}

/** A duration in the syntax parseDuration reads, exactly: `1h`, `366d`, `1h30m`, `1500ms`. */
export function durationText(ms: number): string {
  if (ms === 0) return '0s';
  let rest = ms;
  let out = '';
  for (const unit of ['d', 'h', 'm', 's', 'ms']) {
    const n = Math.floor(rest / UNIT_MS[unit]!);
    if (n > 0) out += `${n}${unit}`;
    rest -= n * UNIT_MS[unit]!;
  }
  return out;
}

/** `4m 12s`, `1h 3m`, `2d 4h`, `850ms`: the two largest non-zero units. */
export function formatDuration(ms: number): string {
  const abs = Math.abs(ms);
  if (abs < 1000) return `${Math.round(abs)}ms`;
  const seconds = Math.floor(abs / 1000);
  const parts: [number, string][] = [
    [Math.floor(seconds / 86_400), 'd'],
    [Math.floor((seconds % 86_400) / 3600), 'h'],
    [Math.floor((seconds % 3600) / 60), 'm'],
    [seconds % 60, 's'],
  ];
  const first = parts.findIndex(([n]) => n > 0);
  return parts
    .slice(first, first + 2)
    .filter(([n], i) => i === 0 || n > 0)
    .map(([n, u]) => `${n}${u}`)
    .join(' ');
}
