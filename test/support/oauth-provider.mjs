// The OAuth 2.0 server of the test OAuth homeserver (see oauth-homeserver.ts): oidc-provider on 127.0.0.1, which
// Synapse 1.156 (experimental_features.msc3861) delegates auth to. Runs as a child process of the jest process
// that started it (never inside a jest worker), so jest's workers and this server do not share an event loop.
//
// Input: JSON in env MXS_OAUTH_PROVIDER_CONFIG: {port (0 = any free one), adminToken, synapseClientId,
// synapseClientSecret, accessTokenTTL, refreshTokenTTL, deviceCodeTTL (seconds), logFile}. Protocol on the IPC
// channel: it sends {ready: true, issuer} once listening; the parent then sends {synapseUrl} (Synapse needs the
// issuer in its config before it starts, so its URL comes second) and gets {configured: true}. It exits when the
// channel closes (the parent is gone, however it went).
//
// What Synapse needs from it (found when this harness was first run against Synapse 1.156):
// - introspection (RFC 7662) for Synapse's confidential client only, access tokens only, with the Matrix scopes,
//   `username` (the localpart) and a relative `expires_in`, the only expiry Synapse honours;
// - the user and the device to exist in Synapse before the token is used: provisioned through Synapse's admin API
//   (msc3861.admin_token) whenever an access token is issued;
// - opaque access tokens whose scope keeps `urn:matrix:client:api:*` and `urn:matrix:client:device:<ID>`: only
//   resource-indicator scopes survive into the token, so Synapse is the (default) resource server and
//   getResourceServerInfo allows the api scope plus the device scope of the request.
//
// Test control, plain JSON under /_test/ (loopback callers only):
//   GET  /_test/state       {grants, attempts, errors, revocations, introspections, byClient: {<client_id>: {grants,
//                           attempts, errors, revocations}}, config, faults}. grants/attempts are keyed by short
//                           grant type (device_code, authorization_code, refresh_token); grants counts 200 answers;
//                           errors is keyed "<grant>:<error>".
//   POST /_test/reset       {} zeroes everything, clears faults and TTL overrides; {clientId} that client's counts only
//   POST /_test/introspect  {token} -> {active, kind?, scope?, exp?, expires_in?, sub?, username?, client_id?}
//                           (access tokens exactly as Synapse is told; refresh tokens looked up directly)
//   POST /_test/config      {clientId?, accessTokenTTL?, refreshTokenTTL?, deviceCodeTTL?} (seconds) -> the TTLs
//   POST /_test/fault       {route: token|device_authorization|revocation|introspection|registration|authorization,
//                            status?: 500, body?: {...}, hang?: true, hangMs?: n, times?: n, clientId?, grantType?}
//   POST /_test/fault/clear {route?}  (all routes when omitted); releases hanging requests (they answer 503)
// GET /account is a stub account-management page (account_management_uri in the metadata).
import { appendFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { randomBytes } from 'node:crypto';

import Provider, { errors } from 'oidc-provider';

const config = JSON.parse(process.env.MXS_OAUTH_PROVIDER_CONFIG || '{}');
const { adminToken, synapseClientId, synapseClientSecret, logFile } = config;
/** Synapse's base URL (no trailing slash): the resource server, and where users and devices are provisioned. */
let synapseUrl;
const startupTtls = {
  accessTokenTTL: config.accessTokenTTL ?? 6,
  refreshTokenTTL: config.refreshTokenTTL ?? 14 * 24 * 3600,
  deviceCodeTTL: config.deviceCodeTTL ?? 600,
};
let ttls = { ...startupTtls };
/** client_id -> partial TTL overrides */
const clientTtls = new Map();
const ttlFor = (key, client) => clientTtls.get(client?.clientId)?.[key] ?? ttls[key];

const API_SCOPES = ['urn:matrix:client:api:*', 'urn:matrix:org.matrix.msc2967.client:api:*'];
const DEVICE_PREFIXES = ['urn:matrix:client:device:', 'urn:matrix:org.matrix.msc2967.client:device:'];
// MSC2967: a device ID in a scope is made of unreserved URI characters.
const DEVICE_ID = /^[A-Za-z0-9._~-]+$/;
// Matrix user ID grammar for localparts (spec, "User Identifiers").
const LOCALPART = /^[a-z0-9._=\-/+]+$/;

function log(message) {
  const line = `${new Date().toISOString()} ${message}\n`;
  if (logFile) appendFileSync(logFile, line);
  else process.stderr.write(line);
}
// oidc-provider's own warnings (dev interactions, Node 20) go to the log file too.
console.warn = (...args) => log(args.join(' '));
console.info = console.warn;
console.log = console.warn;

const shortGrant = (gt) => (gt === 'urn:ietf:params:oauth:grant-type:device_code' ? 'device_code' : gt || 'unknown');
const deviceIdOf = (scopeToken) => {
  const prefix = DEVICE_PREFIXES.find((p) => scopeToken.startsWith(p));
  return prefix ? scopeToken.slice(prefix.length) : undefined;
};

// ------------------------------------------------------------------------------------------------------------
// Counters and faults

const emptyCounts = () => ({ grants: {}, attempts: {}, errors: {}, revocations: 0 });
let counts;
let byClient;
function resetCounts() {
  counts = { ...emptyCounts(), introspections: 0 };
  byClient = new Map();
}
resetCounts();
const bump = (obj, key) => {
  obj[key] = (obj[key] ?? 0) + 1;
};
const clientCounts = (clientId) => {
  const id = clientId || 'unknown';
  if (!byClient.has(id)) byClient.set(id, emptyCounts());
  return byClient.get(id);
};

/** route -> [{status, body, hang, hangMs, times, clientId, grantType}] */
const faults = new Map();
/** Pending hangs, released by reset or fault/clear. */
const hangs = new Set();
function releaseHangs() {
  for (const release of hangs) release();
  hangs.clear();
}

// ------------------------------------------------------------------------------------------------------------
// Synapse admin API: users and devices must exist before Synapse accepts a delegated token.

async function synapseAdmin(method, path, body) {
  const res = await fetch(`${synapseUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
    body: JSON.stringify(body ?? {}),
    signal: AbortSignal.timeout(15_000),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`Synapse admin ${method} ${path} answered ${res.status}: ${text}`);
}

async function provision(localpart, deviceId) {
  const userId = encodeURIComponent(`@${localpart}:localhost`);
  // PUT creates the user or leaves an existing one as it is; POST devices is idempotent.
  await synapseAdmin('PUT', `/_synapse/admin/v2/users/${userId}`, {});
  if (deviceId) await synapseAdmin('POST', `/_synapse/admin/v2/users/${userId}/devices`, { device_id: deviceId });
}

// ------------------------------------------------------------------------------------------------------------
// The provider

/** Scopes of the request: its `scope` parameter, or at the token endpoint the code's / refresh token's. */
function requestedScopes(ctx) {
  const scopes = new Set();
  const add = (s) => {
    if (typeof s === 'string') for (const t of s.split(' ')) if (t) scopes.add(t);
  };
  add(ctx?.oidc?.params?.scope);
  const entities = ctx?.oidc?.entities ?? {};
  for (const name of ['DeviceCode', 'AuthorizationCode', 'RefreshToken']) add(entities[name]?.scope);
  return scopes;
}

function createProvider(issuer) {
  return new Provider(issuer, {
    clients: [
      {
        client_id: synapseClientId,
        client_secret: synapseClientSecret,
        grant_types: [],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'client_secret_post',
      },
    ],
    cookies: { keys: [randomBytes(32).toString('hex')] },
    async findAccount(_ctx, id) {
      if (typeof id !== 'string' || !LOCALPART.test(id)) return undefined;
      return { accountId: id, claims: async () => ({ sub: id, preferred_username: id }) };
    },
    // Matrix clients don't ask for offline_access: tokens live on their own, not with the browser session.
    expiresWithSession: async () => false,
    // The default issues refresh tokens only with offline_access; Matrix clients get one whenever allowed.
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    async extraTokenClaims(_ctx, token) {
      if (token.kind !== 'AccessToken' || !token.accountId) return undefined;
      const devices = [...new Set(String(token.scope ?? '').split(' ').map(deviceIdOf).filter(Boolean))];
      await provision(token.accountId, devices[0]);
      // Synapse maps a new `sub` to a user through `username` (the localpart).
      return { username: token.accountId };
    },
    discovery: {
      account_management_uri: `${issuer}/account`,
      account_management_actions_supported: ['org.matrix.devices_list', 'org.matrix.device_view', 'org.matrix.device_delete'],
    },
    features: {
      devInteractions: { enabled: true },
      deviceFlow: { enabled: true },
      revocation: { enabled: true },
      registration: { enabled: true, initialAccessToken: false },
      introspection: {
        enabled: true,
        // Only Synapse may introspect, and only access tokens.
        allowedPolicy: async (_ctx, client, token) => client.clientId === synapseClientId && token.kind === 'AccessToken',
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => synapseUrl,
        useGrantedResource: async () => true,
        async getResourceServerInfo(ctx, resourceIndicator) {
          if (resourceIndicator !== synapseUrl) throw new errors.InvalidTarget();
          const devices = [...requestedScopes(ctx)].filter((s) => deviceIdOf(s) !== undefined);
          const ids = new Set(devices.map(deviceIdOf));
          for (const id of ids) if (!DEVICE_ID.test(id)) throw new errors.InvalidScope('invalid device ID in scope', `urn:matrix:client:device:${id}`);
          if (ids.size > 1) throw new errors.InvalidScope('only one device scope may be requested', devices.join(' '));
          return { scope: [...API_SCOPES, ...devices].join(' '), accessTokenFormat: 'opaque', audience: synapseUrl };
        },
      },
    },
    ttl: {
      AccessToken: (_ctx, _token, client) => ttlFor('accessTokenTTL', client),
      RefreshToken: (_ctx, _token, client) => ttlFor('refreshTokenTTL', client),
      DeviceCode: (_ctx, _code, client) => ttlFor('deviceCodeTTL', client),
      AuthorizationCode: 60,
      Interaction: 3600,
      Session: 24 * 3600,
      Grant: 14 * 24 * 3600,
      IdToken: 3600,
    },
    routes: {
      authorization: '/auth',
      code_verification: '/device',
      device_authorization: '/device/auth',
      introspection: '/token/introspection',
      registration: '/reg',
      revocation: '/token/revocation',
      token: '/token',
    },
  });
}

const routePaths = {
  token: '/token',
  device_authorization: '/device/auth',
  revocation: '/token/revocation',
  introspection: '/token/introspection',
  registration: '/reg',
  authorization: '/auth',
};
const routeOf = (ctx) => Object.keys(routePaths).find((r) => ctx.path === routePaths[r]);

async function readText(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

async function readJson(ctx) {
  const text = await readText(ctx.req);
  return text ? JSON.parse(text) : {};
}

function install(provider, issuer) {
  provider.on('server_error', (_ctx, err) => log(`server_error: ${err?.stack ?? err}`));
  provider.on('grant.error', (_ctx, err) => log(`grant.error: ${err?.error ?? ''} ${err?.error_description ?? ''} ${err?.error_detail ?? ''}`));

  async function introspectForTest(token) {
    // Access tokens: exactly what Synapse would be told.
    const res = await fetch(`${issuer}${routePaths.introspection}`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-mxs-test-control': '1' },
      body: new URLSearchParams({ token, token_type_hint: 'access_token', client_id: synapseClientId, client_secret: synapseClientSecret }),
    });
    const body = await res.json();
    if (body.active) return { ...body, kind: 'AccessToken' };
    const rt = await provider.RefreshToken.find(token);
    if (rt && rt.isValid && (await provider.Grant.find(rt.grantId))) {
      return { active: true, kind: 'RefreshToken', scope: rt.scope, exp: rt.exp, sub: rt.accountId, client_id: rt.clientId };
    }
    return { active: false };
  }

  async function control(ctx) {
    const remote = ctx.req.socket.remoteAddress ?? '';
    if (!['127.0.0.1', '::1', '::ffff:127.0.0.1'].includes(remote)) {
      ctx.status = 403;
      ctx.body = { error: 'loopback only' };
      return;
    }
    const route = `${ctx.method} ${ctx.path}`;
    switch (route) {
      case 'GET /_test/state':
        ctx.body = {
          ...counts,
          byClient: Object.fromEntries(byClient),
          config: ttls,
          clientConfig: Object.fromEntries(clientTtls),
          faults: Object.fromEntries([...faults].map(([r, list]) => [r, list.map((f) => ({ ...f, times: Number.isFinite(f.times) ? f.times : null }))])),
        };
        return;
      case 'POST /_test/reset': {
        const { clientId } = await readJson(ctx);
        if (clientId) byClient.delete(clientId);
        else {
          resetCounts();
          faults.clear();
          releaseHangs();
          ttls = { ...startupTtls };
          clientTtls.clear();
        }
        ctx.body = { ok: true };
        return;
      }
      case 'POST /_test/introspect': {
        const { token } = await readJson(ctx);
        ctx.body = await introspectForTest(String(token ?? ''));
        return;
      }
      case 'POST /_test/config': {
        const body = await readJson(ctx);
        const target = body.clientId ? { ...(clientTtls.get(body.clientId) ?? {}) } : ttls;
        for (const key of Object.keys(startupTtls)) {
          if (body[key] !== undefined) target[key] = Number(body[key]);
        }
        if (body.clientId) clientTtls.set(body.clientId, target);
        ctx.body = { ...ttls, ...(body.clientId ? target : {}) };
        return;
      }
      case 'POST /_test/fault': {
        const body = await readJson(ctx);
        if (!routePaths[body.route]) {
          ctx.status = 400;
          ctx.body = { error: `unknown route ${body.route}; one of ${Object.keys(routePaths).join(', ')}` };
          return;
        }
        const list = faults.get(body.route) ?? [];
        list.push({
          status: body.status ?? 500,
          body: body.body,
          hang: body.hang === true || body.hangMs !== undefined,
          hangMs: body.hangMs,
          times: body.times ?? Infinity,
          clientId: body.clientId,
          grantType: body.grantType,
        });
        faults.set(body.route, list);
        ctx.body = { ok: true };
        return;
      }
      case 'POST /_test/fault/clear': {
        const body = await readJson(ctx);
        if (body.route) faults.delete(body.route);
        else faults.clear();
        releaseHangs();
        ctx.body = { ok: true };
        return;
      }
      default:
        ctx.status = 404;
        ctx.body = { error: `no test-control route ${route}` };
    }
  }

  /** Applies a configured fault to this request; true when it answered instead of the provider. */
  async function applyFault(ctx, route) {
    const list = faults.get(route);
    if (!list?.length) return false;
    let clientId = ctx.query.client_id;
    let grantType;
    if (ctx.method === 'POST' && list.some((f) => f.clientId || f.grantType)) {
      // Read the form body here and hand it on as a string: oidc-provider's body parser takes ctx.req.body
      // when the stream was already read.
      const raw = await readText(ctx.req);
      ctx.req.body = raw;
      const form = new URLSearchParams(raw);
      clientId = form.get('client_id') ?? clientId;
      grantType = shortGrant(form.get('grant_type'));
    }
    const index = list.findIndex((f) => (!f.clientId || f.clientId === clientId) && (!f.grantType || f.grantType === grantType));
    if (index === -1) return false;
    const fault = list[index];
    fault.times -= 1;
    if (fault.times <= 0) list.splice(index, 1);
    if (fault.hang) {
      await new Promise((resolve) => {
        const timer = fault.hangMs !== undefined ? setTimeout(resolve, fault.hangMs) : undefined;
        hangs.add(() => {
          clearTimeout(timer);
          resolve();
        });
      });
      ctx.status = 503;
      ctx.body = { error: 'temporarily_unavailable', error_description: 'test fault: hang released' };
      return true;
    }
    ctx.status = fault.status;
    ctx.body = fault.body ?? { error: 'server_error', error_description: 'test fault' };
    return true;
  }

  provider.use(async (ctx, next) => {
    if (ctx.path.startsWith('/_test/')) return control(ctx);
    if (ctx.path === '/account') {
      ctx.type = 'html';
      ctx.body = `<!DOCTYPE html><title>Account</title><p>Test account management page: ${ctx.querystring.replace(/[<>&"]/g, '')}</p>`;
      return undefined;
    }
    const route = routeOf(ctx);
    const fromControl = ctx.get('x-mxs-test-control') === '1';
    if (route && !fromControl && (await applyFault(ctx, route))) return undefined;

    await next();

    const clientId = ctx.oidc?.client?.clientId ?? ctx.oidc?.params?.client_id;
    if (route === 'token' && ctx.method === 'POST') {
      const gt = shortGrant(ctx.oidc?.params?.grant_type);
      for (const c of [counts, clientCounts(clientId)]) {
        bump(c.attempts, gt);
        if (ctx.status === 200) bump(c.grants, gt);
        else bump(c.errors, `${gt}:${ctx.body?.error ?? ctx.status}`);
      }
    } else if (route === 'revocation' && ctx.method === 'POST' && ctx.status === 200) {
      counts.revocations += 1;
      clientCounts(clientId).revocations += 1;
    } else if (route === 'introspection') {
      if (!fromControl) counts.introspections += 1;
      // Synapse ignores `exp` and caches answers for 2 minutes: only a relative expires_in makes it expire tokens.
      if (ctx.body?.active && typeof ctx.body.exp === 'number') {
        ctx.body.expires_in = Math.max(0, Math.floor(ctx.body.exp - Date.now() / 1000));
      }
    }
    return undefined;
  });
}

// ------------------------------------------------------------------------------------------------------------
// Start: listen first (port 0 = a free one, no race), then build the provider for the issuer that port gives.

let handler = (_req, res) => {
  res.statusCode = 503;
  res.end('starting');
};
const server = createServer((req, res) => handler(req, res));
server.on('error', (err) => {
  log(`listen error: ${err.stack ?? err}`);
  if (process.send) process.send({ ready: false, error: String(err.message ?? err), code: err.code });
  process.exit(1);
});
server.listen(config.port ?? 0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  try {
    const provider = createProvider(issuer);
    install(provider, issuer);
    handler = provider.callback();
    log(`oidc-provider listening at ${issuer}`);
    if (process.send) process.send({ ready: true, issuer });
    else process.stdout.write(`${issuer}\n`);
  } catch (err) {
    log(`start-up failed: ${err.stack ?? err}`);
    if (process.send) process.send({ ready: false, error: String(err.message ?? err) });
    process.exit(1);
  }
});

process.on('message', (message) => {
  if (message && typeof message.synapseUrl === 'string') {
    synapseUrl = message.synapseUrl.replace(/\/+$/, '');
    log(`Synapse at ${synapseUrl}`);
    process.send?.({ configured: true });
  }
});
// Exit when the parent goes away (the IPC channel closes), however it went.
process.on('disconnect', () => process.exit(0));
process.on('SIGTERM', () => {
  releaseHangs();
  server.close();
  server.closeAllConnections?.();
  process.exit(0);
});
if (!process.send && config.synapseUrl) synapseUrl = config.synapseUrl;
