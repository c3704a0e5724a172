import { hostname } from 'node:os';
import { MxsError, badResponse, cancelled, usageError } from '../errors.js';
import { login, loginFlows, setDeviceDisplayName, whoami, type LoginMethod } from '../matrix/client.js';
import { looksLikeUrl, resolveHomeserver } from '../matrix/discovery.js';
import type { LoginMethodName, SessionAuth, SessionRecord, SessionSecret, StorageKind, StoragePreference, TokenGrant } from '../model.js';
import {
  ADMIN_SCOPES,
  API_SCOPE,
  DEVICE_GRANT,
  authorizationUrl,
  confirmIssuer,
  deviceScope,
  discoverAuthMetadata,
  exchangeCode,
  newDeviceId,
  newPkce,
  newState,
  pollDeviceToken,
  refusePlainHttp,
  registerClient,
  scopeList,
  secretBearingEndpoints,
  startDeviceAuthorization,
  type AuthMetadata,
  type DeviceAuthorization,
} from '../oauth/client.js';
import { notableSkew, type Deps } from './deps.js';
import { clientCredentialsLogin } from './login-client-credentials.js';
import { remainingMs, secretFromGrant, withProfileLock } from './session.js';
import { chooseSecretStore } from './storage.js';
import { strategyFor } from './strategy.js';
import { printable } from '../printable.js';

export type MethodChoice = 'auto' | 'oauth' | 'password' | 'token';

export interface LoginInput {
  profile: string;
  server: string;
  /** `--method` (default auto: OAuth where the server publishes auth_metadata). */
  method?: MethodChoice;
  /** Matrix credentials given up front (`--password-stdin`, `--token-stdin`); else asked for when needed. */
  credentials?: LoginMethod;
  /** `--user`: the Matrix user for a password login; a login hint for OAuth. */
  user?: string;
  /** OAuth with the authorization-code grant + PKCE through the browser, instead of the device grant. */
  browser?: boolean;
  /** OAuth: the client credentials grant for this confidential client, instead of a user's login. */
  clientCredentials?: { clientId: string; clientSecret: string };
  /** OAuth: also ask for the admin scopes (the Matrix Authentication Service's and Synapse's admin APIs). */
  admin?: boolean;
  /** The `client_uri` registered for OAuth (default: mxs's homepage); MSC2966 wants https, not localhost. */
  clientUri?: string;
  deviceId?: string;
  deviceName?: string;
  refresh: boolean;
  insecure: boolean;
  storage: StoragePreference;
}

/** The interactive edge of a login, injected: prompts, the device code display, the browser. */
export interface LoginInteraction {
  /** Asks for the password (or login token) when the server needs one and none was given. */
  credentials(kind: 'password' | 'token', user: string | undefined): Promise<LoginMethod>;
  /** Shows the device code; returns what stops its live countdown. */
  showDeviceCode(code: DeviceAuthorization): () => void;
  /** Prints the authorization URL and opens it in a browser when one can be. */
  openAuthorizationUrl(url: string): Promise<void>;
  /** Ctrl-C: aborts a login that waits on the user. */
  signal?: AbortSignal;
  /** How long the browser flow waits for the redirect. */
  browserTimeoutMs?: number;
}

export interface LoginResult {
  profile: string;
  homeserver: string;
  /** null for a client-credentials session: it belongs to no user and no device. */
  userId: string | null;
  deviceId: string | null;
  method: LoginMethodName;
  issuer: string | null;
  expiresAt: string | null;
  expiresInMs: number | null;
  refreshable: boolean;
  storage: StorageKind;
}

/** MSC2966: `client_uri` must be https and not localhost; overridable for one's own deployment. */
export const CLIENT_URI = 'https://github.com/mxs-cli/mxs';

const noInteraction: LoginInteraction = {
  credentials: async () => {
    throw usageError('No password given.', 'Pipe it in with --password-stdin.');
  },
  showDeviceCode: () => () => {},
  openAuthorizationUrl: async () => {},
};

interface Granted {
  grant: TokenGrant;
  userId: string | null;
  deviceId: string | null;
  /** Stored where a refresh token goes when the grant gives none (client credentials: the client secret). */
  refreshCredential?: string;
  method: LoginMethodName;
  auth: SessionAuth;
}

export async function loginService(input: LoginInput, deps: Deps, io: LoginInteraction = noInteraction): Promise<LoginResult> {
  if (input.admin && (input.method === 'password' || input.method === 'token' || input.credentials)) {
    throw usageError('--admin is for OAuth 2.0 logins, not password or token logins.', 'An admin user of a server without OAuth 2.0 logs in as usual, without --admin.');
  }
  if (input.clientCredentials && (input.method === 'password' || input.method === 'token' || input.credentials || input.browser || input.admin)) {
    throw usageError('--client-credentials is a login of its own: not with a password, a login token, --browser or --admin.', 'Run: mxs login SERVER --client-credentials --client-id ID (the secret on standard input).');
  }
  const homeserver = await resolveHomeserver(input.server, input.insecure, deps.http);
  const { meta: oauth, flows } = await chooseOAuth(homeserver, input, deps);
  // Settle where the secrets go before sending any credential: a login whose tokens cannot be
  // stored would leave a live device on the server that nobody can use or log out.
  const { store, fallbackNotice } = await chooseSecretStore(input.storage, input.profile, deps);
  // The same for the config dir: read-only, full, a file where a directory belongs (exit 6).
  await deps.sessions.assertStateWritable(input.profile, { secrets: store.kind === 'file' });
  // And a session file this mxs may replace: never one a newer mxs wrote (exit 6).
  await deps.sessions.readReplaceable(input.profile);
  const granted = !oauth
    ? await matrixLogin(homeserver, input, deps, io, flows)
    : input.clientCredentials
      ? await clientCredentialsLogin(homeserver, oauth, input.clientCredentials, deps)
      : await oauthLogin(homeserver, oauth, input, deps, io);
  const { grant } = granted;
  deps.rememberSecret(grant.accessToken, grant.refreshToken);

  const secret = secretFromGrant(grant, granted.refreshCredential ?? null);
  const record: SessionRecord = {
    profile: input.profile,
    homeserver,
    userId: granted.userId,
    deviceId: granted.deviceId,
    issuedAt: secret.issuedAt,
    expiresAt: secret.expiresAt,
    refreshable: secret.refreshToken !== null,
    storage: store.kind,
    method: granted.method,
    auth: granted.auth,
    ...(input.insecure ? { insecure: true } : {}),
    clockSkewMs: notableSkew(deps),
  };
  const previous = await withProfileLock(input.profile, deps, async () => {
    const old = await deps.sessions.readReplaceable(input.profile);
    const oldSecret = old ? await deps.secretStores[old.storage].get(old.profile).catch(() => null) : null;
    await store.set(input.profile, secret);
    await deps.sessions.write(record);
    if (old && old.storage !== store.kind) await deps.secretStores[old.storage].delete(old.profile).catch(() => {});
    return old && oldSecret ? { record: old, secret: oldSecret } : null;
  });
  if (fallbackNotice) deps.notice(fallbackNotice);
  if (previous) await endReplacedSession(previous, record, deps);
  return {
    profile: input.profile,
    homeserver,
    userId: granted.userId,
    deviceId: granted.deviceId,
    method: granted.method,
    issuer: granted.auth.type === 'oauth' ? granted.auth.issuer : null,
    expiresAt: secret.expiresAt,
    expiresInMs: remainingMs(secret.expiresAt, deps.now()),
    refreshable: record.refreshable,
    storage: store.kind,
  };
}

/**
 * Contract (`--method`): `auto` uses OAuth 2.0 when the server publishes auth_metadata, unless a
 * password or login token was given on stdin for a server that still offers that login.
 */
async function chooseOAuth(homeserver: string, input: LoginInput, deps: Deps): Promise<{ meta: AuthMetadata | null; flows?: string[] }> {
  const method = input.method ?? 'auto';
  if (input.browser && (method === 'password' || method === 'token' || input.credentials)) {
    throw usageError('--browser is for OAuth 2.0 logins, not password or token logins.', 'Drop --browser, or use --method oauth.');
  }
  if (method === 'password' || method === 'token') return { meta: null };
  let flows: string[] | undefined;
  if (method === 'auto' && input.credentials) {
    flows = await loginFlows(homeserver, deps.http).catch(() => [] as string[]);
    if (flows.includes(input.credentials.type)) return { meta: null, flows };
  }
  const meta = await discoverAuthMetadata(homeserver, deps.http);
  if (meta) {
    if (input.credentials) {
      throw usageError(
        `${homeserver} no longer accepts ${input.credentials.type === 'm.login.password' ? 'passwords' : 'login tokens'}: it logs in through OAuth 2.0.`,
        'Run mxs login without --password-stdin/--token-stdin: it shows a code to approve in a browser (add --browser to open one here).',
      );
    }
    for (const [what, url] of secretBearingEndpoints(meta)) {
      refusePlainHttp(url, `the server's OAuth ${what}`, input.insecure, 'Ask the server admin for https://, or pass --insecure if you really mean it.');
    }
    await confirmIssuer(meta, deps.http);
    return { meta };
  }
  if (input.admin || input.clientCredentials) throw adminNeedsOAuth(homeserver);
  if (method === 'oauth') {
    throw usageError(`${homeserver} does not offer OAuth 2.0 login (no auth_metadata).`, 'Log in with a password: mxs login --method password');
  }
  return { meta: null, flows };
}

/** Admin scopes exist only with OAuth; elsewhere a Synapse admin's ordinary session is an admin session. */
function adminNeedsOAuth(homeserver: string): MxsError {
  return usageError(
    `${homeserver} does not use OAuth 2.0 (no auth_metadata): --admin and --client-credentials are for OAuth 2.0 servers.`,
    'An admin user logs in as usual, without --admin: the server knows who its admins are.',
  );
}

/**
 * The server would not grant the admin scopes: MAS refuses a user without `can_request_admin` (the
 * browser's Cancel comes back as access_denied), other servers answer invalid_scope.
 */
function adminRefused(err: MxsError): MxsError {
  if (err.code !== 'invalid_scope' && err.code !== 'access_denied') return err;
  return err.with({
    message: `The server refused the admin scopes: this user is not allowed to request admin (${err.code}${err.detail ? `: ${err.detail}` : ''}).`,
    hint: 'Ask the server admin to allow this user to request admin (MAS: can_request_admin), or log in without --admin.',
    kind: 'auth',
  });
}

async function matrixLogin(homeserver: string, input: LoginInput, deps: Deps, io: LoginInteraction, knownFlows?: string[]): Promise<Granted> {
  const wanted = input.credentials?.type ?? (input.method === 'token' ? 'm.login.token' : 'm.login.password');
  const flows = knownFlows ?? (await loginFlows(homeserver, deps.http).catch(() => [] as string[]));
  if (flows.length > 0 && !flows.includes(wanted)) {
    throw usageError(
      `${homeserver} does not accept ${wanted} (it offers: ${flows.join(', ')}).`,
      wanted === 'm.login.password' && flows.includes('m.login.token')
        ? 'Get a login token through single sign-on and use: mxs login --token-stdin'
        : 'This server needs a login method mxs does not support yet.',
    );
  }
  const credentials = input.credentials ?? (await io.credentials(wanted === 'm.login.token' ? 'token' : 'password', input.user));
  // Passwords never reach a message (no redaction needed); a login token is a token: remembered.
  if (credentials.type === 'm.login.token') deps.rememberSecret(credentials.token);
  const grant = await login(
    homeserver,
    { method: credentials, deviceId: input.deviceId, deviceName: input.deviceName ?? defaultDeviceName(), refreshToken: input.refresh },
    deps.http,
  ).catch((err: MxsError) => {
    if (err.kind !== 'auth') throw err;
    throw err.with({
      message:
        credentials.type === 'm.login.password'
          ? `Login refused for ${credentials.user} on ${new URL(homeserver).host}: wrong user name or password (${err.code}).`
          : `Login refused: the login token was not accepted (${err.code}).`,
      hint: credentials.type === 'm.login.password' ? 'Check the user name and password, then retry.' : 'Get a new login token and retry.',
    });
  });
  return {
    grant,
    userId: grant.userId,
    deviceId: grant.deviceId,
    method: credentials.type === 'm.login.password' ? 'password' : 'token',
    auth: { type: 'matrix' },
  };
}

/** Contract: new devices get a name that says what they are. */
export function defaultDeviceName(): string {
  return `mxs on ${hostname()}`;
}

/**
 * The Matrix Authentication Service grants a device scope only for `[A-Za-z0-9-]{10,}` (its policy,
 * policies/authorization_grant.rego); any other ID leaves the approval failing while the client
 * polls until the code expires, so it is refused here, before a client is registered.
 */
export function checkOAuthDeviceId(deviceId: string): void {
  if (OAUTH_DEVICE_ID.test(deviceId)) return;
  throw usageError(
    `--device-id "${printable(deviceId, { maxChars: 80, quoted: true })}" cannot be used with OAuth 2.0: the server accepts only 10 to 64 letters, digits and "-" (A-Z a-z 0-9 -).`,
    'Choose one such as --device-id mxs-laptop-01, or leave --device-id out to get a new one.',
  );
}
const OAUTH_DEVICE_ID = /^[A-Za-z0-9-]{10,64}$/;

async function oauthLogin(homeserver: string, meta: AuthMetadata, input: LoginInput, deps: Deps, io: LoginInteraction): Promise<Granted> {
  const deviceId = input.deviceId ?? newDeviceId();
  checkOAuthDeviceId(deviceId);
  const scope = [API_SCOPE, deviceScope(deviceId), ...(input.admin ? ADMIN_SCOPES : [])].join(' ');
  const aborted = () => {
    if (io.signal?.aborted) throw cancelled('Login cancelled; nothing was stored.');
  };
  let clientId: string;
  let grant: TokenGrant;
  try {
    if (input.browser) {
      ({ clientId, grant } = await browserGrant(meta, scope, input, deps, io));
    } else {
      if (!meta.deviceAuthorizationEndpoint) {
        throw usageError(`${homeserver} offers no device-code login.`, 'Log in through a browser on this machine: mxs login --browser');
      }
      clientId = await registerClient(meta, { clientName: 'mxs', clientUri: input.clientUri ?? CLIENT_URI, grantTypes: [DEVICE_GRANT, 'refresh_token'] }, deps.http);
      const code = await startDeviceAuthorization(meta, clientId, scope, deps.http, loginHint(input));
      deps.rememberSecret(code.deviceCode);
      const stop = io.showDeviceCode(code);
      try {
        grant = await pollDeviceToken(meta, clientId, code, { ...deps.http, sleep: deps.sleep }, io.signal);
      } finally {
        stop();
      }
    }
  } catch (err) {
    aborted();
    throw input.admin && err instanceof MxsError ? adminRefused(err) : err;
  }
  aborted();
  deps.rememberSecret(grant.accessToken, grant.refreshToken);
  const me = await whoami(homeserver, grant.accessToken, deps.http);
  if (me.deviceId !== undefined && me.deviceId !== deviceId) {
    throw badResponse(`The server bound the new token to device ${me.deviceId}, not the requested ${deviceId}.`);
  }
  // OAuth has no initial_device_display_name: name the device afterwards, best effort.
  await setDeviceDisplayName(homeserver, grant.accessToken, deviceId, input.deviceName ?? defaultDeviceName(), deps.http).catch(() => {});
  return {
    grant,
    userId: me.userId,
    deviceId,
    method: 'oauth',
    auth: {
      type: 'oauth',
      issuer: meta.issuer,
      clientId,
      tokenEndpoint: meta.tokenEndpoint,
      revocationEndpoint: meta.revocationEndpoint,
      ...(meta.accountManagementUri ? { accountManagementUri: meta.accountManagementUri } : {}),
      ...(grant.scope !== undefined ? { scopes: scopeList(grant.scope) } : {}),
    },
  };
}

async function browserGrant(meta: AuthMetadata, scope: string, input: LoginInput, deps: Deps, io: LoginInteraction): Promise<{ clientId: string; grant: TokenGrant }> {
  const { receiveAuthorizationCode, CALLBACK_PATH } = await import('../oauth/loopback.js');
  const state = newState();
  const pkce = newPkce();
  deps.rememberSecret(pkce.verifier);
  const receiver = await receiveAuthorizationCode({ state, issuer: meta.issuer, issRequired: meta.issParameterSupported, timeoutMs: io.browserTimeoutMs ?? 10 * 60_000, signal: io.signal });
  try {
    // RFC 8252 §7.3: the loopback redirect is registered without a port; any port is accepted.
    const clientId = await registerClient(
      meta,
      { clientName: 'mxs', clientUri: input.clientUri ?? CLIENT_URI, grantTypes: ['authorization_code', 'refresh_token'], redirectUris: [`http://127.0.0.1${CALLBACK_PATH}`] },
      deps.http,
    );
    const url = authorizationUrl(meta, { clientId, redirectUri: receiver.redirectUri, scope, state, challenge: pkce.challenge, loginHint: loginHint(input) });
    await io.openAuthorizationUrl(url);
    const code = await receiver.code;
    deps.rememberSecret(code);
    const grant = await exchangeCode(meta, { clientId, code, redirectUri: receiver.redirectUri, verifier: pkce.verifier }, deps.http);
    return { clientId, grant };
  } finally {
    receiver.close();
  }
}

/**
 * `--user` as an OAuth login hint (MSC4198: `mxid:@user:server`; the Matrix Authentication Service
 * ignores a bare localpart). A localpart is completed with the server name the user typed; for a
 * server given as a URL that is its host, the best guess there is without a login.
 */
function loginHint(input: LoginInput): string | undefined {
  const user = input.user?.trim();
  if (!user) return undefined;
  if (user.startsWith('@')) return `mxid:${user}`;
  const server = input.server.trim();
  return `mxid:@${user}:${looksLikeUrl(server) ? new URL(server).host : server.toLowerCase()}`;
}

/**
 * Contract: logging in again ends the previous session on the server once the new one is stored
 * (best effort, said on stderr), so no device is orphaned. Not when it is the same device: ending
 * it would end the new session too.
 */
async function endReplacedSession(previous: { record: SessionRecord; secret: SessionSecret }, current: SessionRecord, deps: Deps): Promise<void> {
  const { record, secret } = previous;
  if (record.homeserver === current.homeserver && record.deviceId === current.deviceId) return;
  try {
    await strategyFor(record.auth).end(record, secret, { all: false }, deps.http);
    deps.notice(`Ended the previous session of this profile on ${new URL(record.homeserver).host} (device ${record.deviceId}).`);
  } catch (err) {
    const e = err as MxsError;
    if (e.kind === 'auth') return; // the server had ended it already
    deps.notice(`Could not end the previous session (device ${record.deviceId}) on the server: ${e.message}`);
  }
}
