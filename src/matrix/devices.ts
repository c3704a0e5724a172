import { MxsError, badResponse } from '../errors.js';
import { send, type HttpResponse } from '../http/transport.js';
import { decodeMatrixError, requestJson, type HttpDeps } from './http.js';

// Device management (client-server API §10.4 "Device management") and the user-interactive auth
// (§5.6 "User-interactive authentication API") that deleting devices asks for.

const CLIENT = '/_matrix/client/v3';
/** Later than any real clock reading (year ~2255), earlier than what Date can print. */
const MAX_TIMESTAMP_MS = 9e12;

export interface Device {
  deviceId: string;
  displayName: string | null;
  /** ms since the epoch; null when the server has no record of activity. */
  lastSeenTs: number | null;
  lastSeenIp: string | null;
}

/** GET /devices: every device of the token's user. */
export async function listDevices(baseUrl: string, accessToken: string, deps: HttpDeps): Promise<Device[]> {
  const { body } = await requestJson(deps, { method: 'GET', url: `${baseUrl}${CLIENT}/devices`, accessToken });
  if (!Array.isArray(body.devices)) throw badResponse('The server\'s devices response has no "devices" list.');
  return body.devices.map(parseDevice);
}

function parseDevice(raw: unknown, i: number): Device {
  const d = raw as Record<string, unknown>;
  const what = `The server's devices response, entry ${i + 1},`;
  if (typeof d !== 'object' || d === null || Array.isArray(d)) throw badResponse(`${what} is not an object.`);
  if (typeof d.device_id !== 'string' || d.device_id === '') throw badResponse(`${what} has no valid "device_id".`);
  const text = (key: string): string | null => {
    const v = d[key];
    if (v === undefined || v === null) return null;
    if (typeof v !== 'string') throw badResponse(`${what} has an invalid "${key}".`);
    return v;
  };
  const ts = d.last_seen_ts;
  if (ts !== undefined && ts !== null && !(typeof ts === 'number' && Number.isSafeInteger(ts) && ts >= 0 && ts <= MAX_TIMESTAMP_MS)) {
    throw badResponse(`${what} has an invalid "last_seen_ts".`);
  }
  return { deviceId: d.device_id, displayName: text('display_name'), lastSeenTs: typeof ts === 'number' ? ts : null, lastSeenIp: text('last_seen_ip') };
}

/** A user-interactive auth challenge: a 401 carrying `flows` (§5.6.2). */
export interface UiaChallenge {
  session: string | null;
  /** The stages of each flow the server offers. */
  flows: string[][];
  params: Record<string, unknown>;
  completed: string[];
  /** Set when the last attempt at a stage failed (e.g. M_FORBIDDEN for a wrong password). */
  errcode: string | null;
  error: string | null;
}

/**
 * `unsupported`: the server has no device deletion in the client API (404/405 M_UNRECOGNIZED: Synapse
 * delegating to the Matrix Authentication Service registers no /delete_devices).
 */
export type DeletionOutcome = { done: true } | { done: false; unsupported: true } | { done: false; unsupported?: false; challenge: UiaChallenge };

/** Carries a challenge through the transport, which only knows errors for non-2xx answers. */
class ChallengeAnswer extends MxsError {
  constructor(readonly challenge: UiaChallenge) {
    super({ code: 'uia', message: 'The server asks for user-interactive auth.', kind: 'auth', status: 401 });
  }
}

/**
 * POST /delete_devices. The server answers a request without (enough) `auth` with a challenge,
 * returned here rather than thrown; any other error is the usual MxsError. `retry`: safe to repeat
 * (a request without credentials is; one carrying a password is not, to keep failed attempts at one).
 */
export async function deleteDevices(
  baseUrl: string,
  accessToken: string,
  devices: string[],
  auth: Record<string, unknown> | undefined,
  deps: HttpDeps,
  retry: boolean,
): Promise<DeletionOutcome> {
  const body: Record<string, unknown> = { devices };
  if (auth) body.auth = auth;
  try {
    await send(deps, { method: 'POST', url: `${baseUrl}${CLIENT}/delete_devices`, accessToken, json: body, retry }, decodeDeletionError);
    return { done: true };
  } catch (err) {
    if (err instanceof ChallengeAnswer) return { done: false, challenge: err.challenge };
    const e = err as MxsError;
    if ((e.status === 404 || e.status === 405) && e.code === 'M_UNRECOGNIZED') return { done: false, unsupported: true };
    throw err;
  }
}

function decodeDeletionError(res: HttpResponse, now: number): MxsError {
  const json = res.json;
  if (res.status !== 401 || !json || !Array.isArray(json.flows)) return decodeMatrixError(res, now);
  const strings = (v: unknown): string[] => (Array.isArray(v) ? v.filter((s): s is string => typeof s === 'string') : []);
  const flows = json.flows.map((f) => strings((f as { stages?: unknown } | null)?.stages)).filter((stages) => stages.length > 0);
  const params = typeof json.params === 'object' && json.params !== null && !Array.isArray(json.params) ? (json.params as Record<string, unknown>) : {};
  return new ChallengeAnswer({
    session: typeof json.session === 'string' && json.session !== '' ? json.session : null,
    flows,
    params,
    completed: strings(json.completed),
    errcode: typeof json.errcode === 'string' ? json.errcode : null,
    error: typeof json.error === 'string' ? json.error : null,
  });
}
