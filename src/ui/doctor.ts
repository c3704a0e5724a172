import type { Colors } from './output.js';

/** One check as shown and as --json gives it: the fix rendered (src/ui/hints.ts), null when none. */
export interface DoctorCheckView {
  id: string;
  status: 'ok' | 'warning' | 'failure' | 'skipped';
  detail: string;
  fix: string | null;
}

export interface DoctorView {
  profile: string;
  ok: boolean;
  checks: DoctorCheckView[];
}

const MARK = { ok: '✓', warning: '!', failure: '✗', skipped: '-' } as const;
const WIDTH = 10;

/**
 * A profile's checks, one line each (mark, name, what it found), with the fix on the line under
 * each warning and failure.
 */
export function doctorLines(view: DoctorView, c: Colors, header: string | null): string[] {
  const paint = { ok: c.green, warning: c.yellow, failure: c.red, skipped: c.dim } as const;
  const lines = header === null ? [] : [header];
  for (const check of view.checks) {
    const detail = check.status === 'skipped' ? `skipped: ${check.detail}` : check.detail;
    lines.push(`${paint[check.status](MARK[check.status])} ${check.id.padEnd(WIDTH)}${detail}`);
    if (check.fix !== null && (check.status === 'warning' || check.status === 'failure')) lines.push(`  ${' '.repeat(WIDTH)}${check.fix}`);
  }
  return lines;
}

/** The last line: what the checks add up to. */
export function doctorSummary(views: DoctorView[]): string {
  const count = (s: DoctorCheckView['status']) => views.reduce((n, v) => n + v.checks.filter((x) => x.status === s).length, 0);
  const failures = count('failure');
  const warnings = count('warning');
  if (failures === 0 && warnings === 0) return 'No problems found.';
  const part = (n: number, what: string) => `${n} ${what}${n === 1 ? '' : 's'}`;
  return [failures ? part(failures, 'failure') : null, warnings ? part(warnings, 'warning') : null].filter(Boolean).join(', ') + '.';
}
