import { usageError } from './errors.js';

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const PART = /(\d+)(ms|s|m|h|d)/gy;

/** Parses `1500ms`, `90s`, `5m`, `1h30m` (parts in any order, each once-or-more) into milliseconds. */
export function parseDuration(input: string, flag = 'duration'): number {
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
      `Invalid ${flag} "${input}": expected a duration such as 1500ms, 90s, 5m or 1h30m.`,
      'Give a whole number followed by a unit: ms, s, m, h or d.',
    );
  }
  return total;
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
