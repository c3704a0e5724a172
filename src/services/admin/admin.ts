import { cancelled, MxsError, usageError } from '../../errors.js';
import { ADMIN_SCOPES } from '../../oauth/client.js';
import { printable } from '../../printable.js';
import type { Deps } from '../deps.js';
import { adminDeviceDeletion, type AdminDeviceDeletion } from '../devices-account-page.js';
import type { AdminApi, AdminBackend, AdminSession, AdminToken, CreatedToken } from './backend.js';
import { adminConnection, chooseAdminBackend, type ChooseOptions } from './choose.js';

// `mxs admin …`: the use cases over whichever back end answered. The --json documents are the
// contract's, the same shape for both back ends.

export interface AdminSessionsResult {
  profile: string;
  api: AdminApi;
  user: string;
  sessions: AdminSession[];
}

export interface AdminEndedResult {
  profile: string;
  api: AdminApi;
  ended: string[];
}

export interface AdminTokensResult {
  profile: string;
  api: AdminApi;
  user: string;
  tokens: AdminToken[];
}

export interface AdminTokenResult extends CreatedToken {
  profile: string;
  api: AdminApi;
}

export async function openAdmin(profile: string, deps: Deps, opts: ChooseOptions): Promise<AdminBackend> {
  return chooseAdminBackend(await adminConnection(profile, deps), deps, opts);
}

/**
 * `devices delete`'s admin part on a server without client-API deletion: the admin API, when this is an
 * OAuth session granted an admin scope (`mxs login --admin`); null otherwise. Where the admin API cannot
 * do it (not exposed, rights refused), mxs says why and the account page takes over: nothing is lost.
 */
export async function adminDeviceDeletionFor(profile: string, deps: Deps, opts: ChooseOptions): Promise<AdminDeviceDeletion | null> {
  const record = await deps.sessions.read(profile);
  const scopes = record?.auth.type === 'oauth' ? (record.auth.scopes ?? []) : [];
  if (!scopes.some((s) => ADMIN_SCOPES.includes(s))) return null;
  return async (userId, deviceIds) => {
    try {
      return await adminDeviceDeletion(await openAdmin(profile, deps, opts))(userId, deviceIds);
    } catch (err) {
      if (!(err instanceof MxsError) || err.kind === 'cancelled' || err.kind === 'bug') throw err;
      deps.notice(`The admin API did not delete the devices (${printable(err.message, { maxChars: 200 })}); using the account page instead.`);
      return [];
    }
  };
}

export async function adminSessionsService(profile: string, user: string, active: boolean, backend: AdminBackend): Promise<AdminSessionsResult> {
  const who = await backend.resolveUser(user);
  return { profile, api: backend.api, user: who.userId, sessions: await backend.sessions(who, { active }) };
}

export interface EndInput {
  profile: string;
  ids: string[];
  user?: string | undefined;
  all: boolean;
  yes: boolean;
  /** Someone at a terminal can be asked. */
  interactive: boolean;
  /** Shows the sessions and asks; false = keep them. */
  confirm(sessions: AdminSession[]): Promise<boolean>;
}

/** All or nothing: every ID is found first; an unknown one is named and nothing is ended (exit 2). */
export async function adminEndService(input: EndInput, backend: AdminBackend): Promise<AdminEndedResult> {
  const ids = [...new Set(input.ids)];
  if (input.all && ids.length > 0) throw usageError('Give session IDs or --user USER --all, not both.', 'e.g. mxs admin sessions end ID, or: mxs admin sessions end --user @bob:example.org --all');
  if (input.all && input.user === undefined) throw usageError('--all needs --user USER: whose sessions to end.', 'e.g. mxs admin sessions end --user @bob:example.org --all');
  if (!input.all && ids.length === 0) throw usageError('No sessions to end: give their IDs, or --user USER --all.', 'See them with: mxs admin sessions USER');
  if (!input.yes && !input.interactive) throw usageError('Ending sessions needs confirmation, and standard input is not a terminal. Nothing was ended.', 'Pass --yes to end them without asking.');
  const targets = await targetsOf(input, ids, backend);
  if (targets.length === 0) return { profile: input.profile, api: backend.api, ended: [] };
  if (!input.yes && !(await input.confirm(targets))) throw cancelled('Nothing was ended.');
  return { profile: input.profile, api: backend.api, ended: await backend.endSessions(targets) };
}

async function targetsOf(input: EndInput, ids: string[], backend: AdminBackend): Promise<AdminSession[]> {
  let found: AdminSession[];
  let unknown: string[];
  if (input.user !== undefined) {
    const sessions = await backend.sessions(await backend.resolveUser(input.user), { active: true });
    if (input.all) return sessions.filter((s) => s.finishedAt === null);
    found = sessions.filter((s) => ids.includes(s.id));
    unknown = ids.filter((id) => !found.some((s) => s.id === id));
  } else if (backend.findSessions) {
    ({ found, unknown } = await backend.findSessions(ids));
  } else {
    throw usageError('The Synapse admin API finds sessions (devices) per user: say whose with --user USER.', 'e.g. mxs admin sessions end --user @bob:example.org DEVICEID');
  }
  if (unknown.length > 0) {
    throw usageError(`No active session has the ID ${unknown.map((id) => printable(id)).join(', ')}. Nothing was ended.`, 'See the sessions with: mxs admin sessions USER');
  }
  const finished = found.filter((s) => s.finishedAt !== null);
  if (finished.length > 0) throw usageError(`Session ${finished.map((s) => printable(s.id)).join(', ')} has already ended. Nothing was ended.`, 'See the sessions with: mxs admin sessions USER --active');
  return ids.map((id) => found.find((s) => s.id === id)!);
}

export async function adminTokenCreateService(
  profile: string,
  user: string,
  opts: { expiresInMs: number | null; name: string | null },
  backend: AdminBackend,
): Promise<AdminTokenResult> {
  const who = await backend.resolveUser(user);
  return { profile, api: backend.api, ...(await backend.createToken(who, opts)) };
}

function noTokenList(what: string): never {
  throw usageError(
    `The Synapse admin API has no ${what} of tokens: the tokens it makes create no device and are not listed anywhere.`,
    'A Synapse token ends when its holder logs out with it (POST /logout), or when it expires (--expires at create).',
  );
}

export async function adminTokenListService(profile: string, user: string, backend: AdminBackend): Promise<AdminTokensResult> {
  if (!backend.listTokens) noTokenList('list');
  const who = await backend.resolveUser(user);
  return { profile, api: backend.api, user: who.userId, tokens: await backend.listTokens(who) };
}

export async function adminTokenRevokeService(profile: string, id: string, backend: AdminBackend): Promise<AdminEndedResult> {
  if (!backend.revokeToken) noTokenList('list (and so no revocation)');
  await backend.revokeToken(id);
  return { profile, api: backend.api, ended: [id] };
}

export async function adminTokenRegenerateService(profile: string, id: string, expiresInMs: number | null, backend: AdminBackend): Promise<AdminTokenResult> {
  if (!backend.regenerateToken) noTokenList('list (and so no regeneration)');
  return { profile, api: backend.api, ...(await backend.regenerateToken(id, { expiresInMs })) };
}
