import { MxsError, Exit } from '../errors.js';
import { requestJson, type HttpDeps } from './http.js';
import type { TokenGrant } from '../model.js';
import { optionalBoolean, optionalLifetimeMs, optionalString, optionalToken, requireString, requireToken } from './validate.js';

// The Matrix client-server API calls mxs makes: plain functions over a base URL.

export type { TokenGrant } from '../model.js';

export interface LoginGrant extends TokenGrant {
  userId: string;
  deviceId: string;
}

export type LoginMethod = { type: 'm.login.password'; user: string; password: string } | { type: 'm.login.token'; token: string };

export interface LoginRequest {
  method: LoginMethod;
  deviceId?: string;
  deviceName?: string;
  refreshToken: boolean;
}

const CLIENT = '/_matrix/client';

export async function loginFlows(baseUrl: string, deps: HttpDeps): Promise<string[]> {
  const { body } = await requestJson(deps, { method: 'GET', url: `${baseUrl}${CLIENT}/v3/login` });
  if (!Array.isArray(body.flows)) return [];
  return body.flows.map((f) => (f as { type?: unknown })?.type).filter((t): t is string => typeof t === 'string');
}

/** §5.5.2 POST /login, asking for a refresh token (§5.7.1) unless told not to. */
export async function login(baseUrl: string, req: LoginRequest, deps: HttpDeps): Promise<LoginGrant> {
  const body: Record<string, unknown> =
    req.method.type === 'm.login.password'
      ? { type: 'm.login.password', identifier: { type: 'm.id.user', user: req.method.user }, password: req.method.password }
      : { type: 'm.login.token', token: req.method.token };
  if (req.refreshToken) body.refresh_token = true;
  if (req.deviceId) body.device_id = req.deviceId;
  if (req.deviceName) body.initial_device_display_name = req.deviceName;
  // Not retried: a login whose answer was lost may have created a device already.
  const res = await requestJson(deps, { method: 'POST', url: `${baseUrl}${CLIENT}/v3/login`, body, retry: false });
  const what = 'login';
  return {
    userId: requireString(res.body, 'user_id', what),
    deviceId: requireString(res.body, 'device_id', what),
    accessToken: requireToken(res.body, 'access_token', what),
    refreshToken: optionalToken(res.body, 'refresh_token', what),
    expiresInMs: optionalLifetimeMs(res.body, 'expires_in_ms', what),
    sentAt: res.sentAt,
  };
}

/** Refresh endpoints, newest first: v3 (spec v1.3+), v1 (Synapse 1.49–1.71), MSC2918's unstable path. */
export const REFRESH_PATHS = ['/v3/refresh', '/v1/refresh', '/unstable/org.matrix.msc2918/refresh'] as const;

export interface RefreshRequest {
  refreshToken: string;
  /** `--lifetime`: Famedly's extension; servers without it ignore the field. */
  lifetimeMs?: number;
  /** The endpoint that worked last time, tried first. */
  preferredPath?: string;
}

/** §5.7.1 POST /refresh, falling back across endpoint generations on M_UNRECOGNIZED. */
export async function refresh(baseUrl: string, req: RefreshRequest, deps: HttpDeps): Promise<TokenGrant & { path: string }> {
  const body: Record<string, unknown> = { refresh_token: req.refreshToken };
  if (req.lifetimeMs !== undefined) body['com.famedly.refresh_token_lifetime_ms'] = req.lifetimeMs;
  const paths = req.preferredPath ? [req.preferredPath, ...REFRESH_PATHS.filter((p) => p !== req.preferredPath)] : [...REFRESH_PATHS];
  for (const path of paths) {
    try {
      const res = await requestJson(deps, { method: 'POST', url: `${baseUrl}${CLIENT}${path}`, body });
      const what = 'refresh';
      return {
        accessToken: requireToken(res.body, 'access_token', what),
        refreshToken: optionalToken(res.body, 'refresh_token', what),
        expiresInMs: optionalLifetimeMs(res.body, 'expires_in_ms', what),
        sentAt: res.sentAt,
        path,
      };
    } catch (err) {
      if (!isUnrecognized(err)) throw err;
    }
  }
  throw new MxsError({
    code: 'M_UNRECOGNIZED',
    message: 'The homeserver does not offer token refresh (every refresh endpoint answered M_UNRECOGNIZED).',
    hint: 'Refresh tokens are disabled on this server; log in again when the token expires.',
    exitCode: Exit.auth,
  });
}

function isUnrecognized(err: unknown): boolean {
  const e = err as MxsError;
  return (e.status === 404 || e.status === 405) && (e.code === 'M_UNRECOGNIZED' || e.code === 'bad_response');
}

export interface Whoami {
  userId: string;
  deviceId: string | undefined;
  isGuest: boolean;
}

export async function whoami(baseUrl: string, accessToken: string, deps: HttpDeps): Promise<Whoami> {
  const { body } = await requestJson(deps, { method: 'GET', url: `${baseUrl}${CLIENT}/v3/account/whoami`, accessToken });
  const what = 'whoami';
  return {
    userId: requireString(body, 'user_id', what),
    deviceId: optionalString(body, 'device_id', what),
    isGuest: optionalBoolean(body, 'is_guest', what) ?? false,
  };
}

export async function logout(baseUrl: string, accessToken: string, all: boolean, deps: HttpDeps): Promise<void> {
  await requestJson(deps, { method: 'POST', url: `${baseUrl}${CLIENT}/v3/logout${all ? '/all' : ''}`, accessToken, body: {} });
}

/** §10.4 PUT /devices/{deviceId}: the device's display name. */
export async function setDeviceDisplayName(baseUrl: string, accessToken: string, deviceId: string, name: string, deps: HttpDeps): Promise<void> {
  await requestJson(deps, { method: 'PUT', url: `${baseUrl}${CLIENT}/v3/devices/${encodeURIComponent(deviceId)}`, accessToken, body: { display_name: name } });
}
