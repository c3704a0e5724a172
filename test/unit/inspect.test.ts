// `mxs inspect`: token formats read as their servers write them (src/matrix/token-formats.ts), the
// service (src/services/inspect.ts) with the homeserver faked, and the command in-process: what it
// prints, its exit codes, and that no token ever appears in any output. Tokens that the real servers
// issued are inspected in test/integration/inspect.test.ts.
import { randomBytes, randomInt } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { describe, expect, it } from '@jest/globals';
import { inspectCommand } from '../../src/cli/commands/inspect.js';
import { masChecksum, synapseChecksum, tokenFingerprint, tokenFormat } from '../../src/matrix/token-formats.js';
import { inspectService, storedTokens, tokenFromInput } from '../../src/services/inspect.js';
import { runCommand } from '../support/run-command.js';
import { HS, rejectionOf, replyJson, type UnitWorld, worldPerTest } from '../support/unit-deps.js';

const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
const DIGITS = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const random = (n: number, alphabet = ALNUM) => Array.from({ length: n }, () => alphabet[randomInt(alphabet.length)]).join('');

/** A token as the Matrix Authentication Service makes one (tokens.rs TokenType::generate): 30 alphanumerics, CRC digits least significant first. */
function masToken(prefix: string): string {
  const base = `${prefix}_${random(30)}`;
  let crc = '';
  for (let n = crc32(base) >>> 0; n > 0; n = Math.floor(n / 62)) crc += DIGITS[n % 62];
  return `${base}_${crc.padStart(6, '0')}`;
}

/** A token as Synapse makes one (handlers/auth.py generate_access_token): base64 localpart, 20 letters, CRC most significant digit first. */
function synapseToken(prefix: 'syt' | 'syr', localpart: string): string {
  const base = `${prefix}_${Buffer.from(localpart, 'utf8').toString('base64').replace(/=+$/, '')}_${random(20, ALNUM.slice(0, 52))}`;
  let crc = '';
  for (let n = crc32(base) >>> 0; n > 0; n = Math.floor(n / 62)) crc = DIGITS[n % 62] + crc;
  return `${base}_${crc.padStart(6, '0')}`;
}

/** One character of `token` at `at` replaced by another of the same class. */
function changeOne(token: string, at: number): string {
  const c = token[at]!;
  return token.slice(0, at) + (c === 'a' ? 'b' : 'a') + token.slice(at + 1);
}

describe('tokenFormat', () => {
  // Tokens from the Matrix Authentication Service's own test snapshots (element-hq/matrix-authentication-service:
  // crates/handlers/src/compat/login.rs, crates/handlers/src/admin/v1/personal_sessions/add.rs), issued by
  // its seeded test RNG: fixed, public, never valid anywhere.
  it.each([
    ['mct_cxG6gZXyvelQWW9XqfNbm5KAQovodf_XvJz43', 'mas_compat_access'],
    ['mct_PGMLvvMXC4Ds1A3lCWc6Hx4l9DGzqG_lVEIV2', 'mas_compat_access'],
    ['mcr_LoYqtrtBUBcWlE4RX6o47chBCGkadB_9gzpc1', 'mas_compat_refresh'],
    ['mpt_FM44zJN5qePGMLvvMXC4Ds1A3lCWc6_bJ9Wj1', 'mas_personal'],
  ])("reads the Matrix Authentication Service's own %s as %s with a valid checksum", (token, kind) => {
    expect(tokenFormat(token)).toEqual({ kind, server: 'mas', localpart: null, checksumValid: true });
  });

  it.each([
    ['mat', 'mas_access'],
    ['mar', 'mas_refresh'],
    ['mct', 'mas_compat_access'],
    ['mcr', 'mas_compat_refresh'],
    ['mpt', 'mas_personal'],
  ])('a %s_ token made the way MAS makes it is %s, checksum valid; one character changed, the checksum cut or the prefix swapped, it is not', (prefix, kind) => {
    for (let i = 0; i < 20; i++) {
      const token = masToken(prefix);
      expect(tokenFormat(token)).toEqual({ kind, server: 'mas', localpart: null, checksumValid: true });
      expect(tokenFormat(changeOne(token, 4 + randomInt(30))).checksumValid).toBe(false);
      expect(tokenFormat(changeOne(token, token.length - 1 - randomInt(6))).checksumValid).toBe(false);
      expect(tokenFormat(token.slice(0, -6))).toMatchObject({ kind, checksumValid: false });
      expect(tokenFormat(token.slice(0, -3))).toMatchObject({ kind, checksumValid: false });
      const other = prefix === 'mat' ? 'mar' : 'mat';
      expect(tokenFormat(other + token.slice(3))).toMatchObject({ server: 'mas', checksumValid: false });
    }
  });

  it.each([
    ['syt', 'synapse_access', 'alice'],
    ['syr', 'synapse_refresh', 'alice'],
    ['syt', 'synapse_access', 'bot-7.relay_x=y/z'],
    ['syt', 'synapse_access', 'ünïcödé'],
  ])('a %s_ token made the way Synapse makes it is %s, with localpart %s and a valid checksum', (prefix, kind, localpart) => {
    for (let i = 0; i < 10; i++) {
      const token = synapseToken(prefix as 'syt' | 'syr', localpart);
      expect(tokenFormat(token)).toEqual({ kind, server: 'synapse', localpart, checksumValid: true });
      const parts = token.split('_');
      expect(tokenFormat(changeOne(token, token.length - 8 - randomInt(20)))).toEqual({ kind, server: 'synapse', localpart, checksumValid: false });
      expect(tokenFormat(parts.slice(0, 3).join('_'))).toMatchObject({ kind, localpart, checksumValid: false });
    }
  });

  it("each server's checksum is checked its own way: the digit orders differ, so neither accepts the other's", () => {
    // MAS's own personal token: the same CRC-32 written Synapse's way reads 1jW9Jb, not bJ9Wj1.
    expect(masChecksum('mpt_FM44zJN5qePGMLvvMXC4Ds1A3lCWc6')).toBe('bJ9Wj1');
    expect(synapseChecksum('mpt_FM44zJN5qePGMLvvMXC4Ds1A3lCWc6')).toBe('1jW9Jb');
    expect(tokenFormat('mpt_FM44zJN5qePGMLvvMXC4Ds1A3lCWc6_1jW9Jb').checksumValid).toBe(false);
    const synapse = synapseToken('syt', 'alice');
    const base = synapse.slice(0, -7);
    const swapped = `${base}_${masChecksum(base)}`;
    if (masChecksum(base) !== synapseChecksum(base)) expect(tokenFormat(swapped).checksumValid).toBe(false);
  });

  it.each([
    ['an mxs proxy token', `mxp_${randomBytes(32).toString('base64url')}`, { kind: 'mxs_proxy', server: 'mxs', localpart: null, checksumValid: null }],
    ['a proxy-like token of the wrong length', `mxp_${randomBytes(20).toString('base64url')}`, { kind: 'unknown', server: null, localpart: null, checksumValid: null }],
    ['an opaque OAuth token (oidc-provider)', randomBytes(32).toString('base64url'), { kind: 'unknown', server: null, localpart: null, checksumValid: null }],
    ['a JWT', 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl', { kind: 'unknown', server: null, localpart: null, checksumValid: null }],
    ['an unknown prefix', 'mxt_cxG6gZXyvelQWW9XqfNbm5KAQovodf_XvJz43', { kind: 'unknown', server: null, localpart: null, checksumValid: null }],
    ['a prefix in the wrong case', 'SYT_YWxpY2U_abcdefghijABCDEFGHIJ_000000', { kind: 'unknown', server: null, localpart: null, checksumValid: null }],
    ['a Synapse prefix with an undecodable localpart', 'syt_!!!_abc_def', { kind: 'synapse_access', server: 'synapse', localpart: null, checksumValid: false }],
    ['a bare Synapse prefix', 'syt_', { kind: 'synapse_access', server: 'synapse', localpart: null, checksumValid: false }],
  ])('%s', (_what, token, expected) => {
    expect(tokenFormat(token)).toEqual(expected);
  });

  it('fingerprints a token by the first 12 hex digits of its SHA-256', () => {
    expect(tokenFingerprint('abc')).toBe('ba7816bf8f01'); // FIPS 180-2's SHA-256("abc")
    expect(tokenFingerprint('mct_cxG6gZXyvelQWW9XqfNbm5KAQovodf_XvJz43')).toMatch(/^[0-9a-f]{12}$/);
  });
});

describe('tokenFromInput', () => {
  const SECRET = 'syt_c2VjcmV0_SecretPartNeverShown_000000';
  it.each([
    ['one line with \\n', `${SECRET}\n`],
    ['one line with \\r\\n', `${SECRET}\r\n`],
    ['no final newline', SECRET],
  ])('takes %s', (_what, text) => {
    expect(tokenFromInput(text)).toBe(SECRET);
  });

  it.each([
    ['several lines', `${SECRET}\n${SECRET}\n`, /holds 2 lines/],
    ['a control character', `${SECRET}\x1b[2J`, /control characters/],
    ['a space', `access_token: ${SECRET}`, /contains spaces/],
    ['non-ASCII text', `${SECRET}é`, /non-ASCII/],
    ['a token too long', SECRET.repeat(500), /longer than 16384/],
    ['nothing', '\n', /held no token/],
  ])('refuses %s (exit 2) without quoting the input', (_what, text, message) => {
    let err: any;
    try {
      tokenFromInput(text);
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ exitCode: 2, code: 'usage' });
    expect(err.message).toMatch(message);
    expect(`${err.message}\n${String(err.hint)}`).not.toContain('SecretPart');
  });
});

describe('inspectService', () => {
  let w: UnitWorld;
  worldPerTest((made) => (w = made));
  const WHOAMI = '/_matrix/client/v3/account/whoami';

  it('offline: kind, checksum and fingerprint, and no owner fields at all', async () => {
    const token = synapseToken('syt', 'alice');
    const report = await inspectService([{ source: 'stdin', token }], null, w.deps);
    expect(report.tokens).toEqual([{ source: 'stdin', kind: 'synapse_access', server: 'synapse', localpart: 'alice', checksumValid: true, fingerprint: tokenFingerprint(token) }]);
    expect(w.requests()).toEqual([]);
  });

  it('online: whoami names the owner; 401 M_UNKNOWN_TOKEN is valid: false, not an error', async () => {
    replyJson(w.agent, HS, 'GET', WHOAMI, 200, { user_id: '@alice:example.org', device_id: 'DEV1' });
    replyJson(w.agent, HS, 'GET', WHOAMI, 401, { errcode: 'M_UNKNOWN_TOKEN', error: 'Invalid access token passed.' });
    const good = masToken('mat');
    const revoked = masToken('mct');
    const report = await inspectService([{ source: 'stdin', token: good }, { source: 'stdin', token: revoked }], { homeserver: HS }, w.deps);
    expect(report.tokens.map(({ userId, deviceId, valid }) => ({ userId, deviceId, valid }))).toEqual([
      { userId: '@alice:example.org', deviceId: 'DEV1', valid: true },
      { userId: null, deviceId: null, valid: false },
    ]);
    expect(w.requests().map((r) => r.headers.authorization)).toEqual([`Bearer ${good}`, `Bearer ${revoked}`]);
  });

  it('online: refresh tokens and proxy tokens are never sent (valid: null)', async () => {
    const given = [
      { source: 'refresh' as const, token: 'opaque-refresh-token-of-some-provider' },
      { source: 'refresh' as const, token: synapseToken('syr', 'alice') },
      { source: 'stdin' as const, token: masToken('mar') },
      { source: 'stdin' as const, token: `mxp_${randomBytes(32).toString('base64url')}` },
    ];
    const report = await inspectService(given, { homeserver: HS }, w.deps);
    expect(report.tokens.map((t) => [t.userId, t.deviceId, t.valid])).toEqual([[null, null, null], [null, null, null], [null, null, null], [null, null, null]]);
    expect(w.requests()).toEqual([]);
  });

  it('online: a server error is the usual network failure (exit 3), not a finding', async () => {
    replyJson(w.agent, HS, 'GET', WHOAMI, 502, { errcode: 'M_UNKNOWN', error: 'bad gateway' });
    replyJson(w.agent, HS, 'GET', WHOAMI, 502, { errcode: 'M_UNKNOWN', error: 'bad gateway' });
    replyJson(w.agent, HS, 'GET', WHOAMI, 502, { errcode: 'M_UNKNOWN', error: 'bad gateway' });
    replyJson(w.agent, HS, 'GET', WHOAMI, 502, { errcode: 'M_UNKNOWN', error: 'bad gateway' });
    const err = await rejectionOf(() => inspectService([{ source: 'stdin', token: masToken('mat') }], { homeserver: HS }, w.deps));
    expect(err).toMatchObject({ exitCode: 3 });
  });

  it('stored: the access token, then the refresh token when there is one (read, never refreshed)', async () => {
    const accessToken = synapseToken('syt', 'alice');
    const refreshToken = synapseToken('syr', 'alice');
    await w.seed({ accessToken, refreshToken, lifetimeMs: -1000 });
    expect(await storedTokens('default', w.deps)).toEqual({ tokens: [{ source: 'access', token: accessToken }, { source: 'refresh', token: refreshToken }], homeserver: HS });
    await w.seed({ accessToken, refreshToken: null, lifetimeMs: null });
    expect((await storedTokens('default', w.deps)).tokens).toEqual([{ source: 'access', token: accessToken }]);
    expect(await rejectionOf(() => storedTokens('other', w.deps))).toMatchObject({ exitCode: 4 });
    expect(w.requests()).toEqual([]);
  });
});

describe('mxs inspect (in-process)', () => {
  let w: UnitWorld;
  worldPerTest((made) => (w = made));
  const env = () => ({ MXS_CONFIG_DIR: w.dir, MXS_STORAGE: 'file' });

  it('says what a piped token is, one block, and never prints it', async () => {
    const token = synapseToken('syt', 'alice');
    const r = await runCommand(inspectCommand, [], { stdin: `${token}\n`, env: env() });
    expect({ code: r.exitCode, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
    expect(r.stdout).toBe(
      [
        'Token:       standard input',
        'Kind:        Synapse access token (synapse_access)',
        'Server:      synapse',
        'Localpart:   alice',
        'Checksum:    ok',
        `Fingerprint: ${tokenFingerprint(token)} (first 12 hex digits of its SHA-256)`,
        '',
      ].join('\n'),
    );
  });

  it('--json: {tokens: [...]} without the --online fields; a bad checksum or unknown kind is still exit 0', async () => {
    const bad = changeOne(masToken('mpt'), 10);
    const r = await runCommand(inspectCommand, ['--json'], { stdin: bad, env: env() });
    expect(r.exitCode).toBe(0);
    expect(r.json()).toEqual({ tokens: [{ source: 'stdin', kind: 'mas_personal', server: 'mas', localpart: null, checksumValid: false, fingerprint: tokenFingerprint(bad) }] });
    expect(r.stdout + r.stderr).not.toContain(bad);
    const unknown = await runCommand(inspectCommand, ['--json'], { stdin: 'opaque-token-value', env: env() });
    expect(unknown.exitCode).toBe(0);
    expect(unknown.json().tokens[0]).toMatchObject({ kind: 'unknown', server: null, checksumValid: null });
  });

  it.each([
    ['empty standard input', ''],
    ['several lines', 'syt_AAAA_secretsecret_000000\nsyt_AAAA_secretsecret_000000\n'],
    ['a control character', 'syt_AAAA_secretsecret\x07_000000'],
    ['standard input over 64 KiB', 'secretsecret'.repeat(6000)],
  ])('%s: exit 2, the token in no output (also under --json)', async (_what, stdin) => {
    for (const args of [[], ['--json']]) {
      const r = await runCommand(inspectCommand, args, { stdin, env: env() });
      expect(r.exitCode).toBe(2);
      expect(r.stdout + r.stderr).not.toContain('secretsecret');
      if (args.length) expect(r.json()).toMatchObject({ error: { code: 'usage', exitCode: 2 } });
      else expect(r.stderr.trim().split('\n')).toHaveLength(2);
    }
  });

  it("--stored: the profile's access and refresh tokens, each in its block", async () => {
    const accessToken = masToken('mct');
    const refreshToken = masToken('mcr');
    await w.seed({ storage: 'file', accessToken, refreshToken });
    const r = await runCommand(inspectCommand, ['--stored', '--json'], { env: env() });
    expect(r.exitCode).toBe(0);
    expect(r.json().tokens.map((t: any) => [t.source, t.kind, t.checksumValid, t.fingerprint])).toEqual([
      ['access', 'mas_compat_access', true, tokenFingerprint(accessToken)],
      ['refresh', 'mas_compat_refresh', true, tokenFingerprint(refreshToken)],
    ]);
    const text = await runCommand(inspectCommand, ['--stored'], { env: env() });
    expect(text.stdout).toMatch(/^Token: {7}stored access token\n[^]*\n\nToken: {7}stored refresh token\n/);
    expect(text.stdout + text.stderr + r.stdout).not.toMatch(new RegExp(`${accessToken}|${refreshToken}`));
  });

  it('a Synapse token whose localpart does not decode says so, in place of the localpart', async () => {
    const r = await runCommand(inspectCommand, [], { stdin: 'syt_!!!_abcdefghij_000000', env: env() });
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain('Localpart:   unreadable (the token is malformed)\nChecksum:    bad');
  });

  it('--stored without a session: exit 4; --online without a server to ask: exit 2; --server without --online: exit 2', async () => {
    expect((await runCommand(inspectCommand, ['--stored'], { env: env() })).exitCode).toBe(4);
    expect((await runCommand(inspectCommand, ['--online'], { stdin: 'abcdefgh', env: env() })).exitCode).toBe(2);
    expect((await runCommand(inspectCommand, ['--server', HS], { stdin: 'abcdefgh', env: env() })).exitCode).toBe(2);
  });
});
