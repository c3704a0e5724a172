import { describe, expect, it } from '@jest/globals';
import { REDACTED, Redactor, redactUrl } from '../../src/redact.js';

describe('Redactor', () => {
  it.each([
    ['a registered value', 'password was hunter2-secret.', 'password was [REDACTED].'],
    ['a registered value, every occurrence', 'hunter2-secret/hunter2-secret', '[REDACTED]/[REDACTED]'],
    ['a syt_ access token', 'token syt_YWxpY2U_abcDEF_123xyz here', 'token [REDACTED] here'],
    ['a syr_ refresh token', '{"refresh_token":"syr_YWxpY2U_zzz_0"}', '{"refresh_token":"[REDACTED]"}'],
    ['an OAuth mat_ token', 'mat_abcdef123', '[REDACTED]'],
    ['a Bearer value', 'authorization: Bearer abc.def.ghi', 'authorization: Bearer [REDACTED]'],
    ['a bearer value in any case', 'BEARER opaque-value', 'BEARER [REDACTED]'],
    ['an access_token query parameter', 'GET /sync?access_token=opaque123&since=s1', 'GET /sync?access_token=[REDACTED]&since=s1'],
    ['a password query parameter', 'POST /x?user=a&password=pw', 'POST /x?user=a&password=[REDACTED]'],
    ['an OAuth redirect code (not the state or the PKCE challenge)', 'GET /callback?code=abc123&state=st4te&code_challenge=ch', 'GET /callback?code=[REDACTED]&state=st4te&code_challenge=ch'],
    ['a code_verifier and a device_code parameter', '?code_verifier=v3r1f13r&device_code=dc1', '?code_verifier=[REDACTED]&device_code=[REDACTED]'],
    ['an OAuth mar_ refresh token', 'refresh mar_abcdef123 now', 'refresh [REDACTED] now'],
    ['a Bearer value inside quotes, and only the value', '-H "Authorization: Bearer abc.def~g+h/i=="', '-H "Authorization: Bearer [REDACTED]"'],
    ['an access_token parameter after a ;', 'GET /sync?a=1;access_token=opaque123;since=s1', 'GET /sync?a=1;access_token=[REDACTED];since=s1'],
  ])('masks %s', (_what, input, output) => {
    const r = new Redactor();
    r.add('hunter2-secret');
    expect(r.redact(input)).toBe(output);
  });

  it('leaves ordinary text alone', () => {
    const text = 'GET https://matrix.example.org/_matrix/client/v3/account/whoami → 200 (12 ms)';
    expect(new Redactor().redact(text)).toBe(text);
  });

  it.each([
    ['-H "Authorization: Bearer $TOKEN" http://localhost/x'],
    ["-H 'Authorization: Bearer ${TOKEN}'"],
    ['-H "Authorization: Bearer $(cat /run/bot/token)"'],
  ])('leaves a shell reference after Bearer alone (it is not a value): %s', (text) => {
    expect(new Redactor().redact(text)).toBe(text);
  });

  it('ignores values too short to be secrets, null and undefined', () => {
    const r = new Redactor();
    r.add('ab', null, undefined, '');
    expect(r.redact('abc ab')).toBe('abc ab');
  });

  it('masks a registered token that has no recognisable shape', () => {
    const r = new Redactor();
    r.add('opaque-token-0123');
    expect(r.redact('x opaque-token-0123 y')).toBe(`x ${REDACTED} y`);
  });
});

describe('redactUrl', () => {
  it.each([
    ['https://hs/_matrix/client/v3/login', 'https://hs/_matrix/client/v3/login'],
    ['https://hs/x?access_token=abc', 'https://hs/x?access_token=[REDACTED]'],
    ['https://hs/x?a=1&refresh_token=abc#frag', 'https://hs/x?a=1&refresh_token=[REDACTED]#frag'],
    ['https://hs/x?login_token=abc&b=2', 'https://hs/x?login_token=[REDACTED]&b=2'],
  ])('%s → %s', (url, out) => {
    expect(redactUrl(url)).toBe(out);
  });
});
