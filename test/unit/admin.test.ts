// mxs admin's use cases over a fake back end (the terminal's answer, all-or-nothing), the choice of
// back end when the MAS admin API is not there, and the MAS admin API's error decoder: which refusals
// are about rights (no refresh, the --admin hint) and which about the token.
import { MxsError } from '../../src/errors.js';
import { adminEndService } from '../../src/services/admin/admin.js';
import type { AdminBackend, AdminSession } from '../../src/services/admin/backend.js';
import { adminRightsHint, chooseAdminBackend, type AdminConnection } from '../../src/services/admin/choose.js';
import { decodeMasAdminError } from '../../src/services/admin/mas.js';
import type { Deps } from '../../src/services/deps.js';
import type { HttpResponse } from '../../src/http/transport.js';
import type { SessionRecord } from '../../src/model.js';

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

describe('the back end for an OAuth session when the MAS admin API is not exposed', () => {
  const record = (scopes?: string[]): SessionRecord => ({
    profile: 'p',
    homeserver: 'https://hs.example.org',
    userId: '@root:example.org',
    deviceId: 'DEV',
    issuedAt: '2026-01-01T00:00:00Z',
    expiresAt: null,
    refreshable: true,
    storage: 'file',
    method: 'oauth',
    auth: { type: 'oauth', issuer: 'https://auth.example.org/', clientId: 'C', tokenEndpoint: 'https://auth.example.org/oauth2/token', revocationEndpoint: 'https://auth.example.org/oauth2/revoke', ...(scopes ? { scopes } : {}) },
  });
  async function choose(scopes?: string[]) {
    const rec = record(scopes);
    const notices: string[] = [];
    const synapseUsed: string[] = [];
    // The MAS admin API answers 404: not exposed.
    const conn = { profile: 'p', record: rec, serverName: 'example.org', authed: async () => { throw new MxsError({ code: 'M_UNRECOGNIZED', message: 'not found', status: 404, kind: 'http' }); } } as unknown as AdminConnection;
    const backend = chooseAdminBackend(conn, { notice: (m: string) => notices.push(m) } as unknown as Deps, { synapse: () => (synapseUsed.push('synapse'), fake([])) });
    return { rec, notices, synapseUsed, backend };
  }

  it.each([[['urn:matrix:client:api:*', 'urn:mas:admin', 'urn:synapse:admin:*']], [undefined]])('scopes %j: the Synapse admin API, said in one line', async (scopes) => {
    const { notices, synapseUsed, backend } = await choose(scopes);
    await backend;
    expect(synapseUsed).toEqual(['synapse']);
    expect(notices).toEqual(['The Matrix Authentication Service admin API is not exposed at https://auth.example.org/api/admin/v1 (HTTP 404); using the Synapse admin API.']);
  });

  it('scopes without urn:synapse:admin:*: exit 4 saying so, the hint to log in with --admin; nothing sent to Synapse', async () => {
    const { rec, synapseUsed, backend } = await choose(['urn:matrix:client:api:*', 'urn:mas:admin']);
    const err = (await backend.catch((e: unknown) => e)) as MxsError;
    expect(err).toMatchObject({ exitCode: 4, message: 'The Matrix Authentication Service admin API is not exposed at https://auth.example.org/api/admin/v1 (HTTP 404), and this session lacks urn:synapse:admin:*, which the Synapse admin API needs.' });
    expect(err.hint).toEqual(adminRightsHint(rec));
    expect(synapseUsed).toEqual([]);
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
