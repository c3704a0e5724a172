// The OAuth 2.0 server of the test OAuth homeserver: oidc-provider on 127.0.0.1 at a free port, which Synapse 1.156
// (experimental_features.msc3861) delegates auth to. A child process of jest's globalSetup (startOAuthHomeserver
// in synapse.ts), so it shares no event loop with the test workers.
//
// Input: JSON in env MXS_OAUTH_PROVIDER_CONFIG: {adminToken, synapseClientId, synapseClientSecret, accessTokenTTL
// (seconds), logFile}. On the IPC channel it sends {ready: true, issuer} once listening; the parent then sends
// {synapseUrl} (Synapse needs the issuer in its config before it starts) and gets {configured: true}. It exits
// when the channel closes (the parent is gone, however it went).
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
// Test control, plain JSON under /_test/ (the server listens on 127.0.0.1 only; oauth-homeserver.ts has the types):
//   GET  /_test/state       {grants, attempts, errors, revocations, byClient: {<client_id>: {the same}}}: token
//                           requests by short grant type (device_code, authorization_code, refresh_token), 200
//                           answers, errors keyed "<grant>:<error>", successful revocations
//   POST /_test/introspect  {token} -> what Synapse is told of an access token; refresh tokens looked up directly
//   POST /_test/config      {clientId?, accessTokenTTL?, refreshTokenTTL?, deviceCodeTTL?} (seconds) -> the TTLs
//   POST /_test/fault       {route: 'token', status?: 500, hang?: true, hangMs?: n, times?: n, clientId?, grantType?}
// GET /account is a stub account-management page (account_management_uri in the metadata).
import { appendFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { randomBytes } from 'node:crypto';

import Provider, { errors } from 'oidc-provider';

const config = JSON.parse(process.env.MXS_OAUTH_PROVIDER_CONFIG || '{}');
const { adminToken, synapseClientId, synapseClientSecret, logFile } = config;
/** Synapse's base URL (no trailing slash): the resource server, and where users and devices are provisioned. */
let synapseUrl;
const ttls = { accessTokenTTL: config.accessTokenTTL ?? 6, refreshTokenTTL: 14 * 24 * 3600, deviceCodeTTL: 600 };
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
const counts = emptyCounts();
const byClient = new Map();
const bump = (obj, key) => {
  obj[key] = (obj[key] ?? 0) + 1;
};
const clientCounts = (clientId) => {
  const id = clientId || 'unknown';
  if (!byClient.has(id)) byClient.set(id, emptyCounts());
  return byClient.get(id);
};

/** Faults of the token endpoint: [{status, hangMs, times, clientId, grantType}] */
const faults = [];

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
    const res = await fetch(`${issuer}/token/introspection`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
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
    const route = `${ctx.method} ${ctx.path}`;
    switch (route) {
      case 'GET /_test/state':
        ctx.body = { ...counts, byClient: Object.fromEntries(byClient) };
        return;
      case 'POST /_test/introspect': {
        const { token } = await readJson(ctx);
        ctx.body = await introspectForTest(String(token ?? ''));
        return;
      }
      case 'POST /_test/config': {
        const body = await readJson(ctx);
        const target = body.clientId ? { ...(clientTtls.get(body.clientId) ?? {}) } : ttls;
        for (const key of Object.keys(ttls)) {
          if (body[key] !== undefined) target[key] = Number(body[key]);
        }
        if (body.clientId) clientTtls.set(body.clientId, target);
        ctx.body = { ...ttls, ...(body.clientId ? target : {}) };
        return;
      }
      case 'POST /_test/fault': {
        const body = await readJson(ctx);
        if (body.route !== 'token' || (body.hang && body.hangMs === undefined)) {
          ctx.status = 400;
          ctx.body = { error: 'faults are of the token route, and a hang needs hangMs' };
          return;
        }
        const { status = 500, hangMs, times = Infinity, clientId, grantType } = body;
        faults.push({ status, hangMs, times, clientId, grantType });
        ctx.body = { ok: true };
        return;
      }
      default:
        ctx.status = 404;
        ctx.body = { error: `no test-control route ${route}` };
    }
  }

  /** Applies a configured fault to a token request; true when it answered instead of the provider. */
  async function applyFault(ctx) {
    if (!faults.length) return false;
    let clientId = ctx.query.client_id;
    let grantType;
    if (ctx.method === 'POST' && faults.some((f) => f.clientId || f.grantType)) {
      // Read the form body here and hand it on as a string: oidc-provider's body parser takes ctx.req.body
      // when the stream was already read.
      const raw = await readText(ctx.req);
      ctx.req.body = raw;
      const form = new URLSearchParams(raw);
      clientId = form.get('client_id') ?? clientId;
      grantType = shortGrant(form.get('grant_type'));
    }
    const index = faults.findIndex((f) => (!f.clientId || f.clientId === clientId) && (!f.grantType || f.grantType === grantType));
    if (index === -1) return false;
    const fault = faults[index];
    fault.times -= 1;
    if (fault.times <= 0) faults.splice(index, 1);
    if (fault.hangMs !== undefined) {
      await new Promise((resolve) => setTimeout(resolve, fault.hangMs));
      ctx.status = 503;
      ctx.body = { error: 'temporarily_unavailable', error_description: 'test fault: hang released' };
      return true;
    }
    ctx.status = fault.status;
    ctx.body = { error: 'server_error', error_description: 'test fault' };
    return true;
  }

  provider.use(async (ctx, next) => {
    if (ctx.path.startsWith('/_test/')) return control(ctx);
    if (ctx.path === '/account') {
      ctx.type = 'html';
      ctx.body = `<!DOCTYPE html><title>Account</title><p>Test account management page: ${ctx.querystring.replace(/[<>&"]/g, '')}</p>`;
      return undefined;
    }
    if (ctx.path === '/token' && (await applyFault(ctx))) return undefined;

    await next();

    const clientId = ctx.oidc?.client?.clientId ?? ctx.oidc?.params?.client_id;
    if (ctx.path === '/token' && ctx.method === 'POST') {
      const gt = shortGrant(ctx.oidc?.params?.grant_type);
      for (const c of [counts, clientCounts(clientId)]) {
        bump(c.attempts, gt);
        if (ctx.status === 200) bump(c.grants, gt);
        else bump(c.errors, `${gt}:${ctx.body?.error ?? ctx.status}`);
      }
    } else if (ctx.path === '/token/revocation' && ctx.method === 'POST' && ctx.status === 200) {
      counts.revocations += 1;
      clientCounts(clientId).revocations += 1;
    } else if (ctx.path === '/token/introspection') {
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
  process.send({ ready: false, error: String(err.message ?? err) });
  process.exit(1);
});
server.listen(0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  try {
    const provider = createProvider(issuer);
    install(provider, issuer);
    handler = provider.callback();
    log(`oidc-provider listening at ${issuer}`);
    process.send({ ready: true, issuer });
  } catch (err) {
    log(`start-up failed: ${err.stack ?? err}`);
    process.send({ ready: false, error: String(err.message ?? err) });
    process.exit(1);
  }
});

process.on('message', (message) => {
  if (message && typeof message.synapseUrl === 'string') {
    synapseUrl = message.synapseUrl.replace(/\/+$/, '');
    log(`Synapse at ${synapseUrl}`);
    process.send({ configured: true });
  }
});
// Exit when the parent goes away (the IPC channel closes), however it went.
process.on('disconnect', () => process.exit(0));
process.on('SIGTERM', () => {
  server.close();
  server.closeAllConnections();
  process.exit(0);
});
