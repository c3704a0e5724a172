import { createRequire } from 'node:module';
import type { Agent, buildConnector, Dispatcher, Pool } from 'undici';

// undici's index loads all of undici: fetch, WebSocket, EventSource, caches, mocks, interceptors.
// That took 95 ms on Node 24 (80 ms on Node 20), against 33 ms for the parts mxs uses: the
// dispatchers and the request API. So mxs loads those parts by their paths in the package, as
// undici's index does (undici is pinned exactly in package.json; test/unit/undici.test.ts checks
// that they are the classes the index exports). Every network command pays this once, and under 50
// concurrent `mxs token` the process that refreshes holds the lock while it loads.

export interface UndiciCore {
  Agent: typeof Agent;
  Pool: typeof Pool;
  buildConnector: typeof buildConnector;
}

let core: UndiciCore | undefined;

export function undiciCore(): UndiciCore {
  if (core) return core;
  // Not named `require`: the start-up bundle (esbuild) must leave these calls to Node at run time.
  const load = createRequire(import.meta.url);
  const dispatcher = load('undici/lib/dispatcher/dispatcher.js') as { prototype: object };
  // What undici's index does: every dispatcher gets request(), stream(), pipeline()…
  Object.assign(dispatcher.prototype, load('undici/lib/api/index.js'));
  core = {
    Agent: load('undici/lib/dispatcher/agent.js') as typeof Agent,
    Pool: load('undici/lib/dispatcher/pool.js') as typeof Pool,
    buildConnector: load('undici/lib/core/connect.js') as typeof buildConnector,
  };
  return core;
}

/** undici's request(url, options) without its index: the URL split into origin and path, as undici does. */
export function request(dispatcher: Dispatcher, url: string, options: Omit<Dispatcher.RequestOptions, 'origin' | 'path'>): Promise<Dispatcher.ResponseData> {
  const u = new URL(url);
  return dispatcher.request({ ...options, origin: u.origin, path: `${u.pathname}${u.search}` });
}
