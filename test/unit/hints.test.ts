// Hints are data, rendered in one place (src/ui/hints.ts): a command in a hint names --profile NAME
// only when NAME is not the default profile, so that every hint can be run as it stands.
import { describe, expect, it } from '@jest/globals';
import { loginHint, type Hint } from '../../src/errors.js';
import { renderHint } from '../../src/ui/hints.js';

describe('renderHint', () => {
  it.each<[string, Hint, { profile?: string; defaultProfile: string | null }, string]>([
    ['plain advice as it is', 'Retry later.', { defaultProfile: 'default' }, 'Retry later.'],
    ['login, the default profile', loginHint('default'), { defaultProfile: 'default' }, 'Run: mxs login SERVER'],
    ['login with its server, another profile', loginHint('work', 'https://hs'), { defaultProfile: 'default' }, 'Run: mxs login https://hs --profile work'],
    ['login for the switched default', loginHint('work'), { defaultProfile: 'work' }, 'Run: mxs login SERVER'],
    ['login for `default` after a switch', loginHint('default'), { defaultProfile: 'work' }, 'Run: mxs login SERVER --profile default'],
    ['the invocation\'s profile when the hint names none', loginHint(), { profile: 'ci', defaultProfile: 'default' }, 'Run: mxs login SERVER --profile ci'],
    ['every profile named when the default is unknown', { next: 'refresh', profile: 'default' }, { defaultProfile: null }, 'Run: mxs refresh --profile default'],
    ['commands inside advice, with flags', ['Retry, or forget it only here: ', { next: 'logout', flags: '--local', profile: 'work' }], { defaultProfile: 'default' }, 'Retry, or forget it only here: mxs logout --local --profile work'],
  ])('%s', (_case, hint, view, text) => {
    expect(renderHint(hint, view)).toBe(text);
  });
});
