#!/usr/bin/env node
// Benchmark of `mxs proxy` (issue 13, Performance). Not a test: it measures and reports.
//
//   npm run build && node scripts/bench-proxy.mjs [--json] [--duration S] [--rounds N] [--soak S] [--polls N] [--poll-seconds S]
//
//   --duration S      seconds per throughput run (default 5)
//   --rounds N        direct/proxied throughput pairs, alternated (default 3); medians are reported
//   --soak S          length of the soak (default 300); RSS is compared at 1/5 of it and at its end
//   --polls N         concurrent long-polls held (default 100), each --poll-seconds long (default 30)
//   --json            one JSON document instead of the table
//
// Everything runs on loopback against the test homeserver double (test/support/homeserver-double.ts), each
// double in a child process of its own so that it, the proxy and the load generator (autocannon, in this
// process) do not share an event loop:
// 1. throughput: small authenticated GETs (/account/whoami) for --duration seconds at 10 connections, directly
//    with the session's access token and through the proxy with the proxy token, alternated --rounds times.
//    Target: proxied >= 0.8 x direct. For reference, a third leg goes through a bare forwarder (node:http
//    in front, an undici Pool behind, the Authorization header swapped and nothing else): the floor for
//    any proxy built this way on this machine, so that the report shows what is mxs's own cost.
// 2. latency: 2000 sequential GETs on one kept-alive connection, direct and proxied alternated in blocks of
//    100. Target: added p50 <= 1 ms.
// 3. long-polls: --polls concurrent /sync requests the double holds --poll-seconds each, through a fresh proxy;
//    its RSS is sampled (/proc/PID/status VmRSS) while they are held. Target: <= 120 MiB, every poll answered 200.
// 4. soak: --soak seconds of mixed load (GETs, PUTs with a body, 1 s long-polls) from 20 clients pausing 100 ms on
//    a double whose tokens live 60 s (so the proxy refreshes about every 30 s), RSS sampled every second.
//    Target: the mean RSS of the last 10 s at most 10 MiB above the mean over the 10 s after the first fifth
//    (the "within 10 MiB" is about leaks: RSS that falls, memory the heap gave back, passes and is
//    shown as the fall it is).
// The proxy runs from a snapshot of the build taken at start (bin/, dist/, oclif.manifest.json), so a
// concurrent rebuild cannot break it half-way. Exit 0 when every target passes, 1 when one fails, 2 when the
// benchmark could not run. Everything started is stopped on exit, error or Ctrl-C.
import { spawn } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Pool, request } from 'undici';

const REPO = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const NODE = process.execPath;
const PROXY_TOKEN = `bench-${Math.random().toString(36).slice(2)}-${Date.now()}`;
const WHOAMI = '/_matrix/client/v3/account/whoami';

function usage(msg) {
  if (msg) console.error(`bench-proxy: ${msg}`);
  console.error('usage: node scripts/bench-proxy.mjs [--json] [--duration S] [--rounds N] [--soak S] [--polls N] [--poll-seconds S]');
  process.exit(2);
}

function parseOptions(argv) {
  const opts = { json: false, duration: 5, rounds: 3, soak: 300, polls: 100, pollSeconds: 30 };
  const num = (name, v, min) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min) usage(`${name} needs a number >= ${min}, got ${JSON.stringify(v)}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const [a, inline] = argv[i].split(/=(.*)/s, 2);
    const value = () => (inline !== undefined ? inline : argv[++i]);
    if (a === '--json') opts.json = true;
    else if (a === '--duration') opts.duration = num(a, value(), 1);
    else if (a === '--rounds') opts.rounds = num(a, value(), 1);
    else if (a === '--soak') opts.soak = num(a, value(), 10);
    else if (a === '--polls') opts.polls = num(a, value(), 1);
    else if (a === '--poll-seconds') opts.pollSeconds = num(a, value(), 1);
    else if (a === '--help' || a === '-h') usage();
    else usage(`unknown option ${argv[i]}`);
  }
  return opts;
}

// --- resources --------------------------------------------------------------------------------------

const children = new Set();
const tempDirs = [];
function cleanup() {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {
      // gone
    }
  }
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
}
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));

const say = (opts, line) => {
  if (!opts.json) process.stderr.write(`${line}\n`);
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function snapshotBuild() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mxs-bench-proxy-build-'));
  tempDirs.push(dir);
  for (const part of ['bin', 'dist', 'oclif.manifest.json', 'package.json']) cpSync(path.join(REPO, part), path.join(dir, part), { recursive: true });
  symlinkSync(path.join(REPO, 'node_modules'), path.join(dir, 'node_modules'), 'dir');
  const manifest = JSON.parse(readFileSync(path.join(dir, 'oclif.manifest.json'), 'utf8'));
  if (!manifest.commands?.proxy) throw new Error('the build has no proxy command: run npm run build first');
  return path.join(dir, 'bin', 'run.js');
}

/** A homeserver double in a child process; `control(message)` injects faults (IPC). */
async function startDouble(options) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mxs-bench-proxy-double-'));
  tempDirs.push(dir);
  const script = path.join(dir, 'double.mjs');
  writeFileSync(
    script,
    `import { importTs } from ${JSON.stringify(path.join(REPO, 'scripts', 'import-ts.mjs'))};
const { startHomeserverDouble } = await importTs(${JSON.stringify(path.join(REPO, 'test', 'support', 'homeserver-double.ts'))});
const d = await startHomeserverDouble(${JSON.stringify(options)});
// The double records every request: keep that from growing for the length of a soak.
setInterval(() => { d.requests.length = 0; }, 1000).unref();
process.on('message', (m) => { if (m.inject) for (let i = 0; i < (m.times ?? 1); i++) d.inject(m.inject, m.fault); });
process.send({ url: d.url });
`,
  );
  const child = spawn(NODE, [script], { cwd: REPO, stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  children.add(child);
  const url = await new Promise((resolve, reject) => {
    child.once('message', (m) => resolve(m.url));
    child.once('exit', (code) => reject(new Error(`the homeserver double exited (${code})`)));
  });
  return { url, control: (m) => child.send(m), child };
}

function run(bin, args, env, input) {
  return new Promise((resolve, reject) => {
    const child = spawn(NODE, [bin, ...args], { env: { ...process.env, NO_COLOR: '1', ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(input ?? '');
  });
}

/** A config dir logged in to the double as alice (file storage); the session's access token. */
async function loggedIn(bin, double) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mxs-bench-proxy-home-'));
  tempDirs.push(dir);
  const env = { MXS_CONFIG_DIR: path.join(dir, 'config'), MXS_STORAGE: 'file' };
  const r = await run(bin, ['login', double.url, '-u', 'alice', '--password-stdin'], env, 'alice-pw\n');
  if (r.code !== 0) throw new Error(`mxs login failed: ${r.stderr}`);
  const secret = JSON.parse(readFileSync(path.join(env.MXS_CONFIG_DIR, 'secrets', 'default.json'), 'utf8'));
  return { env, accessToken: secret.accessToken };
}

/**
 * The floor for any proxy built like mxs's (node:http in front, an undici Pool behind), for reference: a
 * forwarder that swaps the Authorization header and does nothing else (no token checks, routes, refresh,
 * log, header rules). Same Node, same libraries, a process of its own.
 */
async function startBareForwarder(upstream, realToken) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mxs-bench-proxy-bare-'));
  tempDirs.push(dir);
  const script = path.join(dir, 'bare.cjs');
  writeFileSync(
    script,
    `const http = require('node:http');
const { Pool } = require(${JSON.stringify(path.join(REPO, 'node_modules', 'undici'))});
const pool = new Pool(${JSON.stringify(upstream)}, { keepAliveTimeout: 30000 });
const auth = 'Bearer ' + process.env.REAL_TOKEN;
const server = http.createServer((req, res) => {
  const headers = { ...req.headers, authorization: auth };
  delete headers.host; delete headers.connection;
  pool.request({ path: req.url, method: req.method, headers, body: req.method === 'GET' || req.method === 'HEAD' ? null : req }).then(
    (up) => { res.writeHead(up.statusCode, up.headers); up.body.pipe(res); },
    () => { res.writeHead(502); res.end(); },
  );
});
server.keepAliveTimeout = 75000;
server.listen(0, '127.0.0.1', () => process.send({ url: 'http://127.0.0.1:' + server.address().port }));
`,
  );
  const child = spawn(NODE, [script], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'], env: { ...process.env, REAL_TOKEN: realToken } });
  children.add(child);
  const url = await new Promise((resolve, reject) => {
    child.once('message', (m) => resolve(m.url));
    child.once('exit', (code) => reject(new Error(`the bare forwarder exited (${code})`)));
  });
  return { url, stop: () => (child.kill('SIGTERM'), children.delete(child)) };
}

async function startProxy(bin, env) {
  const child = spawn(NODE, [bin, 'proxy', '--json', '--quiet'], { env: { ...process.env, NO_COLOR: '1', ...env, MXS_PROXY_TOKEN: PROXY_TOKEN }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  for (let i = 0; !out.includes('\n'); i++) {
    if (child.exitCode !== null || i > 600) throw new Error(`mxs proxy did not start: ${err}`);
    await sleep(50);
  }
  const { url } = JSON.parse(out.split('\n')[0]);
  return {
    url,
    pid: child.pid,
    rssKiB: () => {
      try {
        return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))[1]);
      } catch {
        return NaN;
      }
    },
    async stop() {
      child.kill('SIGTERM');
      await new Promise((r) => (child.exitCode !== null ? r() : child.once('close', r)));
      children.delete(child);
      return { code: child.exitCode, stderr: err };
    },
  };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const quantile = (xs, q) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};
const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
const mib = (kib) => Math.round((kib / 1024) * 10) / 10;

// --- the cases ----------------------------------------------------------------------------------------

async function throughput(opts, direct, proxied, bare) {
  const { default: autocannon } = await import('autocannon');
  const once = (url, token, duration = opts.duration) =>
    autocannon({ url: url + WHOAMI, connections: 10, duration, headers: { authorization: `Bearer ${token}` } });
  // Warm-up (JIT, connection pools) not counted.
  await once(direct.url, direct.token, 1);
  await once(proxied.url, proxied.token, 1);
  await once(bare.url, 'unused', 1);
  const rounds = [];
  for (let i = 0; i < opts.rounds; i++) {
    const d = await once(direct.url, direct.token);
    const p = await once(proxied.url, proxied.token);
    const b = await once(bare.url, 'unused');
    rounds.push({ direct: d, proxied: p, bare: b });
    say(opts, `  round ${i + 1}: direct ${Math.round(d.requests.average)} req/s, proxied ${Math.round(p.requests.average)} req/s, bare forwarder ${Math.round(b.requests.average)} req/s (non-2xx ${d.non2xx}/${p.non2xx}/${b.non2xx}, errors ${d.errors}/${p.errors}/${b.errors})`);
  }
  const directRps = median(rounds.map((r) => r.direct.requests.average));
  const proxiedRps = median(rounds.map((r) => r.proxied.requests.average));
  const bareRps = median(rounds.map((r) => r.bare.requests.average));
  const failures = rounds.reduce((n, r) => n + r.direct.non2xx + r.proxied.non2xx + r.direct.errors + r.proxied.errors + r.direct.timeouts + r.proxied.timeouts, 0);
  return {
    directRps: Math.round(directRps),
    proxiedRps: Math.round(proxiedRps),
    ratio: Math.round((proxiedRps / directRps) * 100) / 100,
    bareRps: Math.round(bareRps),
    bareRatio: Math.round((bareRps / directRps) * 100) / 100,
    vsBare: Math.round((proxiedRps / bareRps) * 100) / 100,
    failures,
  };
}

async function latency(direct, proxied, n = 2000, block = 100) {
  const time = async (pool, token) => {
    const t0 = process.hrtime.bigint();
    const res = await pool.request({ path: WHOAMI, method: 'GET', headers: { authorization: `Bearer ${token}` } });
    await res.body.text();
    if (res.statusCode !== 200) throw new Error(`latency: HTTP ${res.statusCode}`);
    return Number(process.hrtime.bigint() - t0) / 1e6;
  };
  const dPool = new Pool(direct.url, { connections: 1 });
  const pPool = new Pool(proxied.url, { connections: 1 });
  const d = [];
  const p = [];
  try {
    for (let i = 0; i < 200; i++) {
      await time(dPool, direct.token);
      await time(pPool, proxied.token);
    }
    for (let done = 0; done < n; done += block) {
      for (let i = 0; i < block; i++) d.push(await time(dPool, direct.token));
      for (let i = 0; i < block; i++) p.push(await time(pPool, proxied.token));
    }
  } finally {
    await dPool.close();
    await pPool.close();
  }
  const round = (x) => Math.round(x * 1000) / 1000;
  return { directP50: round(median(d)), proxiedP50: round(median(p)), addedP50: round(median(p) - median(d)), directP99: round(quantile(d, 0.99)), proxiedP99: round(quantile(p, 0.99)) };
}

async function longPolls(opts, double, proxy) {
  double.control({ inject: 'GET /_matrix/client/v3/sync', fault: { delayMs: opts.pollSeconds * 1000, status: 200, json: { next_batch: 'held' } }, times: opts.polls });
  await sleep(200);
  const pool = new Pool(proxy.url, { connections: opts.polls + 10, headersTimeout: (opts.pollSeconds + 30) * 1000, bodyTimeout: (opts.pollSeconds + 30) * 1000 });
  const samples = [];
  const sampler = setInterval(() => samples.push(proxy.rssKiB()), 250);
  const t0 = Date.now();
  try {
    const statuses = await Promise.all(
      Array.from({ length: opts.polls }, async () => {
        try {
          const res = await pool.request({ path: `/_matrix/client/v3/sync?timeout=${opts.pollSeconds * 1000}`, method: 'GET', headers: { authorization: `Bearer ${PROXY_TOKEN}` } });
          await res.body.text();
          return res.statusCode;
        } catch (err) {
          return String(err.code ?? err);
        }
      }),
    );
    const seconds = (Date.now() - t0) / 1000;
    return { polls: opts.polls, answered200: statuses.filter((s) => s === 200).length, seconds: Math.round(seconds * 10) / 10, maxRssMiB: mib(Math.max(...samples.filter(Number.isFinite))) };
  } finally {
    clearInterval(sampler);
    await pool.close();
  }
}

async function soak(opts, bin) {
  const double = await startDouble({ accessTokenLifetimeMs: 60_000 });
  const session = await loggedIn(bin, double);
  const proxy = await startProxy(bin, session.env);
  const seconds = opts.soak;
  const samples = []; // [t, rssKiB]
  const t0 = Date.now();
  const expiries = new Set();
  const sampler = setInterval(() => {
    samples.push([(Date.now() - t0) / 1000, proxy.rssKiB()]);
    request(`${proxy.url}/_mxs/health`, { headers: { authorization: `Bearer ${PROXY_TOKEN}` } })
      .then((r) => r.body.json())
      .then((h) => expiries.add(h.expiresAt), () => {});
  }, 1000);
  // Long-polls the double holds 1 s: queued up front (a fault per request, consumed in order).
  double.control({ inject: 'GET /_matrix/client/v3/sync', fault: { delayMs: 1000, status: 200, json: { next_batch: 'soak' } }, times: Math.ceil(seconds * 15) });
  await sleep(500);
  const pool = new Pool(proxy.url, { connections: 20 });
  const counts = { ok: 0, failed: 0 };
  const headers = { authorization: `Bearer ${PROXY_TOKEN}`, 'content-type': 'application/json' };
  const one = async (n) => {
    const kind = n % 20;
    try {
      let res;
      if (kind === 0) {
        res = await pool.request({ path: `/_matrix/client/v3/sync?since=s${n}&timeout=1000`, method: 'GET', headers });
      } else if (kind < 5) {
        // The double has no room API: 404 after the proxy has forwarded the body is the expected answer.
        res = await pool.request({ path: `/_matrix/client/v3/rooms/!r:localhost/send/m.room.message/t${n}`, method: 'PUT', headers, body: JSON.stringify({ msgtype: 'm.text', body: `message ${n} ${'x'.repeat(n % 2000)}` }) });
      } else {
        res = await pool.request({ path: WHOAMI, method: 'GET', headers });
      }
      await res.body.text();
      if ((kind > 0 && kind < 5 && res.statusCode === 404) || res.statusCode === 200) counts.ok++;
      else counts.failed++;
    } catch {
      counts.failed++;
    }
  };
  try {
    // 20 workers, each pausing 100 ms between requests (at most 200 requests/s; about 130 measured).
    const until = t0 + seconds * 1000;
    let n = 0;
    await Promise.all(
      Array.from({ length: 20 }, async () => {
        while (Date.now() < until) {
          await one(n++);
          await sleep(100);
        }
      }),
    );
  } finally {
    clearInterval(sampler);
    await pool.close();
  }
  const stopped = await proxy.stop();
  double.child.kill('SIGTERM');
  const first = seconds / 5;
  const windowMean = (from, to) => mean(samples.filter(([t, r]) => t >= from && t < to && Number.isFinite(r)).map(([, r]) => r));
  const early = windowMean(first, first + 10);
  const late = windowMean(seconds - 10, seconds + 1);
  return {
    seconds,
    requests: counts.ok + counts.failed,
    failed: counts.failed,
    earlyWindow: `${first}-${first + 10} s`,
    earlyRssMiB: mib(early),
    lateRssMiB: mib(late),
    growthMiB: mib(late - early),
    maxRssMiB: mib(Math.max(...samples.map(([, r]) => r).filter(Number.isFinite))),
    exitCode: stopped.code,
    refreshes: Math.max(0, expiries.size - 1),
  };
}

// --- main ---------------------------------------------------------------------------------------------

async function main() {
  const opts = parseOptions(process.argv.slice(2));
  const bin = snapshotBuild();
  say(opts, `mxs proxy benchmark on ${os.cpus().length} cores, Node ${process.versions.node}`);

  const double = await startDouble({ accessTokenLifetimeMs: 3_600_000 });
  const session = await loggedIn(bin, double);
  const proxy = await startProxy(bin, session.env);
  const direct = { url: double.url, token: session.accessToken };
  const proxied = { url: proxy.url, token: PROXY_TOKEN };
  const idleRssMiB = mib(proxy.rssKiB());

  say(opts, `throughput: ${opts.rounds} x ${opts.duration} s of GET ${WHOAMI}, 10 connections (direct, mxs proxy, and for reference a bare node:http + undici forwarder)`);
  const bare = await startBareForwarder(double.url, session.accessToken);
  const tp = await throughput(opts, direct, proxied, bare);
  bare.stop();
  say(opts, 'latency: 2000 sequential GETs each way, one connection');
  const lat = await latency(direct, proxied);
  await proxy.stop();
  // A proxy of its own, so what throughput left on its heap does not count here.
  say(opts, `long-polls: ${opts.polls} x ${opts.pollSeconds} s /sync held through a fresh proxy`);
  const pollProxy = await startProxy(bin, session.env);
  await sleep(500);
  const pollIdleRssMiB = mib(pollProxy.rssKiB());
  const polls = { ...(await longPolls(opts, double, pollProxy)), idleRssMiB: pollIdleRssMiB };
  await pollProxy.stop();
  double.child.kill('SIGTERM');
  say(opts, `soak: ${opts.soak} s of mixed load (20 clients, 100 ms pauses, 60 s tokens)`);
  const sk = await soak(opts, bin);

  const checks = [
    { name: 'proxied throughput >= 0.8 x direct', pass: tp.ratio >= 0.8 && tp.failures === 0, value: `${tp.proxiedRps} vs ${tp.directRps} req/s = ${tp.ratio}x, ${tp.failures} failed (a bare node:http + undici forwarder: ${tp.bareRps} req/s = ${tp.bareRatio}x; mxs proxy = ${tp.vsBare}x of it)` },
    { name: 'added p50 latency <= 1 ms', pass: lat.addedP50 <= 1, value: `+${lat.addedP50} ms (p50 ${lat.directP50} → ${lat.proxiedP50} ms; p99 ${lat.directP99} → ${lat.proxiedP99} ms)` },
    { name: `${opts.polls} concurrent long-polls held, RSS <= 120 MiB`, pass: polls.answered200 === polls.polls && polls.maxRssMiB <= 120, value: `${polls.answered200}/${polls.polls} answered 200 after ${polls.seconds} s, max RSS ${polls.maxRssMiB} MiB (idle ${polls.idleRssMiB} MiB)` },
    { name: `RSS after the ${opts.soak} s soak at most 10 MiB above its value after the first fifth`, pass: sk.growthMiB <= 10 && sk.failed === 0, value: `${sk.earlyRssMiB} → ${sk.lateRssMiB} MiB (${sk.growthMiB >= 0 ? '+' : ''}${sk.growthMiB}), max ${sk.maxRssMiB} MiB, ${sk.requests} requests, ${sk.failed} failed, ${sk.refreshes} refreshes` },
  ];
  const report = { node: process.versions.node, cores: os.cpus().length, idleRssMiB, throughput: tp, latency: lat, longPolls: polls, soak: sk, checks };
  if (opts.json) {
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  } else {
    process.stdout.write('\n| check | result | measured |\n|---|---|---|\n');
    for (const c of checks) process.stdout.write(`| ${c.name} | ${c.pass ? 'pass' : 'FAIL'} | ${c.value} |\n`);
  }
  return checks.every((c) => c.pass) ? 0 : 1;
}

main().then(
  (code) => {
    cleanup();
    process.exit(code);
  },
  (err) => {
    console.error(`bench-proxy: ${err.stack ?? err}`);
    cleanup();
    process.exit(2);
  },
);
