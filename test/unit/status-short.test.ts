// `mxs status --short`, the line for shell prompts: its text for each state, nothing at all when not
// logged in, colour only on a terminal, and the flags it refuses. Run in-process; that the start-up
// fast path serves it like oclif does is in test/integration/front-ends.test.ts, its speed in
// scripts/bench.mjs.
import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { statusCommand } from '../../src/cli/commands/status.js';
import { describe as describeSession } from '../../src/services/status.js';
import { shortStatusLine } from '../../src/ui/render.js';
import { NO_COLORS, type Colors } from '../../src/ui/output.js';
import { runCommand } from '../support/run-command.js';
import { makeDeps, type UnitWorld } from '../support/unit-deps.js';

const MIN = 60_000;
const T = Date.UTC(2030, 0, 1, 12, 0, 0);
const tagged: Colors = { red: (t) => `<red>${t}</red>`, green: (t) => `<green>${t}</green>`, yellow: (t) => `<yellow>${t}</yellow>`, dim: (t) => t };

function record(issuedAt: number, expiresAt: number | null, refreshable = true) {
  return {
    profile: 'default',
    homeserver: 'https://matrix.example.org',
    userId: '@alice:example.org',
    deviceId: 'DEV1',
    issuedAt: new Date(issuedAt).toISOString(),
    expiresAt: expiresAt === null ? null : new Date(expiresAt).toISOString(),
    refreshable,
    storage: 'file' as const,
    method: 'password' as const,
    auth: { type: 'matrix' as const },
  };
}

describe('shortStatusLine', () => {
  it.each([
    ['4m12s left', record(T - MIN, T + 4 * MIN + 12_000), NO_COLORS, '@alice:example.org 4m12s'],
    ['a part of a second rounds up', record(T - MIN, T + 59_400), NO_COLORS, '@alice:example.org 1m'],
    ['hours', record(T, T + 90 * MIN), NO_COLORS, '@alice:example.org 1h30m'],
    ['expired', record(T - 10 * MIN, T - MIN), NO_COLORS, '@alice:example.org expired'],
    ['expired for good', record(T - 10 * MIN, T - MIN, false), NO_COLORS, '@alice:example.org expired'],
    ['never expires: the user alone', record(T, null), NO_COLORS, '@alice:example.org'],
    ['plenty left, in colour', record(T - MIN, T + 4 * MIN), tagged, '@alice:example.org <green>4m</green>'],
    ['under a fifth of its life, in colour', record(T - 9 * MIN, T + MIN), tagged, '@alice:example.org <yellow>1m</yellow>'],
    ['expired, in colour', record(T - 10 * MIN, T - MIN), tagged, '@alice:example.org <red>expired</red>'],
  ])('%s', (_what, rec, colors, line) => {
    expect(shortStatusLine(describeSession('default', rec, T), T, colors)).toBe(line);
  });

  it('not logged in: no line at all', () => {
    expect(shortStatusLine(describeSession('default', null, T), T, NO_COLORS)).toBeNull();
  });

  it('a user ID with control characters is escaped', () => {
    const r = describeSession('default', { ...record(T, null), userId: '@evil\x1b]0;pwned\x07:example.org' }, T);
    expect(shortStatusLine(r, T, NO_COLORS)).not.toMatch(/[\x00-\x1f]/);
  });
});

describe('mxs status --short (in-process)', () => {
  let w: UnitWorld;
  beforeEach(async () => {
    w = await makeDeps({ now: Date.now() });
  });
  afterEach(async () => {
    await w.cleanup();
  });
  const env = () => ({ MXS_CONFIG_DIR: w.dir });

  it.each([
    ['valid: the line, exit 0', { lifetimeMs: 10 * MIN }, /^@alice:example\.org (9m5\ds|10m)\n$/, 0],
    ['expired, refreshable: exit 5, as status', { issuedAt: Date.now() - 10 * MIN, lifetimeMs: 5 * MIN }, /^@alice:example\.org expired\n$/, 5],
    ['expired for good: exit 4', { issuedAt: Date.now() - 10 * MIN, lifetimeMs: 5 * MIN, refreshToken: null }, /^@alice:example\.org expired\n$/, 4],
  ])('%s; nothing on stderr', async (_what, seed, stdout, code) => {
    await w.seed({ storage: 'file', ...seed });
    const r = await runCommand(statusCommand, ['--short'], { env: env() });
    expect({ code: r.exitCode, stderr: r.stderr }).toEqual({ code, stderr: '' });
    expect(r.stdout).toMatch(stdout);
  });

  it('not logged in: nothing at all, neither stdout nor stderr, exit 4', async () => {
    const r = await runCommand(statusCommand, ['--short'], { env: env() });
    expect({ code: r.exitCode, stdout: r.stdout, stderr: r.stderr }).toEqual({ code: 4, stdout: '', stderr: '' });
  });

  it.each([
    ['--all', ['--short', '--all']],
    ['--json', ['--short', '--json']],
    ['--watch', ['--short', '--watch']],
  ])('--short with %s is a usage error (exit 2)', async (_what, args) => {
    await w.seed({ storage: 'file' });
    const r = await runCommand(statusCommand, args, { env: env() });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/--short/);
    if (args.includes('--json')) expect(r.json()).toMatchObject({ error: { code: 'usage', exitCode: 2 } });
  });
});
