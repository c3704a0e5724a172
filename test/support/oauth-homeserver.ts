// A real OAuth 2.0 homeserver for tests: Synapse 1.156.0 delegating auth (experimental_features.msc3861) to a real
// OAuth server, oidc-provider (test/support/oauth-provider.mjs), both on 127.0.0.1 over plain http.
//
// startOAuthHomeserver({synapse}) starts the provider as a child node process, then a Synapse from
// .cache/synapse-oauth-venv configured against it, and returns a handle. jest's globalSetup starts one per run
// and passes it to test files through env vars (OAUTH_ENV); test files wrap suites in describeWithOAuthHomeserver()
// and get the handle from oauthHomeserverFromEnv(), whose stop() does nothing (globalTeardown owns the server).
//
// The handle also plays the user in a browser: approveDevice() and authorize() drive the provider's dev
// login/consent HTML forms over plain HTTP with a cookie jar.
//
// Like synapse.ts, this module is loaded by globalSetup through require() and jest's '.ts' hook, where Node's
// ESM loader cannot resolve './synapse.js'. So: no top-level await, no import.meta, only node: builtins at run
// time, and the synapse module is passed in (`synapse` option) rather than imported.

import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type * as SynapseModule from './synapse.js';

/** The parts of test/support/synapse.ts this module uses (pass the module itself). */
export type SynapseApi = Pick<typeof SynapseModule, 'startSynapse' | 'ensureSynapseInstalled' | 'repoRoot' | 'OAUTH_SYNAPSE_INSTALL'>;

/** Env vars globalSetup sets for test workers. */
export const OAUTH_ENV = {
  /** Synapse's base URL, `http://127.0.0.1:PORT`. */
  url: 'MXS_TEST_OAUTH_URL',
  /** The provider's issuer, `http://127.0.0.1:PORT` (no trailing slash). */
  issuer: 'MXS_TEST_OAUTH_ISSUER',
  synapseVersion: 'MXS_TEST_OAUTH_SYNAPSE_VERSION',
  /** msc3861.admin_token: a bearer token Synapse treats as admin (admin API). */
  adminToken: 'MXS_TEST_OAUTH_ADMIN_TOKEN',
  /** The provider's test-control base URL (`{issuer}/_test`). */
  controlUrl: 'MXS_TEST_OAUTH_CONTROL_URL',
  /** Default access-token lifetime in seconds (input to globalSetup too; default 6). */
  accessTokenTTL: 'MXS_TEST_OAUTH_ACCESS_TOKEN_TTL',
  /** Why there is no OAuth homeserver (suites skip with it). */
  skipReason: 'MXS_TEST_OAUTH_SKIP_REASON',
} as const;

export interface StartOAuthHomeserverOptions {
  /** test/support/synapse.ts (see the header for why it is passed in). */
  synapse: SynapseApi;
  /** Access-token lifetime in seconds. Default 6. */
  accessTokenTTL?: number;
  /** Refresh-token lifetime in seconds. Default 14 days. */
  refreshTokenTTL?: number;
  /** Device-code lifetime in seconds. Default 600. */
  deviceCodeTTL?: number;
}

/** Counters kept by the provider (all clients, or one client's). */
export interface GrantCounts {
  /** Successful (200) token-endpoint answers by grant type: device_code, authorization_code, refresh_token. */
  grants: Record<string, number>;
  /** All token-endpoint requests by grant type. */
  attempts: Record<string, number>;
  /** Failed token-endpoint answers, keyed `<grant>:<error>` (e.g. `device_code:authorization_pending`). */
  errors: Record<string, number>;
  /** Successful revocation requests. */
  revocations: number;
}

export interface ProviderState extends GrantCounts {
  /** Introspection requests (Synapse's; not the handle's introspect()). */
  introspections: number;
  byClient: Record<string, GrantCounts>;
  config: ProviderTtls;
}

export interface ProviderTtls {
  accessTokenTTL: number;
  refreshTokenTTL: number;
  deviceCodeTTL: number;
}

export interface IntrospectionResult {
  active: boolean;
  /** 'AccessToken' (as Synapse is told) or 'RefreshToken' (looked up in the provider). */
  kind?: 'AccessToken' | 'RefreshToken';
  scope?: string;
  sub?: string;
  username?: string;
  client_id?: string;
  exp?: number;
  expires_in?: number;
}

export type ProviderRoute = 'token' | 'device_authorization' | 'revocation' | 'introspection' | 'registration' | 'authorization';

export interface FaultSpec {
  route: ProviderRoute;
  /** HTTP status to answer with (default 500). */
  status?: number;
  /** JSON body to answer with (default `{error: 'server_error'}`), e.g. `{error: 'slow_down'}` with status 400. */
  body?: Record<string, unknown>;
  /** Don't answer: hold the request for hangMs (omit for "until cleared/reset"), then answer 503. */
  hang?: boolean;
  hangMs?: number;
  /** How many matching requests get the fault (default: all until cleared). */
  times?: number;
  /** Only requests of this client_id. */
  clientId?: string;
  /** Only token requests of this grant type (device_code, authorization_code, refresh_token). */
  grantType?: string;
}

export interface BrowserResult {
  /** The last URL the "browser" loaded (for authorize: the loopback redirect_uri with its query). */
  url: string;
  status: number;
  body: string;
}

export interface OAuthHomeserverHandle {
  /** Synapse's base URL (`http://127.0.0.1:PORT`, no trailing slash). */
  baseUrl: string;
  /** The provider's issuer (`http://127.0.0.1:PORT`, no trailing slash). */
  issuer: string;
  /** Synapse's release, e.g. `1.156.0`. */
  synapseVersion: string;
  /** Bearer token Synapse treats as an admin (msc3861.admin_token). */
  adminToken: string;
  /** `{issuer}/_test`. */
  controlUrl: string;
  /** The provider's device verification page (`{issuer}/device`). */
  verificationUri: string;
  /** Default access-token lifetime, seconds. */
  accessTokenTTL: number;
  /**
   * Plays the user: opens the device verification page, enters `userCode`, confirms, logs in as `localpart`
   * through the dev login form, and grants (or, with deny, cancels at) consent. Throws when the provider shows
   * anything else (wrong code, expired code...), with the page's message.
   */
  approveDevice(userCode: string, localpart: string, opts?: { deny?: boolean }): Promise<void>;
  /**
   * Plays the browser for an authorization-code request: GETs `authorizationUrl`, logs in, consents (or cancels),
   * then follows the redirect to the client's redirect_uri (e.g. the loopback server of the CLI under test) and
   * returns that URL with what it answered.
   */
  authorize(authorizationUrl: string, localpart: string, opts?: { deny?: boolean }): Promise<BrowserResult>;
  /** The provider's counters; with clientId, that client's only (isolates test files running in parallel). */
  grantCounts(clientId?: string): Promise<GrantCounts>;
  /** Everything the provider reports (counters per client, current TTLs). */
  providerState(): Promise<ProviderState>;
  /** Zeroes the counters (one client's, or all plus faults and TTL overrides when clientId is omitted). */
  resetCounts(clientId?: string): Promise<void>;
  /** Successful revocations (one client's, or all). */
  revokedCount(clientId?: string): Promise<number>;
  /** What the provider's introspection says about an access token (refresh tokens: looked up directly). */
  introspect(token: string): Promise<IntrospectionResult>;
  /** Overrides lifetimes (seconds) for new tokens, for one client or (without clientId) everyone. */
  setTtls(ttls: Partial<ProviderTtls> & { clientId?: string }): Promise<ProviderTtls>;
  /** Makes a provider endpoint fail (status/body) or hang; see FaultSpec. */
  setFault(fault: FaultSpec): Promise<void>;
  /** Clears faults (of one route, or all) and releases hanging requests. */
  clearFaults(route?: ProviderRoute): Promise<void>;
  /** Device IDs of a user, through Synapse's admin API. */
  devices(userId: string): Promise<string[]>;
  /** `GET /_matrix/client/v3/account/whoami` with this access token. */
  whoami(accessToken: string): Promise<{ status: number; body: Record<string, unknown> }>;
  /** Stops Synapse and the provider (no-op on a handle from oauthHomeserverFromEnv). Idempotent. */
  stop(): Promise<void>;
}

const log = (msg: string): void => {
  process.stderr.write(`[oauth-homeserver] ${msg}\n`);
};

// ---------------------------------------------------------------------------------------------------------------
// Starting

interface ProviderProcess {
  child: ChildProcess;
  issuer: string;
  logFile: string;
  dir: string;
  stop(): Promise<void>;
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

function readTail(file: string, lines = 30): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no output)';
  }
}

const liveProviders = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of liveProviders) {
      try {
        child.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
  });
}

/** Waits for one IPC message from the provider that satisfies `accept`, or its exit, or the timeout. */
function nextMessage<T>(child: ChildProcess, accept: (m: unknown) => m is T, timeoutMs: number, what: string, logFile: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => done(new Error(`oidc-provider did not ${what} within ${timeoutMs / 1000}s\n${readTail(logFile)}`)), timeoutMs);
    const onMessage = (m: unknown): void => {
      if (accept(m)) done(undefined, m);
    };
    const onExit = (code: number | null, signal: NodeJS.Signals | null): void =>
      done(new Error(`oidc-provider exited (code ${code}, signal ${signal}) before it could ${what}\n${readTail(logFile)}`));
    const onError = (err: Error): void => done(err);
    function done(err?: Error, value?: T): void {
      clearTimeout(timer);
      child.off('message', onMessage);
      child.off('exit', onExit);
      child.off('error', onError);
      if (err) reject(err);
      else resolve(value as T);
    }
    child.on('message', onMessage);
    child.once('exit', onExit);
    child.once('error', onError);
  });
}

async function startProvider(
  synapse: SynapseApi,
  settings: { adminToken: string; synapseClientId: string; synapseClientSecret: string; ttls: ProviderTtls },
): Promise<ProviderProcess> {
  const dir = mkdtempSync(path.join(tmpdir(), 'mxs-oauth-provider-'));
  const logFile = path.join(dir, 'provider.log');
  const script = path.join(synapse.repoRoot(), 'test', 'support', 'oauth-provider.mjs');
  installExitHook();
  const child = spawn(process.execPath, [script], {
    cwd: synapse.repoRoot(),
    stdio: ['ignore', 'ignore', 'ignore', 'ipc'],
    env: {
      ...process.env,
      MXS_OAUTH_PROVIDER_CONFIG: JSON.stringify({ port: 0, logFile, ...settings, ...settings.ttls }),
    },
  });
  liveProviders.add(child);
  // Neither the child nor its IPC channel may keep the jest process alive; stop() and the exit hook end it.
  child.unref();
  child.channel?.unref();

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        let timer: NodeJS.Timeout | undefined;
        const timedOut = await Promise.race([
          exited(child).then(() => false),
          new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), 3000))),
        ]);
        clearTimeout(timer);
        if (timedOut) {
          child.kill('SIGKILL');
          await exited(child);
        }
      }
      liveProviders.delete(child);
      if (process.env.MXS_SYNAPSE_KEEP === '1') log(`kept ${dir}`);
      else rmSync(dir, { recursive: true, force: true });
    })();
    return stopping;
  };

  try {
    const ready = await nextMessage(
      child,
      (m): m is { ready: boolean; issuer?: string; error?: string } => typeof m === 'object' && m !== null && 'ready' in m,
      20_000,
      'start',
      logFile,
    );
    if (!ready.ready || !ready.issuer) throw new Error(`oidc-provider failed to start: ${ready.error}\n${readTail(logFile)}`);
    return { child, issuer: ready.issuer, logFile, dir, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * Starts the provider (a child node process on a free port), then Synapse 1.156 from .cache/synapse-oauth-venv
 * (installed when needed, ~40 s) delegating auth to it, then tells the provider where Synapse is.
 */
export async function startOAuthHomeserver(opts: StartOAuthHomeserverOptions): Promise<OAuthHomeserverHandle> {
  const { synapse } = opts;
  const started = Date.now();
  const ttls: ProviderTtls = {
    accessTokenTTL: opts.accessTokenTTL ?? 6,
    refreshTokenTTL: opts.refreshTokenTTL ?? 14 * 24 * 3600,
    deviceCodeTTL: opts.deviceCodeTTL ?? 600,
  };
  const adminToken = `mxs_admin_${randomBytes(24).toString('hex')}`;
  const synapseClientId = 'synapse';
  const synapseClientSecret = randomBytes(24).toString('hex');

  // The provider starts in well under a second; the venv may need installing first (~40 s). Do both at once.
  const [installed, providerStarted] = await Promise.allSettled([
    synapse.ensureSynapseInstalled(synapse.OAUTH_SYNAPSE_INSTALL),
    startProvider(synapse, { adminToken, synapseClientId, synapseClientSecret, ttls }),
  ]);
  if (installed.status === 'rejected' || providerStarted.status === 'rejected') {
    if (providerStarted.status === 'fulfilled') await providerStarted.value.stop();
    throw installed.status === 'rejected' ? installed.reason : (providerStarted as PromiseRejectedResult).reason;
  }
  const provider = providerStarted.value;
  let synapseHandle: Awaited<ReturnType<SynapseApi['startSynapse']>> | undefined;
  try {
    synapseHandle = await synapse.startSynapse({
      install: synapse.OAUTH_SYNAPSE_INSTALL,
      extraConfig: {
        // msc3861 refuses to start with password login, registration or Synapse's own token lifetimes.
        refreshable_access_token_lifetime: undefined,
        refresh_token_lifetime: undefined,
        password_config: { enabled: false },
        enable_registration: false,
        experimental_features: {
          msc3861: {
            enabled: true,
            issuer: provider.issuer,
            client_id: synapseClientId,
            client_auth_method: 'client_secret_post',
            client_secret: synapseClientSecret,
            admin_token: adminToken,
            account_management_url: `${provider.issuer}/account`,
          },
        },
      },
    });
    provider.child.send({ synapseUrl: synapseHandle.baseUrl });
    await nextMessage(
      provider.child,
      (m): m is { configured: true } => typeof m === 'object' && m !== null && 'configured' in m,
      10_000,
      'take the Synapse URL',
      provider.logFile,
    );
  } catch (err) {
    await synapseHandle?.stop().catch(() => undefined);
    await provider.stop();
    throw err;
  }
  const sh = synapseHandle;
  log(`OAuth homeserver up in ${((Date.now() - started) / 1000).toFixed(1)}s: Synapse ${sh.version} at ${sh.baseUrl}, issuer ${provider.issuer} (log ${provider.logFile})`);

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= Promise.all([sh.stop(), provider.stop()]).then(() => undefined);
    return stopping;
  };
  return makeHandle({
    baseUrl: sh.baseUrl,
    issuer: provider.issuer,
    synapseVersion: sh.version,
    adminToken,
    accessTokenTTL: ttls.accessTokenTTL,
    stop,
  });
}

// ---------------------------------------------------------------------------------------------------------------
// The handle (shared by the starter and oauthHomeserverFromEnv)

interface HandleCoordinates {
  baseUrl: string;
  issuer: string;
  synapseVersion: string;
  adminToken: string;
  accessTokenTTL: number;
  stop(): Promise<void>;
}

async function jsonRequest<T>(url: string, init: { method?: string; body?: unknown; token?: string } = {}): Promise<{ status: number; body: T }> {
  const res = await fetch(url, {
    method: init.method ?? (init.body === undefined ? 'GET' : 'POST'),
    headers: {
      ...(init.body === undefined ? {} : { 'content-type': 'application/json' }),
      ...(init.token ? { authorization: `Bearer ${init.token}` } : {}),
    },
    body: init.body === undefined ? undefined : JSON.stringify(init.body),
    signal: AbortSignal.timeout(15_000),
  });
  const text = await res.text();
  let body: unknown;
  try {
    body = text ? JSON.parse(text) : {};
  } catch {
    throw new Error(`${init.method ?? 'GET'} ${url} answered ${res.status} with non-JSON: ${text.slice(0, 300)}`);
  }
  return { status: res.status, body: body as T };
}

async function control<T>(controlUrl: string, route: string, body?: unknown): Promise<T> {
  const { status, body: answer } = await jsonRequest<T>(`${controlUrl}${route}`, { body });
  if (status !== 200) throw new Error(`test control ${route} answered ${status}: ${JSON.stringify(answer)}`);
  return answer;
}

function makeHandle(c: HandleCoordinates): OAuthHomeserverHandle {
  const controlUrl = `${c.issuer}/_test`;
  const verificationUri = `${c.issuer}/device`;
  const emptyCounts = (): GrantCounts => ({ grants: {}, attempts: {}, errors: {}, revocations: 0 });
  const providerState = (): Promise<ProviderState> => control<ProviderState>(controlUrl, '/state');
  return {
    baseUrl: c.baseUrl,
    issuer: c.issuer,
    synapseVersion: c.synapseVersion,
    adminToken: c.adminToken,
    controlUrl,
    verificationUri,
    accessTokenTTL: c.accessTokenTTL,
    approveDevice: (userCode, localpart, opts) => approveDevice(c.issuer, verificationUri, userCode, localpart, opts),
    authorize: (url, localpart, opts) => authorize(c.issuer, url, localpart, opts),
    providerState,
    async grantCounts(clientId) {
      const state = await providerState();
      if (clientId === undefined) {
        const { grants, attempts, errors, revocations } = state;
        return { grants, attempts, errors, revocations };
      }
      return state.byClient[clientId] ?? emptyCounts();
    },
    async resetCounts(clientId) {
      await control(controlUrl, '/reset', clientId === undefined ? {} : { clientId });
    },
    async revokedCount(clientId) {
      const state = await providerState();
      return clientId === undefined ? state.revocations : (state.byClient[clientId]?.revocations ?? 0);
    },
    introspect: (token) => control<IntrospectionResult>(controlUrl, '/introspect', { token }),
    setTtls: (ttls) => control<ProviderTtls>(controlUrl, '/config', ttls),
    async setFault(fault) {
      await control(controlUrl, '/fault', fault);
    },
    async clearFaults(route) {
      await control(controlUrl, '/fault/clear', route === undefined ? {} : { route });
    },
    async devices(userId) {
      const { status, body } = await jsonRequest<{ devices?: { device_id: string }[] }>(
        `${c.baseUrl}/_synapse/admin/v2/users/${encodeURIComponent(userId)}/devices`,
        { token: c.adminToken },
      );
      if (status !== 200) throw new Error(`admin devices of ${userId} answered ${status}: ${JSON.stringify(body)}`);
      return (body.devices ?? []).map((d) => d.device_id);
    },
    whoami: (accessToken) => jsonRequest<Record<string, unknown>>(`${c.baseUrl}/_matrix/client/v3/account/whoami`, { token: accessToken }),
    stop: c.stop,
  };
}

/** The shared OAuth homeserver that globalSetup started (from OAUTH_ENV); throws when there is none. stop() is a no-op. */
export function oauthHomeserverFromEnv(): OAuthHomeserverHandle {
  const env = process.env;
  const baseUrl = env[OAUTH_ENV.url];
  const issuer = env[OAUTH_ENV.issuer];
  const adminToken = env[OAUTH_ENV.adminToken];
  if (!baseUrl || !issuer || !adminToken) throw new Error(oauthSkipReason());
  return makeHandle({
    baseUrl,
    issuer,
    synapseVersion: env[OAUTH_ENV.synapseVersion] ?? '',
    adminToken,
    accessTokenTTL: Number(env[OAUTH_ENV.accessTokenTTL] ?? 6),
    stop: async () => undefined,
  });
}

/** The env vars that hand `handle` to test workers. */
export function oauthEnvFor(handle: OAuthHomeserverHandle): Record<string, string> {
  return {
    [OAUTH_ENV.url]: handle.baseUrl,
    [OAUTH_ENV.issuer]: handle.issuer,
    [OAUTH_ENV.synapseVersion]: handle.synapseVersion,
    [OAUTH_ENV.adminToken]: handle.adminToken,
    [OAUTH_ENV.controlUrl]: handle.controlUrl,
    [OAUTH_ENV.accessTokenTTL]: String(handle.accessTokenTTL),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// jest helpers

/** Why there is no shared OAuth homeserver (set by globalSetup), or a default. */
export function oauthSkipReason(): string {
  const env = process.env;
  if (env[OAUTH_ENV.skipReason]) return env[OAUTH_ENV.skipReason] as string;
  if (env.MXS_TEST_SYNAPSE === '0') return 'OAuth homeserver tests disabled by MXS_TEST_SYNAPSE=0';
  if (env.MXS_TEST_OAUTH === '0') return 'OAuth homeserver tests disabled by MXS_TEST_OAUTH=0';
  return `no test OAuth homeserver was started (${OAUTH_ENV.url} unset: is globalSetup test/support/global-setup.ts configured?)`;
}

/**
 * `describe` for suites that need the shared OAuth homeserver. Without one: locally it warns and skips the
 * suite; under CI=true it registers a failing test stating why, so CI never passes by skipping.
 */
export function describeWithOAuthHomeserver(name: string, fn: () => void): void {
  if (process.env[OAUTH_ENV.url]) {
    describe(name, fn);
    return;
  }
  const reason = oauthSkipReason();
  if (process.env.CI === 'true') {
    describe(name, () => {
      test('needs a test OAuth homeserver', () => {
        throw new Error(`No test OAuth homeserver under CI=true (a missing one must fail CI): ${reason}`);
      });
    });
    return;
  }
  console.warn(`Skipping "${name}": ${reason}`);
  describe.skip(name, fn);
}

// ---------------------------------------------------------------------------------------------------------------
// A minimal browser: cookie jar, manual redirects, HTML forms

interface Cookie {
  name: string;
  value: string;
  path: string;
  expires?: number;
}

class CookieJar {
  private cookies: Cookie[] = [];

  store(url: URL, setCookies: string[]): void {
    for (const header of setCookies) {
      const [pair, ...attrs] = header.split(';');
      const eq = pair.indexOf('=');
      if (eq <= 0) continue;
      const cookie: Cookie = { name: pair.slice(0, eq).trim(), value: pair.slice(eq + 1).trim(), path: defaultCookiePath(url) };
      for (const attr of attrs) {
        const [k, ...rest] = attr.split('=');
        const key = k.trim().toLowerCase();
        const value = rest.join('=').trim();
        if (key === 'path' && value.startsWith('/')) cookie.path = value;
        else if (key === 'max-age') cookie.expires = Date.now() + Number(value) * 1000;
        else if (key === 'expires' && cookie.expires === undefined) cookie.expires = Date.parse(value);
      }
      this.cookies = this.cookies.filter((c) => !(c.name === cookie.name && c.path === cookie.path));
      if (cookie.expires === undefined || cookie.expires > Date.now()) this.cookies.push(cookie);
    }
  }

  header(url: URL): string | undefined {
    const now = Date.now();
    const matching = this.cookies
      .filter((c) => (c.expires === undefined || c.expires > now) && pathMatches(url.pathname, c.path))
      .sort((a, b) => b.path.length - a.path.length);
    return matching.length ? matching.map((c) => `${c.name}=${c.value}`).join('; ') : undefined;
  }
}

function defaultCookiePath(url: URL): string {
  const p = url.pathname;
  const slash = p.lastIndexOf('/');
  return slash <= 0 ? '/' : p.slice(0, slash);
}

// RFC 6265 §5.1.4
function pathMatches(requestPath: string, cookiePath: string): boolean {
  if (requestPath === cookiePath) return true;
  if (!requestPath.startsWith(cookiePath)) return false;
  return cookiePath.endsWith('/') || requestPath[cookiePath.length] === '/';
}

interface Page {
  url: URL;
  status: number;
  /** Set for 3xx answers. */
  location?: URL;
  body: string;
}

class Browser {
  private readonly jar = new CookieJar();

  /** One request, no redirect following; cookies in and out. */
  async request(url: URL, init: { method?: string; form?: Record<string, string> } = {}): Promise<Page> {
    const headers: Record<string, string> = { accept: 'text/html,application/json;q=0.9,*/*;q=0.8', 'user-agent': 'mxs-test-browser' };
    const cookie = this.jar.header(url);
    if (cookie) headers.cookie = cookie;
    let body: string | undefined;
    if (init.form) {
      headers['content-type'] = 'application/x-www-form-urlencoded';
      body = new URLSearchParams(init.form).toString();
    }
    const res = await fetch(url, { method: init.method ?? 'GET', headers, body, redirect: 'manual', signal: AbortSignal.timeout(15_000) });
    this.jar.store(url, res.headers.getSetCookie());
    const location = res.status >= 300 && res.status < 400 && res.headers.get('location') ? new URL(res.headers.get('location') as string, url) : undefined;
    const text = await res.text();
    if (process.env.MXS_OAUTH_BROWSER_TRACE === '1') {
      const what = location ? `-> ${location.href}` : `"${parseHtml(text).title}"`;
      log(`browser: ${init.method ?? 'GET'} ${url.pathname}${url.search} ${init.form ? JSON.stringify(init.form) : ''} => ${res.status} ${what}`);
    }
    return { url, status: res.status, location, body: text };
  }
}

interface FormField {
  name: string;
  value: string;
  type: string;
}

interface Form {
  id?: string;
  action: string;
  method: string;
  /** Fields a submit sends: inputs (not buttons), in document order. */
  fields: FormField[];
  /** Submit buttons with a name (sent only when that button is "clicked"). */
  buttons: FormField[];
}

interface ParsedPage {
  title: string;
  forms: Form[];
  links: { href: string; text: string }[];
  /** Text of `<p class="red">` error messages (device pages) and `<pre>` lines (error page). */
  messages: string[];
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: '\u00a0' };

function decodeEntities(s: string): string {
  return s.replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+);/gi, (m, e: string) => {
    if (e[0] === '#') {
      const code = e[1] === 'x' || e[1] === 'X' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10);
      return Number.isFinite(code) ? String.fromCodePoint(code) : m;
    }
    return ENTITIES[e.toLowerCase()] ?? m;
  });
}

function parseAttributes(source: string): Record<string, string> {
  const attrs: Record<string, string> = {};
  const re = /([^\s"'>/=]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+)))?/g;
  for (let m = re.exec(source); m; m = re.exec(source)) {
    attrs[m[1].toLowerCase()] = decodeEntities(m[2] ?? m[3] ?? m[4] ?? '');
  }
  return attrs;
}

const stripTags = (html: string): string => decodeEntities(html.replace(/<[^>]*>/g, ' ')).replace(/\s+/g, ' ').trim();

/** Parses what a user would act on: forms (with fields, including ones outside the form via form="id"), links, title. */
export function parseHtml(html: string): ParsedPage {
  const clean = html.replace(/<!--[\s\S]*?-->/g, '').replace(/<(script|style)\b[^>]*>[\s\S]*?<\/\1\s*>/gi, '');
  const title = stripTags(/<title\b[^>]*>([\s\S]*?)<\/title>/i.exec(clean)?.[1] ?? '');
  const forms: Form[] = [];
  const orphans: { field: FormField; isButton: boolean; formId: string }[] = [];
  let current: Form | undefined;
  const tagRe = /<(\/?)([a-z][a-z0-9-]*)\b((?:[^>"']|"[^"]*"|'[^']*')*)>/gi;
  for (let m = tagRe.exec(clean); m; m = tagRe.exec(clean)) {
    const closing = m[1] === '/';
    const tag = m[2].toLowerCase();
    if (tag === 'form') {
      if (closing) current = undefined;
      else {
        const a = parseAttributes(m[3]);
        current = { id: a.id, action: a.action ?? '', method: (a.method ?? 'get').toLowerCase(), fields: [], buttons: [] };
        forms.push(current);
      }
      continue;
    }
    if (closing || (tag !== 'input' && tag !== 'button')) continue;
    const a = parseAttributes(m[3]);
    const type = (a.type ?? (tag === 'button' ? 'submit' : 'text')).toLowerCase();
    const isButton = tag === 'button' || type === 'submit' || type === 'image';
    if (!a.name && !isButton) continue;
    if ((type === 'checkbox' || type === 'radio') && !('checked' in a)) continue;
    const field: FormField = { name: a.name ?? '', value: a.value ?? '', type };
    const owner = a.form ? undefined : current;
    if (owner) (isButton ? owner.buttons : owner.fields).push(field);
    else if (a.form) orphans.push({ field, isButton, formId: a.form });
  }
  for (const { field, isButton, formId } of orphans) {
    const form = forms.find((f) => f.id === formId);
    if (form) (isButton ? form.buttons : form.fields).push(field);
  }
  const links = [...clean.matchAll(/<a\b((?:[^>"']|"[^"]*"|'[^']*')*)>([\s\S]*?)<\/a\s*>/gi)].map((m) => ({
    href: parseAttributes(m[1]).href ?? '',
    text: stripTags(m[2]),
  }));
  const messages = [
    ...[...clean.matchAll(/<p\b[^>]*class="red"[^>]*>([\s\S]*?)<\/p>/gi)].map((m) => stripTags(m[1])),
    ...[...clean.matchAll(/<pre\b[^>]*>([\s\S]*?)<\/pre>/gi)].map((m) => stripTags(m[1])),
  ];
  return { title, forms, links, messages };
}

function formValues(form: Form, overrides: Record<string, string> = {}, clicked?: FormField): Record<string, string> {
  const values: Record<string, string> = {};
  for (const f of form.fields) if (f.name) values[f.name] = f.value;
  if (clicked?.name) values[clicked.name] = clicked.value;
  return { ...values, ...overrides };
}

const hasField = (form: Form, name: string, value?: string): boolean =>
  form.fields.some((f) => f.name === name && (value === undefined || f.value === value));

function describePage(page: Page, parsed: ParsedPage): string {
  const detail = parsed.messages.length ? parsed.messages.join(' | ') : stripTags(page.body).slice(0, 300);
  return `${page.status} ${page.url.href} "${parsed.title}": ${detail}`;
}

const MAX_STEPS = 25;

/** What the dev login form accepts as a password: anything non-empty. */
const ANY_PASSWORD = 'any-password';

async function approveDevice(issuer: string, verificationUri: string, userCode: string, localpart: string, opts: { deny?: boolean } = {}): Promise<void> {
  const browser = new Browser();
  const origin = new URL(issuer).origin;
  let page = await browser.request(new URL(verificationUri));
  let codeSubmitted = false;
  for (let step = 0; step < MAX_STEPS; step++) {
    if (page.location) {
      if (page.location.origin !== origin) throw new Error(`device verification redirected away from the provider: ${page.location.href}`);
      page = await browser.request(page.location);
      continue;
    }
    const parsed = parseHtml(page.body);
    const submit = async (form: Form, overrides?: Record<string, string>, clicked?: FormField): Promise<Page> =>
      browser.request(new URL(form.action || page.url.href, page.url), { method: form.method.toUpperCase(), form: formValues(form, overrides, clicked) });

    if (page.status >= 400) throw new Error(`device verification failed: ${describePage(page, parsed)}`);
    if (/sign-in success/i.test(parsed.title)) {
      if (opts.deny) throw new Error(`device verification succeeded although deny was asked: ${describePage(page, parsed)}`);
      return;
    }
    const codeInput = parsed.forms.find((f) => hasField(f, 'user_code') && !hasField(f, 'confirm'));
    const confirm = parsed.forms.find((f) => hasField(f, 'confirm'));
    const login = parsed.forms.find((f) => hasField(f, 'login'));
    const consent = parsed.forms.find((f) => hasField(f, 'prompt', 'consent'));
    if (confirm) {
      page = await submit(confirm);
    } else if (codeInput && hasField(codeInput, 'xsrf') && codeInput.fields.find((f) => f.name === 'user_code')?.type === 'hidden') {
      // The auto-submitting form_post page ("Submitting Callback"): a browser runs its script.
      page = await submit(codeInput);
    } else if (codeInput) {
      if (codeSubmitted) {
        // The code page again: the provider's outcome message (an abort shows "interrupted").
        if (opts.deny && parsed.messages.some((m) => /interrupted/i.test(m))) return;
        throw new Error(`device verification ended on the code page: ${describePage(page, parsed)}`);
      }
      codeSubmitted = true;
      page = await submit(codeInput, { user_code: userCode });
    } else if (login) {
      page = await submit(login, { login: localpart, password: ANY_PASSWORD });
    } else if (consent) {
      page = await consentStep(browser, page, parsed, consent, opts.deny);
    } else {
      throw new Error(`device verification: unexpected page ${describePage(page, parsed)}`);
    }
  }
  throw new Error(`device verification did not finish within ${MAX_STEPS} steps`);
}

/** Grants consent (submits the form) or denies it (follows the page's Cancel link, the dev pages' abort). */
async function consentStep(browser: Browser, page: Page, parsed: ParsedPage, consent: Form, deny?: boolean): Promise<Page> {
  if (!deny) return browser.request(new URL(consent.action || page.url.href, page.url), { method: consent.method.toUpperCase(), form: formValues(consent) });
  const cancel = parsed.links.find((l) => /\/abort(\?|$)/.test(l.href) || /cancel/i.test(l.text));
  if (!cancel) throw new Error(`consent page has no Cancel link: ${describePage(page, parsed)}`);
  return browser.request(new URL(cancel.href, page.url));
}

async function authorize(issuer: string, authorizationUrl: string, localpart: string, opts: { deny?: boolean } = {}): Promise<BrowserResult> {
  const browser = new Browser();
  const origin = new URL(issuer).origin;
  let page = await browser.request(new URL(authorizationUrl));
  for (let step = 0; step < MAX_STEPS; step++) {
    if (page.location) {
      if (page.location.origin !== origin) {
        // Back to the client (its loopback redirect_uri): a browser loads it without the provider's cookies.
        const res = await fetch(page.location, { redirect: 'manual', signal: AbortSignal.timeout(15_000) });
        return { url: page.location.href, status: res.status, body: await res.text() };
      }
      page = await browser.request(page.location);
      continue;
    }
    const parsed = parseHtml(page.body);
    if (page.status >= 400) throw new Error(`authorization failed at the provider: ${describePage(page, parsed)}`);
    const login = parsed.forms.find((f) => hasField(f, 'login'));
    const consent = parsed.forms.find((f) => hasField(f, 'prompt', 'consent'));
    const formPost = parsed.forms.length === 1 && !login && !consent ? parsed.forms[0] : undefined;
    if (login) {
      page = await browser.request(new URL(login.action || page.url.href, page.url), {
        method: login.method.toUpperCase(),
        form: formValues(login, { login: localpart, password: ANY_PASSWORD }),
      });
    } else if (consent) {
      page = await consentStep(browser, page, parsed, consent, opts.deny);
    } else if (formPost && new URL(formPost.action, page.url).origin !== origin) {
      // response_mode=form_post back to the client.
      const target = new URL(formPost.action, page.url);
      const res = await fetch(target, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams(formValues(formPost)).toString(),
        redirect: 'manual',
        signal: AbortSignal.timeout(15_000),
      });
      return { url: target.href, status: res.status, body: await res.text() };
    } else {
      throw new Error(`authorization: unexpected page ${describePage(page, parsed)}`);
    }
  }
  throw new Error(`authorization did not finish within ${MAX_STEPS} steps`);
}
