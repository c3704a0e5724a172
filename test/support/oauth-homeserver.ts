// The test OAuth homeserver as test files see it: Synapse 1.156 delegating auth to oidc-provider
// (test/support/oauth-provider.mjs), which globalSetup starts once per run (startOAuthHomeserver in synapse.ts).
// Suites wrap themselves in describeWithOAuthHomeserver() and get a handle from oauthHomeserverFromEnv(): the
// provider's test-control API (counters, TTLs, faults, introspection), Synapse's admin API, and a user in a
// browser: approveDevice() and authorize() drive the provider's dev login/consent HTML forms with a cookie jar.
import { describeIfAvailable, OAUTH_ENV, oauthSkipReason } from './synapse.js';

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

interface ProviderState extends GrantCounts {
  byClient: Record<string, GrantCounts>;
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

/** A fault of the provider's token endpoint. */
export interface FaultSpec {
  route: 'token';
  /** HTTP status to answer with (default 500, body `{error: 'server_error'}`). */
  status?: number;
  /** Don't answer: hold the request for hangMs, then answer 503. */
  hang?: boolean;
  hangMs?: number;
  /** How many matching requests get the fault (default: all). */
  times?: number;
  /** Only requests of this client_id. */
  clientId?: string;
  /** Only this grant type (device_code, authorization_code, refresh_token). */
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
  /** Successful revocations (one client's, or all). */
  revokedCount(clientId?: string): Promise<number>;
  /** What the provider's introspection says about an access token (refresh tokens: looked up directly). */
  introspect(token: string): Promise<IntrospectionResult>;
  /** Overrides lifetimes (seconds) for new tokens, for one client or (without clientId) everyone. */
  setTtls(ttls: Partial<ProviderTtls> & { clientId?: string }): Promise<ProviderTtls>;
  /** Makes the token endpoint fail or hang; see FaultSpec. */
  setFault(fault: FaultSpec): Promise<void>;
  /** Device IDs of a user, through Synapse's admin API. */
  devices(userId: string): Promise<string[]>;
  /** `GET /_matrix/client/v3/account/whoami` with this access token. */
  whoami(accessToken: string): Promise<{ status: number; body: Record<string, unknown> }>;
}

const log = (msg: string): void => {
  process.stderr.write(`[oauth-homeserver] ${msg}\n`);
};

async function jsonRequest<T>(url: string, init: { body?: unknown; token?: string } = {}): Promise<{ status: number; body: T }> {
  const method = init.body === undefined ? 'GET' : 'POST';
  const res = await fetch(url, {
    method,
    headers: {
      ...(init.body === undefined ? {} : { 'content-type': 'application/json' }),
      ...(init.token ? { authorization: `Bearer ${init.token}` } : {}),
    },
    body: init.body === undefined ? undefined : JSON.stringify(init.body),
    signal: AbortSignal.timeout(15_000),
  });
  const text = await res.text();
  try {
    return { status: res.status, body: (text ? JSON.parse(text) : {}) as T };
  } catch {
    throw new Error(`${method} ${url} answered ${res.status} with non-JSON: ${text.slice(0, 300)}`);
  }
}

/** The shared OAuth homeserver that globalSetup started (from OAUTH_ENV); throws when there is none. */
export function oauthHomeserverFromEnv(): OAuthHomeserverHandle {
  const env = process.env;
  const [baseUrl, issuer, adminToken] = [env[OAUTH_ENV.url], env[OAUTH_ENV.issuer], env[OAUTH_ENV.adminToken]];
  if (!baseUrl || !issuer || !adminToken) throw new Error(oauthSkipReason());
  const verificationUri = `${issuer}/device`;
  const control = async <T>(route: string, body?: unknown): Promise<T> => {
    const { status, body: answer } = await jsonRequest<T>(`${issuer}/_test${route}`, { body });
    if (status !== 200) throw new Error(`test control ${route} answered ${status}: ${JSON.stringify(answer)}`);
    return answer;
  };
  const state = (): Promise<ProviderState> => control<ProviderState>('/state');
  return {
    baseUrl,
    issuer,
    synapseVersion: env[OAUTH_ENV.synapseVersion] ?? '',
    adminToken,
    verificationUri,
    accessTokenTTL: Number(env[OAUTH_ENV.accessTokenTTL] ?? 6),
    approveDevice: (userCode, localpart, opts) => approveDevice(issuer, verificationUri, userCode, localpart, opts),
    authorize: (url, localpart, opts) => authorize(issuer, url, localpart, opts),
    async grantCounts(clientId) {
      const { grants, attempts, errors, revocations, byClient } = await state();
      if (clientId === undefined) return { grants, attempts, errors, revocations };
      return byClient[clientId] ?? { grants: {}, attempts: {}, errors: {}, revocations: 0 };
    },
    async revokedCount(clientId) {
      const s = await state();
      return clientId === undefined ? s.revocations : (s.byClient[clientId]?.revocations ?? 0);
    },
    introspect: (token) => control<IntrospectionResult>('/introspect', { token }),
    setTtls: (ttls) => control<ProviderTtls>('/config', ttls),
    async setFault(fault) {
      await control('/fault', fault);
    },
    async devices(userId) {
      const { status, body } = await jsonRequest<{ devices?: { device_id: string }[] }>(
        `${baseUrl}/_synapse/admin/v2/users/${encodeURIComponent(userId)}/devices`,
        { token: adminToken },
      );
      if (status !== 200) throw new Error(`admin devices of ${userId} answered ${status}: ${JSON.stringify(body)}`);
      return (body.devices ?? []).map((d) => d.device_id);
    },
    whoami: (accessToken) => jsonRequest<Record<string, unknown>>(`${baseUrl}/_matrix/client/v3/account/whoami`, { token: accessToken }),
  };
}

/** `describe` for suites that need the shared OAuth homeserver; see describeIfAvailable in synapse.ts. */
export function describeWithOAuthHomeserver(name: string, fn: () => void): void {
  describeIfAvailable(name, 'a test OAuth homeserver', process.env[OAUTH_ENV.url] ? null : oauthSkipReason(), fn);
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

  /** Submits `form` of `page` with its fields' values and `overrides`. */
  submit(page: Page, form: Form, overrides?: Record<string, string>): Promise<Page> {
    return this.request(new URL(form.action || page.url.href, page.url), { method: form.method.toUpperCase(), form: formValues(form, overrides) });
  }
}

interface FormField {
  name: string;
  value: string;
  type: string;
}

interface Form {
  action: string;
  method: string;
  /** What a submit sends: the named inputs (not buttons), in document order. */
  fields: FormField[];
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

/** Parses what a user would act on: forms and their fields, links, title, messages. */
function parseHtml(html: string): ParsedPage {
  const clean = html.replace(/<!--[\s\S]*?-->/g, '').replace(/<(script|style)\b[^>]*>[\s\S]*?<\/\1\s*>/gi, '');
  const title = stripTags(/<title\b[^>]*>([\s\S]*?)<\/title>/i.exec(clean)?.[1] ?? '');
  const forms: Form[] = [];
  let current: Form | undefined;
  const tagRe = /<(\/?)([a-z][a-z0-9-]*)\b((?:[^>"']|"[^"]*"|'[^']*')*)>/gi;
  for (let m = tagRe.exec(clean); m; m = tagRe.exec(clean)) {
    const closing = m[1] === '/';
    const tag = m[2].toLowerCase();
    if (tag === 'form') {
      if (closing) current = undefined;
      else {
        const a = parseAttributes(m[3]);
        current = { action: a.action ?? '', method: (a.method ?? 'get').toLowerCase(), fields: [] };
        forms.push(current);
      }
      continue;
    }
    // Buttons are never "clicked" by name: none of the provider's forms needs a button's value.
    if (closing || tag !== 'input' || !current) continue;
    const a = parseAttributes(m[3]);
    const type = (a.type ?? 'text').toLowerCase();
    if (!a.name || type === 'submit' || type === 'image') continue;
    if ((type === 'checkbox' || type === 'radio') && !('checked' in a)) continue;
    current.fields.push({ name: a.name, value: a.value ?? '', type });
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

function formValues(form: Form, overrides: Record<string, string> = {}): Record<string, string> {
  return { ...Object.fromEntries(form.fields.map((f) => [f.name, f.value])), ...overrides };
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
      page = await browser.submit(page, confirm);
    } else if (codeInput && hasField(codeInput, 'xsrf') && codeInput.fields.find((f) => f.name === 'user_code')?.type === 'hidden') {
      // The auto-submitting form_post page ("Submitting Callback"): a browser runs its script.
      page = await browser.submit(page, codeInput);
    } else if (codeInput) {
      if (codeSubmitted) {
        // The code page again: the provider's outcome message (an abort shows "interrupted").
        if (opts.deny && parsed.messages.some((m) => /interrupted/i.test(m))) return;
        throw new Error(`device verification ended on the code page: ${describePage(page, parsed)}`);
      }
      codeSubmitted = true;
      page = await browser.submit(page, codeInput, { user_code: userCode });
    } else if (login) {
      page = await browser.submit(page, login, { login: localpart, password: ANY_PASSWORD });
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
  if (!deny) return browser.submit(page, consent);
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
    if (login) {
      page = await browser.submit(page, login, { login: localpart, password: ANY_PASSWORD });
    } else if (consent) {
      page = await consentStep(browser, page, parsed, consent, opts.deny);
    } else {
      throw new Error(`authorization: unexpected page ${describePage(page, parsed)}`);
    }
  }
  throw new Error(`authorization did not finish within ${MAX_STEPS} steps`);
}
