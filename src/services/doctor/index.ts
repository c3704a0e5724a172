import { Exit, type Hint } from '../../errors.js';
import { checkConfig, checkLock, checkStorage } from './local.js';
import { checkAuth, checkClock, checkDiscovery, checkServer } from './server.js';
import { checkDevice, checkRefresh, checkToken, refreshNow } from './session.js';
import { bounded, CHECK_IDS, skipped, type CheckId, type DoctorDeps, type FailureKind, type Finding } from './types.js';

export * from './types.js';

// `mxs doctor`: every check, in the contract's order, concurrent where independent, each bounded by
// the timeout. A check whose input an earlier one could not give is skipped, saying why. Nothing is
// written and no lock is taken, unless `refresh` (--refresh) asks for one real refresh at the end.

export interface DoctorOptions {
  /** --refresh: also try a refresh through the session core, after the checks that use the old token. */
  refresh?: boolean;
  /** The longest a check may take (--timeout). */
  timeoutMs: number;
}

export interface DoctorReport {
  profile: string;
  ok: boolean;
  findings: Finding[];
  /** 0, or the exit code of the first failed check's kind. */
  exitCode: number;
}

const EXIT: Record<FailureKind, number> = { network: Exit.network, auth: Exit.auth, storage: Exit.storage };
const NETWORK_FIX: Hint = 'Check the network and that the server is up; --verbose shows the exchange.';

export async function doctorService(profile: string, deps: DoctorDeps, opts: DoctorOptions): Promise<DoctorReport> {
  const t = opts.timeoutMs;
  // The clock check reads the samples of this profile's answers only.
  deps.clock.skewMs = null;
  const found = new Map<CheckId, Finding>();
  const put = (f: Finding) => found.set(f.id, f);

  const lock = bounded('lock', t, 'storage', 'Retry; the file system did not answer.', () => checkLock(deps.lock.path(profile), { now: deps.now(), waitMs: deps.lock.waitMs }));
  let record = null;
  await bounded('config', t, 'storage', 'Retry; the file system did not answer.', async () => {
    const c = await checkConfig(profile, deps);
    record = c.record;
    return c.finding;
  }).then(put);

  if (!record) {
    put(await lock);
    for (const id of CHECK_IDS) if (!found.has(id)) put(skipped(id, 'No session to check (see config).'));
    return report(profile, found);
  }
  const r = record as NonNullable<typeof record>;
  let secret = null as Awaited<ReturnType<typeof checkStorage>>['secret'];
  let reachable = false;
  // A secrets file others can read is never read (every command refuses it): config said so.
  const unsafe = found.get('config')!.status === 'failure';
  const storage = unsafe ? Promise.resolve(skipped('storage', 'Not read: the secrets file is not private (see config).')) : bounded('storage', t, 'storage', 'Unlock or start your keychain, or log in again with --storage file.', async () => {
    const s = await checkStorage(r, deps);
    secret = s.secret;
    return s.finding;
  });
  const server = bounded('server', t, 'network', NETWORK_FIX, async () => {
    const s = await checkServer(r, deps);
    reachable = s.reachable;
    return s.finding;
  });
  const auth = bounded('auth', t, 'network', NETWORK_FIX, () => checkAuth(r, deps));
  const [storageF, serverF, lockF] = await Promise.all([storage, server, lock]);
  [storageF, lockF, serverF].forEach(put);
  // Started with the server check; judged with its outcome (a moved server is a failure only when the stored one is gone).
  const discovery = bounded('discovery', t, 'network', NETWORK_FIX, () => checkDiscovery(r, reachable, deps));
  put(checkClock(deps.clock.skewMs));

  const s = secret as Awaited<ReturnType<typeof checkStorage>>['secret'];
  const token = !s
    ? Promise.resolve(skipped('token', 'No access token to check (see storage).'))
    : !reachable
      ? Promise.resolve(skipped('token', 'The server did not answer (see server).'))
      : bounded('token', t, 'network', NETWORK_FIX, () => checkToken(r, s, deps));
  const [discoveryF, authF, tokenF] = await Promise.all([discovery, auth, token]);
  // The auth metadata comes from the homeserver: with it down, say so once (under server).
  const authShown = !reachable && authF.status === 'failure' ? skipped('auth', 'The server did not answer (see server).') : authF;
  [discoveryF, authShown, tokenF].forEach(put);
  // The clock sample of the token check's answer is the latest; keep the clock check's first reading unless none was taken.
  if (found.get('clock')!.status === 'skipped') put(checkClock(deps.clock.skewMs));

  put(
    tokenF.status === 'ok' && s
      ? await bounded('device', t, 'network', NETWORK_FIX, () => checkDevice(r, s, deps))
      : skipped('device', tokenF.status === 'skipped' ? tokenF.detail : 'The server does not accept the access token (see token).'),
  );
  if (!s) put(skipped('refresh', 'No tokens to check (see storage).'));
  else if (opts.refresh) put(await bounded('refresh', t * 3, 'network', NETWORK_FIX, () => refreshNow(r, deps)));
  else put(checkRefresh(r, s, deps.now()));
  return report(profile, found);
}

function report(profile: string, found: Map<CheckId, Finding>): DoctorReport {
  const findings = CHECK_IDS.map((id) => found.get(id)!);
  const first = findings.find((f) => f.status === 'failure');
  return { profile, ok: !first, findings, exitCode: first ? EXIT[first.kind ?? 'network'] : Exit.ok };
}

/** Every stored profile, in name order; the exit code is the first profile's first failure. */
export async function doctorAllService(deps: DoctorDeps, opts: DoctorOptions): Promise<DoctorReport[]> {
  const reports: DoctorReport[] = [];
  for (const profile of await deps.sessions.profiles()) reports.push(await doctorService(profile, deps, opts));
  return reports;
}
