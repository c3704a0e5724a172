import { formatDuration } from '../duration.js';
import { Exit, MxsError, cancelled } from '../errors.js';
import { isLoopbackHost } from '../http/loopback.js';
import { listDevices } from '../matrix/devices.js';
import type { SessionRecord } from '../model.js';
import { discoverAuthMetadata } from '../oauth/client.js';
import { printable } from '../printable.js';
import type { AdminBackend } from './admin/backend.js';
import type { Deps } from './deps.js';
import type { DeleteInteraction, DeviceEntry } from './devices.js';
import { refreshWhenExpired, withAccessToken } from './session.js';

// Deleting devices on a server whose client API cannot: Synapse delegating to the Matrix
// Authentication Service serves neither /delete_devices nor DELETE /devices/{id}. The user deletes
// each device on the account-management page (MSC4191 deep links), or an admin session ends them
// through the admin API; either way mxs then watches GET /devices until they are gone.

/** How often the device list is checked while the user deletes on the account page, and for how long. */
export interface DeletionTiming {
  pollMs: number;
  waitMs: number;
}

/**
 * The admin API's part (mxs admin's back end): ends the sessions of these devices of `userId` and
 * returns the device IDs it ended; those it could not are left to the account page.
 */
export type AdminDeviceDeletion = (userId: string, deviceIds: string[]) => Promise<string[]>;

/** An admin back end (src/services/admin/backend.ts) as the deletion's admin part: the devices' active sessions, ended. */
export function adminDeviceDeletion(backend: AdminBackend): AdminDeviceDeletion {
  return async (userId, deviceIds) => {
    const user = await backend.resolveUser(userId);
    const sessions = (await backend.sessions(user, { active: true })).filter((s) => s.deviceId !== null && s.finishedAt === null && deviceIds.includes(s.deviceId));
    if (sessions.length === 0) return [];
    await backend.endSessions(sessions);
    return [...new Set(sessions.map((s) => s.deviceId!))];
  };
}

export interface DeletionPage {
  device: DeviceEntry;
  url: string;
}

/** MSC4191's action for ending one device; `org.matrix.session_end` is its earlier name, which older MAS releases list. */
const DELETE_ACTIONS = ['org.matrix.device_delete', 'org.matrix.session_end'];

/**
 * Each device's deletion page: the server's `account_management_uri` with `action` and `device_id`,
 * when its metadata lists the action; else null. The metadata is read now rather than from the
 * session, so that it also works for a password (compatibility) session and follows the server.
 */
export async function deletionPages(record: SessionRecord, targets: DeviceEntry[], deps: Deps): Promise<DeletionPage[] | null> {
  const meta = await discoverAuthMetadata(record.homeserver, deps.http);
  const base = meta?.accountManagementUri;
  const action = DELETE_ACTIONS.find((a) => meta?.accountManagementActions.includes(a));
  if (!base || !action || !webPage(base, record.insecure === true)) return null;
  return targets.map((device) => {
    const url = new URL(base);
    url.searchParams.set('action', action);
    url.searchParams.set('device_id', device.deviceId);
    return { device, url: url.toString() };
  });
}

/** A page mxs may print and open: https, or http to a loopback host (anywhere for an --insecure session). */
export function webPage(raw: string, insecure: boolean): boolean {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return false;
  }
  if (url.protocol === 'https:') return true;
  if (url.protocol !== 'http:') return false;
  return insecure || isLoopbackHost(url.hostname);
}

export interface WithoutClientApi {
  profile: string;
  record: SessionRecord;
  userId: string;
  targets: DeviceEntry[];
  timing: DeletionTiming;
  /** The admin API, when the session is an admin one (null or absent: it is not, or mxs cannot tell). */
  admin?: () => Promise<AdminDeviceDeletion | null>;
}

/** The devices deleted through the admin API or on the account page, then seen gone from GET /devices. */
export async function deleteWithoutClientApi(job: WithoutClientApi, deps: Deps, io: DeleteInteraction): Promise<void> {
  const { targets } = job;
  const admin = job.admin ? await job.admin() : null;
  const ended = admin ? await admin(job.userId, targets.map((d) => d.deviceId)) : [];
  const left = targets.filter((d) => !ended.includes(d.deviceId));
  let pages: DeletionPage[] = [];
  if (left.length > 0) {
    pages = (await deletionPages(job.record, left, deps)) ?? [];
    if (pages.length === 0) {
      throw new MxsError({
        code: 'M_UNRECOGNIZED',
        message: `${new URL(job.record.homeserver).host} offers no device deletion through the client API (M_UNRECOGNIZED), and its metadata names no account page that deletes devices. Nothing was deleted.`,
        hint: "Delete them from a Matrix client such as Element, or ask the server's admin.",
        exitCode: Exit.usage,
      });
    }
    await io.showDeletionPages(pages);
  }
  await waitUntilGone(job, pages, deps, io);
}

/** GET /devices now, then every pollMs until none of the targets is listed; bounded by waitMs (exit 4), Ctrl-C (130). */
async function waitUntilGone(job: WithoutClientApi, pages: DeletionPage[], deps: Deps, io: DeleteInteraction): Promise<void> {
  const deadline = deps.now() + job.timing.waitMs;
  let left = job.targets.map((d) => d.deviceId);
  const gone = () => job.targets.map((d) => d.deviceId).filter((id) => !left.includes(id));
  for (;;) {
    const { value } = await withAccessToken(job.profile, deps, refreshWhenExpired, (s) => listDevices(s.record.homeserver, s.secret.accessToken, deps.http));
    const listed = new Set(value.map((d) => d.deviceId));
    const before = left.length;
    left = left.filter((id) => listed.has(id));
    if (left.length === 0) return;
    if (left.length < before) deps.notice(`Deleted so far: ${gone().map((id) => printable(id)).join(', ')}; waiting for ${left.map((id) => printable(id)).join(', ')}.`);
    if (deps.now() >= deadline) {
      const still = pages.filter((p) => left.includes(p.device.deviceId));
      throw new MxsError({
        code: 'timeout',
        message: `${left.length === 1 ? `Device ${printable(left[0]!)} is` : `Devices ${left.map((id) => printable(id)).join(', ')} are`} still there after ${formatDuration(job.timing.waitMs)} of waiting for the deletion on the account page.`,
        hint: [still.length === 1 ? `Delete it at ${still[0]!.url}, then check with: ` : 'Delete them on the account page (the links above), then check with: ', { next: 'devices', profile: job.profile }],
        kind: 'auth',
      });
    }
    try {
      await deps.sleep(job.timing.pollMs, io.signal);
    } catch (err) {
      const done = gone();
      if (io.signal?.aborted && done.length > 0) throw cancelled(`Cancelled while waiting; deleted meanwhile: ${done.map((id) => printable(id)).join(', ')}.`);
      throw err;
    }
  }
}
