// mxs admin's use cases over a fake back end (the terminal's answer, all-or-nothing), and the MAS admin
// API's error decoder: which refusals are about rights (no refresh, the --admin hint) and which about the token.
import { adminEndService } from '../../src/services/admin/admin.js';
import type { AdminBackend, AdminSession } from '../../src/services/admin/backend.js';
import { decodeMasAdminError } from '../../src/services/admin/mas.js';
import type { HttpResponse } from '../../src/http/transport.js';

const session = (id: string, finishedAt: string | null = null): AdminSession => ({ kind: 'compat', id, deviceId: id, client: null, createdAt: null, lastActiveAt: null, lastActiveIp: null, userAgent: null, finishedAt });

function fake(sessions: AdminSession[]): AdminBackend & { ended: string[] } {
  const ended: string[] = [];
  return {
    api: 'mas',
    ended,
    resolveUser: async (u) => ({ userId: u, adminId: 'ULID' }),
    sessions: async () => sessions,
    findSessions: async (ids) => ({ found: sessions.filter((s) => ids.includes(s.id)), unknown: ids.filter((id) => !sessions.some((s) => s.id === id)) }),
    endSessions: async (s) => {
      ended.push(...s.map((x) => x.id));
      return s.map((x) => x.id);
    },
    createToken: async () => {
      throw new Error('unused');
    },
  };
}

const input = (over: Partial<Parameters<typeof adminEndService>[0]>) => ({ profile: 'p', ids: [], all: false, yes: false, interactive: true, confirm: async () => true, ...over });

describe('admin sessions end', () => {
  it('asks on a terminal: a no ends nothing (exit 130), a yes ends them', async () => {
    const backend = fake([session('A'), session('B')]);
    const shown: string[][] = [];
    await expect(adminEndService(input({ ids: ['A'], confirm: async (s) => (shown.push(s.map((x) => x.id)), false) }), backend)).rejects.toMatchObject({ exitCode: 130 });
    expect(backend.ended).toEqual([]);
    expect(shown).toEqual([['A']]);
    expect(await adminEndService(input({ ids: ['A', 'B'] }), backend)).toEqual({ profile: 'p', api: 'mas', ended: ['A', 'B'] });
  });

  it('refuses a session that has already ended, and ends none of the others', async () => {
    const backend = fake([session('A'), session('B', '2026-01-01T00:00:00Z')]);
    await expect(adminEndService(input({ ids: ['A', 'B'], yes: true }), backend)).rejects.toMatchObject({ exitCode: 2, message: expect.stringContaining('Session B has already ended') });
    expect(backend.ended).toEqual([]);
  });

  it.each([
    [{ all: true }, /--all needs --user/],
    [{ all: true, user: 'bob', ids: ['A'] }, /not both/],
    [{}, /No sessions to end/],
  ])('%j is a usage error', async (over, message) => {
    await expect(adminEndService(input(over), fake([session('A')]))).rejects.toMatchObject({ exitCode: 2, message: expect.stringMatching(message) });
  });
});

describe('the MAS admin API error decoder', () => {
  const answer = (status: number, json: unknown): HttpResponse => ({ status, headers: {}, contentType: 'application/json', text: JSON.stringify(json), json: json as Record<string, unknown>, sentAt: 0, host: 'auth.example.org' });

  it.each([
    [401, 'Missing urn:mas:admin scope', 'M_FORBIDDEN', 4],
    [401, 'Invalid access token', 'M_UNKNOWN_TOKEN', 4],
    [404, 'User with username "x" not found', 'M_NOT_FOUND', 3],
    [503, 'Unavailable', 'bad_response', 3],
  ])('HTTP %i "%s" → %s (exit %i), the title kept as the detail', (status, title, code, exitCode) => {
    const e = decodeMasAdminError(answer(status, { errors: [{ title }] }), 0);
    expect(e).toMatchObject({ code, exitCode, status, detail: title, message: `auth.example.org: ${title} (HTTP ${status}).` });
    expect(e.retryable).toBe(status >= 500);
  });
});
