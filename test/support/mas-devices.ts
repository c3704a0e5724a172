/**
 * The homeserver double as Synapse delegating to the Matrix Authentication Service deletes devices
 * (as a real Synapse 1.163 with MAS v1.22 answered): the double's OAuth
 * mode plus these rules, plugged in through its `intercept` option.
 * - `POST /_matrix/client/{r0,v3}/delete_devices` and `DELETE /_matrix/client/{r0,v3}/devices/{id}`
 *   answer 404 M_UNRECOGNIZED "Unrecognized request", whatever the token (Synapse registers no
 *   deletion servlet when auth is delegated).
 * - The metadata (`auth_metadata`, both paths, and `/.well-known/openid-configuration`) lists
 *   `account_management_actions_supported` = `accountActions` (default: the double's own list, which
 *   has `org.matrix.device_delete`); null leaves the field out.
 * - `GET /account/` is the account page: every visit lands in `accountPageVisits` with its `action`
 *   and `device_id`, and answers 200 `{page: "account"}`.
 * - `approveDeletion(deviceId)` plays the user confirming on the page: it throws unless the page was
 *   visited with a deletion action (`org.matrix.device_delete` or `org.matrix.session_end`) for that
 *   device, then ends the device's sessions (`endSession`), so GET /devices stops listing it.
 *   `approveOnVisit: true` does that at the visit itself (for a browser the test does not drive).
 */
import { startHomeserverDouble, type Answer, type DoubleOptions, type HomeserverDouble, type RequestContext } from './homeserver-double.js';

export interface MasDevicesOptions extends DoubleOptions {
  /** `account_management_actions_supported`; null: the field is left out. Default: the double's list. */
  accountActions?: string[] | null;
  /** A visit to the page with a deletion action deletes the device at once. Default false. */
  approveOnVisit?: boolean;
}

export interface AccountPageVisit {
  action: string | null;
  deviceId: string | null;
}

export interface MasDevicesDouble extends HomeserverDouble {
  accountPageVisits: AccountPageVisit[];
  approveDeletion(deviceId: string): void;
}

const DELETION_ROUTES = [/^\/_matrix\/client\/(?:r0|v3)\/delete_devices$/, /^\/_matrix\/client\/(?:r0|v3)\/devices\/[^/]+$/];
const METADATA = /^\/_matrix\/client\/(?:v1|unstable\/org\.matrix\.msc2965)\/auth_metadata$|^\/\.well-known\/openid-configuration$/;
const DELETE_ACTIONS = ['org.matrix.device_delete', 'org.matrix.session_end'];

/** The rules above as an `intercept` for any double in OAuth mode (`attach` it once started), e.g. beside the MAS admin mode. */
export function masDevicesRules(opts: Pick<MasDevicesOptions, 'accountActions' | 'approveOnVisit'> = {}) {
  const { accountActions, approveOnVisit = false } = opts;
  const accountPageVisits: AccountPageVisit[] = [];
  let double: HomeserverDouble | null = null;

  function approve(deviceId: string): void {
    if (!accountPageVisits.some((v) => v.deviceId === deviceId && v.action !== null && DELETE_ACTIONS.includes(v.action))) {
      throw new Error(`mas-devices double: approveDeletion(${JSON.stringify(deviceId)}): the account page was never opened to delete that device`);
    }
    double!.endSession(deviceId);
  }

  function intercept(req: RequestContext, next: () => Answer): Answer {
    const deleting = (req.method === 'POST' && DELETION_ROUTES[0]!.test(req.pathname)) || (req.method === 'DELETE' && DELETION_ROUTES[1]!.test(req.pathname));
    if (deleting) return { status: 404, json: { errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' } };
    if (req.method === 'GET' && METADATA.test(req.pathname)) {
      const answer = next();
      if (answer.status !== 200 || accountActions === undefined) return answer;
      const { account_management_actions_supported: _dropped, ...json } = answer.json as Record<string, unknown>;
      return { ...answer, json: accountActions === null ? json : { ...json, account_management_actions_supported: accountActions } };
    }
    if (req.method === 'GET' && req.pathname === '/account/') {
      const visit = { action: req.query.get('action'), deviceId: req.query.get('device_id') };
      accountPageVisits.push(visit);
      if (approveOnVisit && visit.deviceId !== null && visit.action !== null && DELETE_ACTIONS.includes(visit.action)) approve(visit.deviceId);
      return { status: 200, json: { page: 'account' } };
    }
    return next();
  }

  return {
    intercept,
    attach<D extends HomeserverDouble>(started: D): D & Pick<MasDevicesDouble, 'accountPageVisits' | 'approveDeletion'> {
      double = started;
      return Object.assign(started, { accountPageVisits, approveDeletion: approve });
    },
  };
}

export async function startMasDevicesDouble(opts: MasDevicesOptions = {}): Promise<MasDevicesDouble> {
  const { accountActions, approveOnVisit, ...doubleOptions } = opts;
  const rules = masDevicesRules({ accountActions, approveOnVisit });
  return rules.attach(await startHomeserverDouble({ ...doubleOptions, oauth: doubleOptions.oauth ?? {}, intercept: rules.intercept }));
}
