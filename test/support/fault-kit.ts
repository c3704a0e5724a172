// Helpers of the suites that spawn mxs and interfere with it (faults, proxy, exec, OAuth): a private copy of the
// build, a spawn that hands back the child (to SIGKILL it mid-run, to read its /proc entry and its stderr as it
// comes), a tiny HTTP proxy in front of the homeserver double (to hold a committed response in flight, or to swap
// the double's tokens for canary values), and byte-exact snapshots of a stored session.
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { cp, mkdtemp, readdir, readFile, rm, stat, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, REPO, startMxs as startCli, type Started as BaseStarted } from './cli.js';

let bin = BIN;

/**
 * A private copy of the build (bin/, dist/, oclif.manifest.json, package.json; node_modules linked): others
 * rebuild dist/ in place while a long suite runs, and tsc/oclif rewrite files non-atomically, so a child that
 * starts mid-rewrite fails with exit 1. The copy is taken when no build file has changed for 2 s.
 */
async function isolateBuild(): Promise<() => Promise<void>> {
  const parts = ['bin', 'dist', 'oclif.manifest.json', 'package.json'];
  const newest = async () => {
    let max = 0;
    const walk = async (p: string): Promise<void> => {
      const st = await stat(p);
      max = Math.max(max, st.mtimeMs);
      if (st.isDirectory()) for (const e of await readdir(p)) await walk(join(p, e));
    };
    for (const part of parts) await walk(join(REPO, part));
    return max;
  };
  const dir = await mkdtemp(join(tmpdir(), 'mxs-build-'));
  for (let attempt = 0; ; attempt++) {
    const before = await newest();
    if (Date.now() - before < 2000 && attempt < 30) {
      await new Promise((r) => setTimeout(r, 1000));
      continue;
    }
    for (const part of parts) await cp(join(REPO, part), join(dir, part), { recursive: true, force: true });
    if ((await newest()) === before || attempt >= 30) break;
  }
  await symlink(join(REPO, 'node_modules'), join(dir, 'node_modules'), 'dir');
  bin = join(dir, 'bin', 'run.js');
  return async () => {
    bin = BIN;
    await rm(dir, { recursive: true, force: true });
  };
}

/** isolateBuild() around the calling suite: the copy is taken before its first test and removed after its last. */
export function useIsolatedBuild(): void {
  let restore: (() => Promise<void>) | undefined;
  beforeAll(async () => {
    restore = await isolateBuild();
  }, 90_000);
  afterAll(async () => {
    await restore?.();
  });
}

/** The CLI entry point children are spawned with: the private copy while a suite isolates the build. */
export function currentBin(): string {
  return bin;
}

/** Collects a running mxs's stderr, and waits for a pattern in it. */
export function watchStderr(run: BaseStarted) {
  let text = '';
  run.child.stderr!.on('data', (d) => (text += d));
  return {
    text: () => text,
    async match(re: RegExp): Promise<RegExpMatchArray> {
      await waitFor(`stderr to match ${re}`, () => re.test(text), 20_000, 20);
      return text.match(re)!;
    },
  };
}

export interface Started extends BaseStarted {
  /** /proc/<pid>/cmdline and /proc/<pid>/environ, read right after spawn ('' if the process was already gone). */
  procInfo: Promise<{ cmdline: string; environ: string }>;
}

/** Like runMxs (same env defaults), against the private build copy, also reading the process's argv and env. */
export function startMxs(args: string[], opts: { env?: Record<string, string | undefined>; input?: string; timeoutMs?: number } = {}): Started {
  const started = startCli(args, { ...opts, bin });
  const read = (f: string) => readFile(`/proc/${started.child.pid}/${f}`, 'latin1').catch(() => '');
  const procInfo = (async () => ({ cmdline: await read('cmdline'), environ: await read('environ') }))();
  return { ...started, procInfo };
}

export async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 15_000, everyMs = 2): Promise<number> {
  const start = Date.now();
  for (;;) {
    if (await check()) return Date.now() - start;
    if (Date.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export const exists = (p: string) => stat(p).then(() => true, () => false);

// ---------------------------------------------------------------------------------------------
// A stored session, byte for byte.

export interface StoredSession {
  session: Buffer;
  secret: Buffer;
}

export function sessionPaths(configDir: string, profile = 'default') {
  return {
    session: join(configDir, 'sessions', `${profile}.json`),
    secret: join(configDir, 'secrets', `${profile}.json`),
    lock: join(configDir, 'locks', `${profile}.lock`),
  };
}

export async function snapshot(configDir: string, profile = 'default'): Promise<StoredSession> {
  const p = sessionPaths(configDir, profile);
  return { session: await readFile(p.session), secret: await readFile(p.secret) };
}

// ---------------------------------------------------------------------------------------------
// A proxy in front of the double.

export interface ProxiedRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
  body: string;
}

export interface ProxiedResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

export interface ProxyHooks {
  /** Rewrite what the client sent before it reaches the double. */
  request?: (req: ProxiedRequest) => ProxiedRequest;
  /** Rewrite (or hold, by returning a slow promise) the double's answer before it reaches the client. */
  response?: (res: ProxiedResponse, req: ProxiedRequest) => ProxiedResponse | Promise<ProxiedResponse>;
}

export interface Proxy {
  url: string;
  close(): Promise<void>;
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'content-length', 'host']);

/** Serves `server` on 127.0.0.1 at a free port; close() also ends the connections still open (keep-alive, held requests). */
export async function listenLocally(server: http.Server): Promise<Proxy> {
  const sockets = new Set<Socket>();
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}

export function startProxy(target: string, hooks: ProxyHooks = {}): Promise<Proxy> {
  const server = http.createServer((inReq, outRes) => {
    void (async () => {
      const chunks: Buffer[] = [];
      for await (const c of inReq) chunks.push(c as Buffer);
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(inReq.headers)) if (v !== undefined && !HOP_BY_HOP.has(k)) headers[k] = Array.isArray(v) ? v.join(', ') : v;
      let req: ProxiedRequest = { method: inReq.method ?? 'GET', path: inReq.url ?? '/', headers, body: Buffer.concat(chunks).toString('utf8') };
      if (hooks.request) req = hooks.request(req);
      const upstream = await fetch(target + req.path, {
        method: req.method,
        headers: req.headers,
        body: req.method === 'GET' || req.method === 'HEAD' ? undefined : req.body,
        redirect: 'manual',
      });
      const resHeaders: Record<string, string> = {};
      upstream.headers.forEach((v, k) => {
        if (!HOP_BY_HOP.has(k)) resHeaders[k] = v;
      });
      let res: ProxiedResponse = { status: upstream.status, headers: resHeaders, body: await upstream.text() };
      if (hooks.response) res = await hooks.response(res, req);
      if (outRes.destroyed) return;
      const body = Buffer.from(res.body, 'utf8');
      outRes.writeHead(res.status, { ...res.headers, 'content-length': String(body.length) });
      outRes.end(body);
    })().catch(() => outRes.destroy());
  });
  return listenLocally(server);
}

/**
 * A proxy that shows the client canary tokens instead of the double's `syt_`/`syr_` ones (so the
 * leak scan also catches a token that no shape-based redaction would recognise), and maps them back
 * on the way in.
 */
export async function startCanaryProxy(target: string): Promise<Proxy & { canaries: () => string[] }> {
  const toCanary = new Map<string, string>();
  const toReal = new Map<string, string>();
  let n = 0;
  const canaryFor = (real: string) => {
    let c = toCanary.get(real);
    if (!c) {
      // Printable, token-like but not shaped like any Matrix token, so only value-based redaction hides it.
      c = `CANARY${real.startsWith('syr_') ? 'RT' : 'AT'}${++n}x${Math.random().toString(36).slice(2, 12)}Q`;
      toCanary.set(real, c);
      toReal.set(c, real);
    }
    return c;
  };
  const swap = (text: string, map: (s: string) => string | undefined, pattern: RegExp) => text.replace(pattern, (m) => map(m) ?? m);
  const proxy = await startProxy(target, {
    request: (req) => {
      const inbound = /CANARY(?:AT|RT)\d+x[a-z0-9]+Q/g;
      const headers = { ...req.headers };
      if (headers.authorization) headers.authorization = swap(headers.authorization, (c) => toReal.get(c), inbound);
      return { ...req, headers, body: swap(req.body, (c) => toReal.get(c), inbound), path: swap(req.path, (c) => toReal.get(c), inbound) };
    },
    response: (res) => ({ ...res, body: swap(res.body, canaryFor, /sy[tr]_[A-Za-z0-9_]+/g) }),
  });
  return { ...proxy, canaries: () => [...toReal.keys()] };
}
