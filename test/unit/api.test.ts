import { describe, expect, it } from '@jest/globals';
import { nextPage } from '../../src/services/api.js';

describe('api --paginate: the next page parameter', () => {
  it.each([
    ['publicRooms', 'since'],
    ['/publicRooms', 'since'],
    ['publicRooms?limit=10', 'since'],
    ['/_matrix/client/v3/publicRooms', 'since'],
    ['/_matrix/client/v3/publicRooms?limit=5&server=example.org', 'since'],
    ['rooms/!r:x/members', 'from'],
    ['/_matrix/client/v3/notifications', 'from'],
    ['/_synapse/admin/v2/users', 'from'],
    ['notpublicRooms', 'from'],
  ])('a next_batch on %s goes back as %s', (path, param) => {
    expect(nextPage(path, { next_batch: 'B2' })).toEqual({ param, token: 'B2' });
  });

  it.each(['rooms/!r:x/messages', '/_matrix/client/v3/rooms/!r:x/messages?dir=b'])('/messages (%s) pages with end, back as from', (path) => {
    expect(nextPage(path, { end: 'E2' })).toEqual({ param: 'from', token: 'E2' });
  });
});
