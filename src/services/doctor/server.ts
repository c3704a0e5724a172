import { loginHint, MxsError, type Hint } from '../../errors.js';
import { send } from '../../http/transport.js';
import { decodeMatrixError, requestJson } from '../../matrix/http.js';
import type { SessionRecord } from '../../model.js';
import { confirmIssuer, discoverAuthMetadata } from '../../oauth/client.js';
import { printable } from '../../printable.js';
import type { Deps } from '../deps.js';
import { failure, failureOf, formatMs, ok, skipped, warning, type Finding } from './types.js';

// The checks that ask the session's servers, without a token: the homeserver answers (server),
// the server name still points at it (discovery), the OAuth issuer is the stored one (auth), and the
// clocks agree (clock). None sends a secret.

const NETWORK_FIX: Hint = 'Check the network and that the server is up; --verbose shows the exchange.';

export interface ServerOutcome {
  finding: Finding;
  reachable: boolean;
}

/** `server`: the homeserver answers `/_matrix/client/versions` (over TLS, or plain http to loopback). */
export async function checkServer(record: SessionRecord, deps: Pick<Deps, 'http'>, monotonic: () => number = () => performance.now()): Promise<ServerOutcome> {
  const url = `${record.homeserver}/_matrix/client/versions`;
  const started = monotonic();
  let versions: unknown;
  try {
    versions = (await requestJson(deps.http, { method: 'GET', url, retry: false })).body.versions;
  } catch (err) {
    return { finding: failureOf('server', err, 'network', NETWORK_FIX), reachable: false };
  }
  const took = formatMs(monotonic() - started);
  const list = Array.isArray(versions) ? versions.filter((v): v is string => typeof v === 'string') : [];
  if (list.length === 0) {
    return { finding: failure('server', 'network', `${record.homeserver} answered /versions in ${took} without a list of Matrix versions: it is not a Matrix homeserver.`, 'Check the homeserver URL; log in again with the right one.'), reachable: false };
  }
  const how = record.homeserver.startsWith('https:') ? 'over TLS' : 'over plain http';
  const latest = printable(list[list.length - 1]!, { maxChars: 20 });
  return { finding: ok('server', `${record.homeserver} answered /versions in ${took} ${how} (Matrix up to ${latest}).`), reachable: true };
}

/** The server part of a Matrix user ID (`@alice:example.org:8448` → `example.org:8448`). */
export function serverName(userId: string): string | null {
  const colon = userId.indexOf(':');
  return colon > 0 && colon < userId.length - 1 ? userId.slice(colon + 1) : null;
}

const bare = (url: string) => url.replace(/\/+$/, '');

/**
 * `discovery`: the user ID's server name still points at the stored homeserver through
 * `/.well-known/matrix/client`. No .well-known (or none reachable) is fine: the homeserver was given
 * by URL. One that names another homeserver is a warning while the stored one still answers, and a
 * failure once it does not (the server moved).
 */
export async function checkDiscovery(record: SessionRecord, storedAnswers: boolean, deps: Pick<Deps, 'http'>): Promise<Finding> {
  if (record.userId === null) return skipped('discovery', 'Not applicable: a client-credentials session belongs to no user.');
  const name = serverName(record.userId);
  if (!name) return skipped('discovery', `The user ID ${printable(record.userId, { maxChars: 100 })} has no server name.`);
  const url = `https://${name}/.well-known/matrix/client`;
  let baseUrl: unknown;
  try {
    const res = await send(deps.http, { method: 'GET', url, retry: false }, decodeMatrixError);
    baseUrl = (res.json?.['m.homeserver'] as { base_url?: unknown } | undefined)?.base_url;
  } catch (err) {
    const e = err as MxsError;
    const why = e.status === 404 ? 'serves no .well-known' : e.status ? `answers no .well-known (HTTP ${e.status})` : 'has no .well-known within reach';
    return ok('discovery', `${name} ${why}; the stored homeserver ${record.homeserver} is used as given.`);
  }
  if (typeof baseUrl !== 'string' || baseUrl === '') {
    return warning('discovery', `${url} has no valid "m.homeserver.base_url".`, `Ask the server admin to fix ${url}; the stored homeserver is used meanwhile.`);
  }
  if (bare(baseUrl) === bare(record.homeserver)) return ok('discovery', `${name} points at ${record.homeserver}.`);
  const elsewhere = printable(bare(baseUrl), { maxChars: 200 });
  const relogin: Hint = ['Log in again to use it: ', loginHint(record.profile, name)];
  if (storedAnswers) {
    return warning('discovery', `${name} now points at ${elsewhere}, not at the stored ${record.homeserver} (which still answers).`, relogin);
  }
  return failure('discovery', 'network', `${name} now points at ${elsewhere}; the stored ${record.homeserver} does not answer: the server moved.`, relogin);
}

/**
 * `auth` (OAuth sessions): the homeserver's auth metadata answers and names the stored issuer, and
 * the issuer's own metadata agrees. Other sessions: not applicable, reported as skipped.
 */
export async function checkAuth(record: SessionRecord, deps: Pick<Deps, 'http'>): Promise<Finding> {
  if (record.auth.type !== 'oauth') return skipped('auth', `Not applicable: a ${record.method} session has no OAuth issuer.`);
  const stored = record.auth.issuer;
  let meta;
  try {
    meta = await discoverAuthMetadata(record.homeserver, deps.http);
  } catch (err) {
    return failureOf('auth', err, 'network', NETWORK_FIX);
  }
  if (!meta) {
    return failure('auth', 'auth', `${record.homeserver} no longer publishes OAuth metadata (auth_metadata): it stopped delegating to ${stored}.`, ['Log in again: ', loginHint(record.profile, record.homeserver)]);
  }
  if (meta.issuer !== stored) {
    return failure('auth', 'auth', `${record.homeserver} now names ${printable(meta.issuer, { maxChars: 200 })} as its OAuth issuer, not the stored ${stored}.`, ['Log in again: ', loginHint(record.profile, record.homeserver)]);
  }
  try {
    await confirmIssuer(meta, deps.http);
  } catch (err) {
    return failureOf('auth', err, 'network', NETWORK_FIX);
  }
  return ok('auth', `${stored} is still the issuer, and its metadata answers.`);
}

export const CLOCK_WARN_MS = 30_000;
export const CLOCK_FAIL_MS = 5 * 60_000;

/** `clock`: this machine's clock against the server's `Date` (sampled by the transport): warning past 30 s, failure past 5 min. */
export function checkClock(skewMs: number | null): Finding {
  if (skewMs === null) return skipped('clock', 'No server answer carried a Date header to compare with.');
  const off = formatMs(skewMs);
  const way = skewMs > 0 ? 'behind' : 'ahead of';
  const fix: Hint = "Set this machine's clock right (enable NTP: timedatectl set-ntp true).";
  if (Math.abs(skewMs) > CLOCK_FAIL_MS) return failure('clock', 'auth', `This machine's clock is ${off} ${way} the server's: tokens and their expiry cannot be judged.`, fix);
  if (Math.abs(skewMs) > CLOCK_WARN_MS) return warning('clock', `This machine's clock is ${off} ${way} the server's.`, fix);
  return ok('clock', `Within ${Math.abs(skewMs) < 1000 ? '1s' : off} of the server's.`);
}
