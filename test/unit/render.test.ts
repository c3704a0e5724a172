import { describe, expect, it } from '@jest/globals';
import { Chalk } from 'chalk';
import type { StatusReport } from '../../src/services/status.js';
import { countdown, statusLines } from '../../src/ui/render.js';
import { Output } from '../../src/ui/output.js';
import { usageError } from '../../src/errors.js';

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
    ['under a second left: still whole seconds, no switch to ms (issue 10 item 20)', FIVE_MIN_BEFORE, 466, 'expires in 1s (21:03:12 UTC)', YELLOW],
    ['1.5 s left rounds up', FIVE_MIN_BEFORE, 1500, 'expires in 2s (21:03:12 UTC)', YELLOW],
    ['little left but no known issue time', null, 5_000, 'expires in 5s (21:03:12 UTC)', GREEN],
    ['expired just now', FIVE_MIN_BEFORE, 0, 'expired 1s ago (21:03:12 UTC)', RED],
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

describe('status lines (issue 10 item 20)', () => {
  const report = (over: Partial<StatusReport['status']>): StatusReport => ({
    status: { profile: 'work', loggedIn: true, homeserver: 'https://hs', userId: '@a:hs', deviceId: 'D', method: 'password', issuer: null, scopes: null, issuedAt: FIVE_MIN_BEFORE, expiresAt: EXPIRES, expiresInMs: 1, expired: false, refreshable: true, storage: 'file', ...over },
    exitCode: 0,
    clockSkewMs: null,
    accountManagementUri: null,
  });
  const refreshLine = (r: StatusReport) => statusLines(r, expiresMs - 10_000, plain, { defaultProfile: 'default' }).find((l) => l.startsWith('Refresh:'));

  it('shows the OAuth scopes granted, escaped, and no scopes line when there are none', () => {
    const lines = statusLines(report({ method: 'oauth', issuer: 'https://auth/', scopes: ['urn:matrix:client:api:*', 'urn:mas:admin', 'x\u001b[31m'] }), expiresMs - 10_000, plain, { defaultProfile: 'default' });
    expect(lines.find((l) => l.startsWith('Scopes:'))).toBe('Scopes:    urn:matrix:client:api:* urn:mas:admin x\\x1b[31m');
    expect(statusLines(report({}), expiresMs - 10_000, plain, { defaultProfile: 'default' }).some((l) => l.startsWith('Scopes:'))).toBe(false);
  });

  it.each([
    ['valid', {}, expiresMs - 3_600_000],
    ['expiring soon', {}, expiresMs - 10_000],
    ['expired, refreshable', { expired: true }, expiresMs + 10_000],
    ['expired for good', { expired: true, refreshable: false }, expiresMs + 10_000],
    ['not logged in', { loggedIn: false }, expiresMs],
  ] as const)('%s: every colour is reset on its own line, before the newline', (_case, over, now) => {
    const lines = statusLines(report(over), now, color, { defaultProfile: 'default' });
    expect(lines.join('\n')).toMatch(/\u001b\[3[123]m/);
    for (const line of lines) expect(line.split('\u001b[39m').length - 1).toBe((line.match(/\u001b\[3[123]m/g) ?? []).length);
    expect(lines.join('\n')).not.toMatch(/\n\u001b\[39m/);
  });

  it('says what renews a valid token instead of promising an automatic refresh', () => {
    expect(refreshLine(report({}))).toBe('Refresh:   on use: mxs token, whoami and refresh renew it (refresh token stored)');
  });

  it.each([
    [{ expired: true }, 'mxs refresh --profile work'],
    [{ refreshable: false }, 'mxs login --profile work'],
  ])('names --profile in the command to run for a non-default profile: %j', (over, command) => {
    expect(refreshLine(report(over))).toContain(command);
  });

  it('escapes control characters in server-given names', () => {
    const lines = statusLines(report({ userId: '@a\x1b]0;pwned\x07:hs', deviceId: 'D\nFake: line' }), expiresMs, plain, { defaultProfile: 'default' });
    expect(lines.join('\n')).not.toMatch(/\x1b|\x07/);
    expect(lines.find((l) => l.startsWith('User:'))).toBe('User:      @a\\x1b]0;pwned\\x07:hs (device D\\nFake: line)');
  });
});

describe('colour', () => {
  const tty = () => Object.assign(new (class { text = ''; write(t: string) { this.text += t; return true; } })(), { isTTY: true });
  it.each([[{ FORCE_COLOR: '0' }], [{ NO_COLOR: '1' }], [{ TERM: 'dumb' }]])('none on a terminal with %j, also not on Error:', async (env) => {
    const err = tty();
    const out = await Output.create(tty(), err, env);
    out.error(usageError('Bad.', 'Do this.'), false, 'Do this.');
    expect(err.text).toBe('Error: Bad.\nDo this.\n');
  });

  it('on a terminal otherwise', async () => {
    const err = tty();
    const out = await Output.create(tty(), err, {});
    out.error(usageError('Bad.', 'Do this.'), false, 'Do this.');
    expect(err.text).toContain('\x1b[31mError:\x1b[39m');
  });
});
