// The world of a unit test: a Deps wired to a controllable clock, an undici MockAgent (real network
// disabled), an in-memory keychain, a real FileSecretStore and SessionStore in a temp dir, and
// recorders for sleeps and notices. Nothing here waits for real time or touches the network.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MockAgent } from 'undici';
import type { Deps } from '../../src/services/deps.js';
import type { SessionRecord, SessionSecret, StorageKind } from '../../src/model.js';
import { keychainUnavailable } from '../../src/store/keychain.js';
import { statePaths, type StatePaths } from '../../src/store/paths.js';
import { FileSecretStore, parseSecret, serializeSecret, type SecretStore } from '../../src/store/secrets.js';
import { SessionStore } from '../../src/store/sessions.js';
import type { Hint } from '../../src/errors.js';
import { renderHint } from '../../src/ui/hints.js';

/** What an interceptor's reply() returns (undici does not export the type from its root). */
export type MockScope = ReturnType<ReturnType<ReturnType<MockAgent['get']>['intercept']>['reply']>;

/** 2030-01-01T12:00:00Z: a round, far-from-epoch start for every test clock. */
export const T0 = Date.UTC(2030, 0, 1, 12, 0, 0);
export const HS = 'https://matrix.example.org';
/** The OAuth issuer of OAuth unit tests (its endpoints are under it). */
export const ISSUER = 'https://auth.example.org';
/** What every OAuth unit test's issuer metadata says (a test adds what its case needs). */
export const OAUTH_METADATA = {
  issuer: `${ISSUER}/`,
  authorization_endpoint: `${ISSUER}/authorize`,
  token_endpoint: `${ISSUER}/oauth2/token`,
  revocation_endpoint: `${ISSUER}/oauth2/revoke`,
  registration_endpoint: `${ISSUER}/oauth2/registration`,
};

export interface TestClock {
  now(): number;
  set(ms: number): void;
  advance(ms: number): void;
}

export interface RecordedRequest {
  method: string;
  url: string;
  path: string;
  headers: Record<string, string>;
  body: unknown;
}

export interface UnitWorld {
  deps: Deps;
  clock: TestClock;
  /** Every wait the HTTP layer asked for, in ms. */
  sleeps: number[];
  agent: MockAgent;
  /** Every message handed to deps.notice. */
  notices: string[];
  /** Everything handed to deps.rememberSecret. */
  remembered: string[];
  keychain: SecretStore;
  files: FileSecretStore;
  paths: StatePaths;
  dir: string;
  /** Requests that reached the MockAgent (intercepted or not), oldest first. */
  requests(): RecordedRequest[];
  /** Stores a session directly (as a completed login would have), bypassing the network. */
  seed(opts?: SeedOptions): Promise<{ record: SessionRecord; secret: SessionSecret }>;
  /** The stored record and secret of a profile (secret read from the record's store). */
  stored(profile?: string): Promise<{ record: SessionRecord | null; secret: SessionSecret | null }>;
  cleanup(): Promise<void>;
}

export interface MakeDepsOptions {
  /** Start of the clock (default T0). */
  now?: number;
  /** Replaces the in-memory keychain (e.g. one that throws). */
  keychain?: SecretStore;
}

export interface SeedOptions {
  profile?: string;
  homeserver?: string;
  storage?: StorageKind;
  accessToken?: string;
  refreshToken?: string | null;
  /** When the current access token was issued (default: the clock now). */
  issuedAt?: number;
  /** Lifetime from issuedAt; null: never expires (default 5 minutes). */
  lifetimeMs?: number | null;
  refreshPath?: string;
  /** An OAuth 2.0 session (issuer ISSUER, client `client-1`). */
  oauth?: boolean;
}

export async function makeDeps(opts: MakeDepsOptions = {}): Promise<UnitWorld> {
  const dir = await mkdtemp(join(tmpdir(), 'mxs-unit-'));
  const paths = statePaths(dir);
  let current = opts.now ?? T0;
  const clock: TestClock = {
    now: () => current,
    set: (ms) => {
      current = ms;
    },
    advance: (ms) => {
      current += ms;
    },
  };
  const sleeps: number[] = [];
  const notices: string[] = [];
  const remembered: string[] = [];
  const agent = new MockAgent({ enableCallHistory: true });
  agent.disableNetConnect();
  const keychain = opts.keychain ?? new MemorySecretStore('keychain');
  const files = new FileSecretStore(paths);
  const sessions = new SessionStore(paths);
  const now = () => clock.now();
  const skew = { skewMs: null as number | null };

  const deps: Deps = {
    now,
    // Device-code polling waits here: recorded, the clock moved on, no real waiting.
    sleep: async (ms, signal) => {
      sleeps.push(ms);
      clock.advance(ms);
      if (signal?.aborted) throw signal.reason;
    },
    clock: skew,
    http: {
      timeoutMs: 5000,
      dispatcher: agent,
      now,
      sleep: async (ms) => {
        sleeps.push(ms);
      },
      onClockSample: (s) => {
        skew.skewMs = s;
      },
    },
    sessions,
    secretStores: { keychain, file: files },
    lock: { path: paths.lock, waitMs: 2000 },
    notice: (m) => {
      notices.push(m);
    },
    rememberSecret: (...values) => {
      for (const v of values) if (v) remembered.push(v);
    },
  };

  return {
    deps,
    clock,
    sleeps,
    agent,
    notices,
    remembered,
    keychain,
    files,
    paths,
    dir,
    requests: () =>
      (agent.getCallHistory()?.calls() ?? []).map((c) => ({
        method: c.method,
        url: c.fullUrl,
        path: c.path,
        headers: lowerCaseHeaders(c.headers),
        body: parseBody(c.body, lowerCaseHeaders(c.headers)['content-type']),
      })),
    seed: async (s = {}) => {
      const profile = s.profile ?? 'default';
      const storage = s.storage ?? 'keychain';
      const issued = s.issuedAt ?? clock.now();
      const lifetime = s.lifetimeMs === undefined ? 300_000 : s.lifetimeMs;
      const secret: SessionSecret = {
        accessToken: s.accessToken ?? 'syt_old_access',
        refreshToken: s.refreshToken === undefined ? 'syr_old_refresh' : s.refreshToken,
        issuedAt: new Date(issued).toISOString(),
        expiresAt: lifetime === null ? null : new Date(issued + lifetime).toISOString(),
      };
      const record: SessionRecord = {
        profile,
        homeserver: s.homeserver ?? HS,
        userId: '@alice:example.org',
        deviceId: 'DEVICE1',
        issuedAt: secret.issuedAt,
        expiresAt: secret.expiresAt,
        refreshable: secret.refreshToken !== null,
        storage,
        method: s.oauth ? 'oauth' : 'password',
        auth: s.oauth
          ? { type: 'oauth', issuer: `${ISSUER}/`, clientId: 'client-1', tokenEndpoint: `${ISSUER}/oauth2/token`, revocationEndpoint: `${ISSUER}/oauth2/revoke`, accountManagementUri: `${ISSUER}/account` }
          : s.refreshPath
            ? { type: 'matrix', refreshPath: s.refreshPath }
            : { type: 'matrix' },
      };
      await deps.secretStores[storage].set(profile, secret);
      await sessions.write(record);
      return { record, secret };
    },
    stored: async (profile = 'default') => {
      const record = await sessions.read(profile);
      const secret = record ? await deps.secretStores[record.storage].get(profile) : null;
      return { record, secret };
    },
    cleanup: async () => {
      await agent.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** JSON bodies parsed; form bodies (OAuth) as a plain object of their fields. */
function parseBody(body: unknown, contentType: string | undefined): unknown {
  if (typeof body !== 'string' || body === '') return body;
  if (contentType?.startsWith('application/x-www-form-urlencoded')) return Object.fromEntries(new URLSearchParams(body));
  return JSON.parse(body);
}

/** undici records headers as an object or as a flat [name, value, name, value, ...] array. */
function lowerCaseHeaders(h: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (Array.isArray(h)) {
    for (let i = 0; i + 1 < h.length; i += 2) out[String(h[i]).toLowerCase()] = String(h[i + 1]);
  } else {
    for (const [k, v] of Object.entries((h ?? {}) as Record<string, unknown>)) out[k.toLowerCase()] = String(v);
  }
  return out;
}

/** Intercepts one request on `origin` and answers it with JSON. */
export function replyJson(
  agent: MockAgent,
  origin: string,
  method: 'GET' | 'POST' | 'PUT',
  path: string,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): MockScope {
  return agent
    .get(origin)
    .intercept({ method, path })
    .reply(status, JSON.stringify(body), { headers: { 'content-type': 'application/json', ...headers } });
}

/** A successful /versions answer, as discovery expects. */
export function replyVersions(agent: MockAgent, origin: string): void {
  replyJson(agent, origin, 'GET', '/_matrix/client/versions', 200, { versions: ['v1.11', 'v1.12'], unstable_features: {} });
}

/** Intercepts one request and answers it from a callback (which may, e.g., move the clock). */
export function replyJsonWith(
  agent: MockAgent,
  origin: string,
  method: 'GET' | 'POST' | 'PUT',
  path: string,
  answer: (req: { headers: unknown; body: unknown }) => { status: number; body: unknown; headers?: Record<string, string> },
): MockScope {
  return agent
    .get(origin)
    .intercept({ method, path })
    .reply((opts) => {
      const a = answer({ headers: opts.headers, body: opts.body });
      return {
        statusCode: a.status,
        data: typeof a.body === 'string' ? a.body : JSON.stringify(a.body),
        responseOptions: { headers: { 'content-type': 'application/json', ...a.headers } },
      };
    });
}

/** A keychain whose every call fails the way an absent or locked OS keychain does. */
export class UnusableKeychain implements SecretStore {
  readonly kind = 'keychain' as const;
  calls = 0;
  constructor(private readonly reason = 'no Secret Service is running') {}
  describe(): string {
    return 'the OS keychain';
  }
  private fail(): never {
    this.calls++;
    throw keychainUnavailable(this.reason);
  }
  async get(): Promise<SessionSecret | null> {
    return this.fail();
  }
  async set(): Promise<void> {
    this.fail();
  }
  async delete(): Promise<void> {
    this.fail();
  }
}

/** Runs `fn` and returns what it threw (fails the test when it does not throw). */
export async function rejectionOf(fn: () => Promise<unknown>): Promise<any> {
  try {
    await fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection, but the call succeeded');
}

/** Secrets in memory: the keychain of a unit test. */
export class MemorySecretStore implements SecretStore {
  readonly items = new Map<string, string>();
  constructor(readonly kind: StorageKind = 'keychain') {}
  describe(): string {
    return 'memory';
  }
  async get(profile: string): Promise<SessionSecret | null> {
    const v = this.items.get(profile);
    return v === undefined ? null : parseSecret(v, 'memory');
  }
  async set(profile: string, secret: SessionSecret): Promise<void> {
    this.items.set(profile, serializeSecret(secret));
  }
  async delete(profile: string): Promise<void> {
    this.items.delete(profile);
  }
}

/** An error's hint as the user reads it when the profile in question is not the switched default (`default`). */
export function hintText(err: { hint?: Hint | undefined }, defaultProfile: string | null = 'default'): string {
  return renderHint(err.hint ?? '', { defaultProfile });
}

/** Per test: a fresh unit world (`worldPerTest((made) => (w = made))`), cleaned up after it. */
export function worldPerTest(take: (world: UnitWorld) => void, opts: MakeDepsOptions = {}): void {
  let world: UnitWorld | undefined;
  beforeEach(async () => {
    world = await makeDeps(opts);
    take(world);
  });
  afterEach(async () => {
    await world?.cleanup();
    world = undefined;
  });
}
