import { formatDuration } from '../duration.js';
import { MxsError, badResponse, notLoggedIn, usageError } from '../errors.js';
import { setDeviceDisplayName } from '../matrix/client.js';
import { deleteDevices, listDevices, type DeletionOutcome, type Device, type UiaChallenge } from '../matrix/devices.js';
import type { SessionRecord } from '../model.js';
import { printable } from '../printable.js';
import type { Deps } from './deps.js';
import { deleteWithoutClientApi, webPage, type AdminDeviceDeletion, type DeletionPage, type DeletionTiming } from './devices-account-page.js';
import { iso, refreshWhenExpired, withAccessToken } from './session.js';

// `mxs devices`, `devices delete`, `devices rename`: the account's devices (sessions), managed over
// the client-server API's device management (§10.4) and its user-interactive auth (§5.6).

export interface DeviceEntry {
  deviceId: string;
  displayName: string | null;
  /** ISO-8601; null when the server has no record of activity. */
  lastSeenAt: string | null;
  lastSeenIp: string | null;
  /** The device of this profile's session. */
  current: boolean;
}

export interface DevicesResult {
  profile: string;
  devices: DeviceEntry[];
}

export interface DevicesReport {
  result: DevicesResult;
  userId: string;
}

/** `mxs devices`: the current device first, then the most recently seen; never-seen ones last. */
export async function listDevicesService(profile: string, deps: Deps): Promise<DevicesReport> {
  const { value, session } = await withAccessToken(profile, deps, refreshWhenExpired, async (s) => {
    if (s.record.userId === null) throw usageError('A client-credentials session belongs to no user, so it has no devices.', 'See a user\'s sessions with: mxs admin sessions USER');
    return listDevices(s.record.homeserver, s.secret.accessToken, deps.http);
  });
  return { result: { profile, devices: entries(value, session.record.deviceId) }, userId: session.record.userId! };
}

function entries(devices: Device[], currentId: string | null): DeviceEntry[] {
  const byId = new Map(devices.map((d) => [d.deviceId, d])); // a server listing one twice shows it once
  return [...byId.values()]
    .map((d) => ({ deviceId: d.deviceId, displayName: d.displayName, lastSeenAt: d.lastSeenTs === null ? null : iso(d.lastSeenTs), lastSeenIp: d.lastSeenIp, current: d.deviceId === currentId }))
    .sort(
      (a, b) =>
        Number(b.current) - Number(a.current) ||
        (b.lastSeenAt ?? '').localeCompare(a.lastSeenAt ?? '') ||
        (a.deviceId < b.deviceId ? -1 : a.deviceId > b.deviceId ? 1 : 0),
    );
}

// ---------------------------------------------------------------------------------------------
// Deleting

export interface DeleteDevicesInput {
  profile: string;
  /** Devices named on the command line; or else `olderThanMs`. */
  deviceIds: string[];
  /** `--older-than`: every device last seen longer ago than this (never-seen ones are left alone). */
  olderThanMs?: number;
  /** `--yes`: delete without asking. */
  yes: boolean;
}

/** The user's side of a deletion: the terminal in the CLI, a script in tests. */
export interface DeleteInteraction {
  /** Someone at a terminal can answer: asked to confirm, and to say when the account page is done. */
  interactive: boolean;
  /** Aborts waits (Ctrl-C), rejecting with its reason. */
  signal?: AbortSignal;
  /** Shows what will be deleted and asks; false = keep them. */
  confirm(devices: DeviceEntry[], userId: string): Promise<boolean>;
  /** The account password, prompted for or read from standard input. */
  password(userId: string): Promise<string>;
  /** Shows the page where the user approves the deletion (OAuth accounts), and opens it when asked to. */
  showAccountPage(url: string, devices: DeviceEntry[]): Promise<void>;
  /** No deletion in the client API: shows each device's deletion page on the account site (and opens them when asked to). */
  showDeletionPages(pages: DeletionPage[]): Promise<void>;
  /** Interactive only: resolves once the user says the page is done (Enter). */
  waitUntilDone(): Promise<void>;
}

export interface DeleteDevicesResult {
  profile: string;
  deleted: string[];
  /** The user answered no at the confirmation: a choice, not a failure. */
  declined?: true;
}

/** Without a terminal, how often the deletion is retried (or the device list checked) while the user approves it on the account page, and for how long. */
export const ACCOUNT_PAGE_POLL_MS = 3000;
export const ACCOUNT_PAGE_WAIT_MS = 10 * 60_000;
export const DELETION_TIMING: DeletionTiming = { pollMs: ACCOUNT_PAGE_POLL_MS, waitMs: ACCOUNT_PAGE_WAIT_MS };

export interface DeleteDevicesOptions {
  timing: DeletionTiming;
  /**
   * The admin API (mxs admin's back end, through adminDeviceDeletion in ./devices-account-page.ts),
   * used instead of the account page where the client API cannot delete: resolves to null when the
   * session is not an admin one. Absent: never.
   */
  admin?: () => Promise<AdminDeviceDeletion | null>;
}

/**
 * `devices delete`: all or nothing. Every argument is checked (control characters, the current
 * device, IDs the account does not have) before anything is sent that could delete; then the
 * server's user-interactive auth is completed with a password (`m.login.password`) or on the
 * account-management page (`m.oauth`, spec v1.17).
 */
export async function deleteDevicesService(
  input: DeleteDevicesInput,
  deps: Deps,
  io: DeleteInteraction,
  opts: DeleteDevicesOptions = { timing: DELETION_TIMING },
): Promise<DeleteDevicesResult> {
  const { profile } = input;
  const ids = [...new Set(input.deviceIds)];
  if (ids.length > 0 && input.olderThanMs !== undefined) {
    throw usageError('Give device IDs or --older-than, not both.', 'For example: mxs devices delete ABCDEFGHIJ, or: mxs devices delete --older-than 30d');
  }
  if (ids.length === 0 && input.olderThanMs === undefined) {
    throw usageError('No devices to delete: give their IDs, or --older-than DURATION.', ['See them with: ', { next: 'devices', profile }]);
  }
  ids.forEach((id) => checkDeviceId(id));
  const record = await deps.sessions.read(profile);
  if (!record) throw notLoggedIn(profile);
  if (record.deviceId !== null && ids.includes(record.deviceId)) {
    throw usageError(
      `Device ${printable(record.deviceId)} is the one this session (profile ${profile}) runs on; mxs never deletes it. Nothing was deleted.`,
      ['To end this session, run: ', { next: 'logout', profile }],
    );
  }
  if (!input.yes && !io.interactive) {
    throw usageError('Deleting devices needs confirmation, and standard input is not a terminal. Nothing was deleted.', 'Pass --yes to delete without asking.');
  }

  const listed = await listDevicesService(profile, deps);
  const { devices } = listed.result;
  const targets = input.olderThanMs === undefined ? named(devices, ids, profile) : inactive(devices, input.olderThanMs, deps);
  if (targets.length === 0) return { profile, deleted: [] };
  if (!input.yes && !(await io.confirm(targets, listed.userId))) return { profile, deleted: [], declined: true };

  const targetIds = targets.map((d) => d.deviceId);
  const attempt = async (auth: Record<string, unknown> | undefined, retry: boolean): Promise<DeletionOutcome> => {
    io.signal?.throwIfAborted();
    const { value } = await withAccessToken(profile, deps, refreshWhenExpired, (s) =>
      deleteDevices(s.record.homeserver, s.secret.accessToken, targetIds, auth, deps.http, retry),
    );
    return value;
  };
  // Trying is how mxs learns whether the client API deletes here: this first request carries no
  // credentials, so it only draws the server's challenge, or 404 M_UNRECOGNIZED where there is none.
  const first = await attempt(undefined, true);
  const done = { profile, deleted: targetIds };
  if (first.done) return done;
  if (first.unsupported === true) {
    await deleteWithoutClientApi({ profile, record, userId: listed.userId, targets, timing: opts.timing, admin: opts.admin }, deps, io);
    return done;
  }
  const challenge = first.challenge;
  const stage = (name: string) => challenge.flows.some((f) => f.length === 1 && f[0] === name);
  if (stage('m.oauth')) {
    await approveOnAccountPage(challenge, record, targets, attempt, deps, io, opts.timing);
    return done;
  }
  if (stage('m.login.password')) {
    await confirmWithPassword(challenge, listed.userId, attempt, deps, io);
    return done;
  }
  const offered = challenge.flows.map((f) => f.join(' + ')).join(', ') || 'nothing mxs knows';
  throw usageError(
    `To delete devices the server asks for ${printable(offered)}, which mxs cannot complete. Nothing was deleted.`,
    "Delete them from a Matrix client such as Element, or on your server's account page.",
  );
}

type Attempt = (auth: Record<string, unknown> | undefined, retry: boolean) => Promise<DeletionOutcome>;

/** §5.6.1 "Password-based" stage: the account's password, once; a wrong one is exit 4, nothing deleted. */
async function confirmWithPassword(challenge: UiaChallenge, userId: string, attempt: Attempt, deps: Deps, io: DeleteInteraction): Promise<void> {
  const password = await io.password(userId);
  deps.rememberSecret(password);
  const auth = { type: 'm.login.password', identifier: { type: 'm.id.user', user: userId }, password, ...sessionOf(challenge) };
  const outcome = await attempt(auth, false);
  if (outcome.done) return;
  const refused = challengeOf(outcome);
  if (refused.errcode !== null) {
    throw new MxsError({
      code: refused.errcode,
      message: `The server refused the password of ${userId}${refused.error ? `: ${refused.error}` : ''} (${refused.errcode}). Nothing was deleted.`,
      hint: 'Check the password and run the command again.',
      kind: 'auth',
      status: 401,
      detail: refused.error ?? undefined,
    });
  }
  throw usageError(
    'The server asks for more than a password to delete devices, which mxs cannot complete. Nothing was deleted.',
    "Delete them from a Matrix client such as Element, or on your server's account page.",
  );
}

/**
 * The `m.oauth` stage (spec v1.17): the user approves on the account-management page, then the same
 * request is retried with `auth: {session}`. On a terminal the user says when (Enter); otherwise
 * retried every few seconds, for a bounded time.
 */
async function approveOnAccountPage(
  challenge: UiaChallenge,
  record: SessionRecord,
  targets: DeviceEntry[],
  attempt: Attempt,
  deps: Deps,
  io: DeleteInteraction,
  timing: DeletionTiming,
): Promise<void> {
  const url = accountPageUrl(challenge, record, targets);
  await io.showAccountPage(url, targets);
  const deadline = deps.now() + timing.waitMs;
  let session = sessionOf(challenge);
  for (;;) {
    if (io.interactive) await io.waitUntilDone();
    else await deps.sleep(timing.pollMs, io.signal);
    const outcome = await attempt({ ...session }, true);
    if (outcome.done) return;
    session = { ...session, ...sessionOf(challengeOf(outcome)) };
    if (io.interactive) {
      deps.notice('The server has not seen the deletion approved yet: finish on the page, then press Enter (Ctrl-C gives up).');
    } else if (deps.now() >= deadline) {
      throw new MxsError({
        code: 'timeout',
        message: `The deletion was not approved on the account page within ${formatDuration(timing.waitMs)}.`,
        hint: `Approve it at ${url}, then run the command again.`,
        kind: 'auth',
      });
    }
  }
}

const sessionOf = (c: UiaChallenge): { session?: string } => (c.session === null ? {} : { session: c.session });

/** The challenge of an unfinished deletion; a server that stops knowing the endpoint halfway is not one mxs can follow. */
function challengeOf(outcome: Exclude<DeletionOutcome, { done: true }>): UiaChallenge {
  if (outcome.unsupported === true) throw badResponse('The server stopped recognizing the device deletion request halfway through.');
  return outcome.challenge;
}

/**
 * The stage's own URL when it is a web page mxs may open; else the session's account-management
 * page (MSC4191 actions). A server-given URL is opened in a browser, so nothing but https (or http to
 * a loopback host, or anywhere for an --insecure session) is accepted from it.
 */
function accountPageUrl(challenge: UiaChallenge, record: SessionRecord, targets: DeviceEntry[]): string {
  const given = (challenge.params['m.oauth'] as { url?: unknown } | undefined)?.url;
  if (typeof given === 'string' && webPage(given, record.insecure === true)) return given;
  const base = record.auth.type === 'oauth' ? record.auth.accountManagementUri : undefined;
  if (base && webPage(base, true)) {
    const page = new URL(base);
    if (targets.length === 1) {
      page.searchParams.set('action', 'org.matrix.device_delete');
      page.searchParams.set('device_id', targets[0]!.deviceId);
    } else {
      page.searchParams.set('action', 'org.matrix.devices_list');
    }
    return page.toString();
  }
  throw badResponse('To delete devices the server asks for approval on its account page, but names no usable page.');
}

/** Devices named on the command line, all of which must exist. */
function named(devices: DeviceEntry[], ids: string[], profile: string): DeviceEntry[] {
  const byId = new Map(devices.map((d) => [d.deviceId, d]));
  const unknown = ids.filter((id) => !byId.has(id));
  if (unknown.length > 0) {
    // Synapse's /delete_devices silently skips IDs it does not know, so its answer cannot say: check here.
    throw usageError(
      `The account has no device ${unknown.map((id) => printable(id)).join(', ')}. Nothing was deleted.`,
      ["See the account's devices with: ", { next: 'devices', profile }],
    );
  }
  return ids.map((id) => byId.get(id)!);
}

/** Devices last seen before now − olderThanMs; never the current one, never one without recorded activity. */
function inactive(devices: DeviceEntry[], olderThanMs: number, deps: Deps): DeviceEntry[] {
  const cutoff = deps.now() - olderThanMs;
  const old = devices.filter((d) => d.lastSeenAt !== null && Date.parse(d.lastSeenAt) < cutoff);
  const unseen = devices.filter((d) => d.lastSeenAt === null && !d.current).length;
  if (old.some((d) => d.current)) deps.notice('This session\'s own device matches too; it is kept (end it with mxs logout).');
  if (unseen > 0) deps.notice(`${unseen} device${unseen === 1 ? '' : 's'} with no recorded activity ${unseen === 1 ? 'is' : 'are'} left alone.`);
  return old.filter((d) => !d.current);
}

// ---------------------------------------------------------------------------------------------
// Renaming

export interface RenameDeviceResult {
  profile: string;
  deviceId: string;
  displayName: string;
}

/** `devices rename ID NAME`: PUT /devices/{id}. */
export async function renameDeviceService(profile: string, deviceId: string, name: string, deps: Deps): Promise<RenameDeviceResult> {
  checkDeviceId(deviceId);
  if (name.trim() === '') throw usageError('NAME is empty.', 'Give the new name, e.g.: mxs devices rename ABCDEFGHIJ "work laptop"');
  if (CONTROL.test(name)) {
    throw usageError(`The name "${printable(name)}" contains control characters; nothing was renamed.`, 'Give a name of printable characters.');
  }
  try {
    await withAccessToken(profile, deps, refreshWhenExpired, (s) => setDeviceDisplayName(s.record.homeserver, s.secret.accessToken, deviceId, name, deps.http));
  } catch (err) {
    const e = err as MxsError;
    if (e.status === 404 && e.code === 'M_NOT_FOUND') {
      throw e.with({
        kind: 'usage',
        message: `The account has no device ${printable(deviceId)}. Nothing was renamed.`,
        hint: ["See the account's devices with: ", { next: 'devices', profile }],
      });
    }
    if (e.status === 400) {
      throw e.with({ kind: 'usage', message: `The server refused the name: ${e.detail ?? e.code} (HTTP 400 ${e.code}).`, hint: 'Try a shorter or simpler name.' });
    }
    throw e;
  }
  return { profile, deviceId, displayName: name };
}

// Control characters (C0, DEL, C1, line and paragraph separators), as src/printable.ts escapes them.
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

function checkDeviceId(id: string): void {
  if (id === '') throw usageError('A device ID is empty.', 'See the account\'s devices with: mxs devices');
  if (CONTROL.test(id)) {
    throw usageError(`The device ID "${printable(id)}" contains control characters, so it cannot be one; nothing was sent.`, 'See the account\'s devices with: mxs devices');
  }
}
