// The one 401 → refresh → replay path (src/services/replay.ts), with a scripted token source and server.
import { describe, expect, it } from '@jest/globals';
import { refusesToken, sendWithReplay, type TokenSource } from '../../src/services/replay.js';

/** A source that hands out `t1`, then `t2` after a rejection (or null: no refresh token). */
function source(next: string | null) {
  const calls: string[] = [];
  const s: TokenSource<string> = {
    current: async () => (calls.push('current'), 't1'),
    afterRejection: async (refused) => (calls.push(`afterRejection(${refused})`), next),
  };
  return { s, calls };
}

describe('sendWithReplay', () => {
  it.each([
    ['accepted at once: one send', ['ok'], 't2', true, { answer: 'ok@t1', refused: false, replayed: false }, ['current'], ['t1']],
    ['refused, then accepted: one refresh, one replay', ['refused', 'ok'], 't2', true, { answer: 'ok@t2', refused: false, replayed: true }, ['current', 'afterRejection(t1)'], ['t1', 't2']],
    ['refused twice: the replay\'s answer is final', ['refused', 'refused'], 't2', true, { answer: 'refused@t2', refused: true, replayed: true }, ['current', 'afterRejection(t1)'], ['t1', 't2']],
    ['refused, no refresh token: handed on', ['refused'], null, true, { answer: 'refused@t1', refused: true, replayed: false }, ['current', 'afterRejection(t1)'], ['t1']],
    ['refused, body not replayable: refreshed for the next request, refusal handed on', ['refused'], 't2', false, { answer: 'refused@t1', refused: true, replayed: false }, ['current', 'afterRejection(t1)'], ['t1']],
  ] as const)('%s', async (_name, answers, next, replayable, result, calls, sentWith) => {
    const { s, calls: made } = source(next);
    const sent: string[] = [];
    const got = await sendWithReplay(
      s,
      async (token) => {
        const a = answers[sent.length]!;
        sent.push(token);
        return { answer: `${a}@${token}`, refused: a === 'refused' };
      },
      replayable,
    );
    expect(got).toMatchObject(result);
    expect(made).toEqual(calls);
    expect(sent).toEqual(sentWith);
  });

  it('a refresh that fails is the caller\'s error (the proxy answers 502, a command exits with it)', async () => {
    const s: TokenSource<string> = { current: async () => 't1', afterRejection: async () => Promise.reject(new Error('refresh failed')) };
    await expect(sendWithReplay(s, async () => ({ answer: 0, refused: true }))).rejects.toThrow('refresh failed');
  });
});

describe('refusesToken: only 401 M_UNKNOWN_TOKEN says the token died', () => {
  it.each([
    [401, '{"errcode":"M_UNKNOWN_TOKEN","error":"Token is not active"}', true],
    [401, Buffer.from('{"errcode":"M_UNKNOWN_TOKEN"}'), true],
    [401, '{"errcode":"M_MISSING_TOKEN"}', false],
    [403, '{"errcode":"M_UNKNOWN_TOKEN"}', false],
    [401, 'not json', false],
  ])('%i %s → %s', (status, body, refused) => {
    expect(refusesToken(status, body)).toBe(refused);
  });
});
