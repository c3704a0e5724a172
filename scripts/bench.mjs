#!/usr/bin/env node
// Start-up and concurrency benchmark for mxs (issue 6). Not a test: it measures and reports.
//
//   npm run bench                         build, then run this script
//   node scripts/bench.mjs [--runs N] [--json] [--concurrency N] [--rounds N]
//
//   --runs N         timed runs per start-up case, after 3 warm-ups (default 15)
//   --json           print one JSON document instead of the table
//   --concurrency N  processes launched at once in the concurrency case (default 50)
//   --rounds N       repetitions of the concurrency pair (default 3)
//
// Start-up cases run interleaved with the `node -e 0` baseline (baseline, case, baseline, case...)
// so machine noise hits both alike. Wall time is spawn -> exit of an unwrapped child; peak RSS comes
// from a second, equally interleaved pass under `/usr/bin/time -f %M` ('n/a' without GNU time).
//
// Targets: status, status --json and token: median <= 2.0 x `node -e 0`'s, peak RSS <= 70 MiB;
// N concurrent `token --min-valid 30s` on an expired session: 1 refresh, no failure, one token,
// wall <= 1.5 x N concurrent `status`. Exit 0 when every target passes, 1 when one fails,
// 2 when the benchmark itself could not run.
//
// It runs a snapshot of the built CLI (bin/, dist/, manifest) taken at start, so a concurrent rebuild
// in the same tree cannot break it half-way. Everything it starts (the homeserver double from
// test/support/homeserver-double.ts, temporary config dirs, child processes) is stopped and removed
// on exit, error or Ctrl-C.
import { spawn } from 'node:child_process';
import { accessSync, constants as fsc, cpSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { importTs } from './import-ts.mjs';
import { fileURLToPath } from 'node:url';

const REPO = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
let BIN = path.join(REPO, 'bin', 'run.js'); // the snapshot's, once taken
const NODE = process.execPath;
const TIME = '/usr/bin/time';
const WARMUPS = 3;
const RATIO_TARGET = 2.0;
const RSS_TARGET_MIB = 70;
const CONCURRENCY_RATIO_TARGET = 1.5;
const LONG_LIFETIME_MS = 60 * 60 * 1000;
const CHILD_TIMEOUT_MS = 60_000;

// --- options -------------------------------------------------------------------------------------

function usage(msg) {
  if (msg) console.error(`bench: ${msg}`);
  console.error('usage: node scripts/bench.mjs [--runs N] [--json] [--concurrency N] [--rounds N]');
  process.exit(2);
}

function parseOptions(argv) {
  const opts = { runs: 15, json: false, concurrency: 50, rounds: 3 };
  const int = (name, v, min) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) usage(`${name} needs an integer >= ${min}, got ${JSON.stringify(v)}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    let [a, v] = argv[i].split(/=(.*)/s, 2);
    const value = () => (v !== undefined ? v : argv[++i]);
    if (a === '--json') opts.json = true;
    else if (a === '--runs') opts.runs = int('--runs', value(), 1);
    else if (a === '--concurrency') opts.concurrency = int('--concurrency', value(), 1);
    else if (a === '--rounds') opts.rounds = int('--rounds', value(), 1);
    else if (a === '--help' || a === '-h') usage();
    else usage(`unknown option ${argv[i]}`);
  }
  return opts;
}

// --- resources and cleanup ------------------------------------------------------------------------

const live = new Set(); // children still running; each leads its own process group
const tempDirs = [];
let double = null;
let cleaning = null;

function killChildren() {
  for (const child of live) {
    try {
      process.kill(-child.pid, 'SIGKILL'); // its group: /usr/bin/time and the node under it
    } catch {
      try {
        child.kill('SIGKILL');
      } catch {
        /* already gone */
      }
    }
  }
  live.clear();
}

function removeTempDirs() {
  for (const dir of tempDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
}

function cleanup() {
  cleaning ??= (async () => {
    killChildren();
    const d = double;
    double = null;
    if (d) await d.close().catch(() => {});
    removeTempDirs();
  })();
  return cleaning;
}

// Last resort for a path that skips cleanup(): synchronous parts only.
process.on('exit', () => {
  killChildren();
  removeTempDirs();
});
for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]]) {
  process.once(signal, () => {
    if (!jsonMode) process.stderr.write(`\nbench: ${signal}, cleaning up\n`);
    cleanup().finally(() => process.exit(code));
  });
}
let jsonMode = false;

function makeTempDir(prefix) {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}

// --- the homeserver double ------------------------------------------------------------------------

/** The in-process homeserver double of the tests (TypeScript, node: builtins only). */
const loadDouble = () => importTs(path.join(REPO, 'test', 'support', 'homeserver-double.ts'));

// --- the CLI under test ---------------------------------------------------------------------------

/**
 * Copies the built CLI (bin/, dist/, package.json, oclif.manifest.json; node_modules linked) so a
 * rebuild by someone else in the same tree cannot swap files under a running benchmark.
 */
function snapshotApp(tmp) {
  const app = path.join(tmp, 'app');
  for (const entry of ['bin', 'dist', 'package.json', 'oclif.manifest.json']) {
    cpSync(path.join(REPO, entry), path.join(app, entry), { recursive: true });
  }
  symlinkSync(path.join(REPO, 'node_modules'), path.join(app, 'node_modules'), 'dir');
  return path.join(app, 'bin', 'run.js');
}

// --- child processes ------------------------------------------------------------------------------

let baseEnv;

function childEnv(configDir) {
  const env = {};
  // Nothing from the caller's MXS_* may change what is measured (e.g. MXS_NO_FAST_PATH).
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('MXS_')) env[k] = v;
  Object.assign(env, {
    NO_COLOR: '1',
    DBUS_SESSION_BUS_ADDRESS: 'unix:path=/nonexistent/mxs-bench-bus',
    MXS_CONFIG_DIR: configDir,
    MXS_STORAGE: 'file',
  });
  return env;
}

/**
 * Spawns one child (async: the double lives in this event loop) and resolves when it has exited and
 * its pipes are drained. `ms` is spawn -> 'exit' wall time.
 */
function run(cmd, args, { env = baseEnv, input = '', capture = false } = {}) {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawn(cmd, args, { env, stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    live.add(child);
    let stdout = '';
    let stderr = '';
    let ms;
    let exitAt;
    if (capture) {
      child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
      child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
    } else {
      child.stdout.resume();
      child.stderr.resume();
    }
    const timer = setTimeout(() => {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }, CHILD_TIMEOUT_MS);
    child.on('error', (err) => {
      clearTimeout(timer);
      live.delete(child);
      reject(err);
    });
    child.on('exit', () => {
      exitAt = process.hrtime.bigint();
      ms = Number(exitAt - t0) / 1e6;
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      live.delete(child);
      resolve({ code, signal, ms, exitAt, stdout, stderr });
    });
    child.stdin.on('error', () => {});
    child.stdin.end(input);
  });
}

const mxs = (args, opts) => run(NODE, [BIN, ...args], opts);

function describeFailure(label, r) {
  const why = r.signal ? `signal ${r.signal}` : `exit ${r.code}`;
  const err = (r.stderr || r.stdout || '').trim().split('\n').slice(-3).join(' | ');
  return `${label}: ${why}${err ? ` (${err})` : ''}`;
}

async function mustSucceed(label, promise) {
  const r = await promise;
  if (r.code !== 0) throw new Error(describeFailure(label, r));
  return r;
}

// --- statistics -----------------------------------------------------------------------------------

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Nearest-rank percentile. */
function percentile(xs, p) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.max(0, Math.ceil((p / 100) * s.length) - 1)];
}

const round = (x, digits = 1) => (x === null || x === undefined ? null : Math.round(x * 10 ** digits) / 10 ** digits);

// --- start-up cases -------------------------------------------------------------------------------

function startupCases() {
  return [
    { name: 'mxs status', args: ['status'], target: { ratio: RATIO_TARGET, rssMiB: RSS_TARGET_MIB } },
    { name: 'mxs status --json', args: ['status', '--json'], target: { ratio: RATIO_TARGET, rssMiB: RSS_TARGET_MIB } },
    { name: 'mxs token', args: ['token'], target: { ratio: RATIO_TARGET, rssMiB: RSS_TARGET_MIB } },
    { name: 'mxs --version', args: ['--version'], target: null },
  ];
}

const BASELINE = { name: 'node -e 0', argv: ['-e', '0'] };

function canUseTime() {
  try {
    accessSync(TIME, fsc.X_OK);
    return true;
  } catch {
    return false;
  }
}

async function timedRun(argv, label) {
  const r = await run(NODE, argv);
  if (r.code !== 0) throw new Error(describeFailure(label, r));
  return r.ms;
}

async function rssRun(argv, label, outFile) {
  const r = await run(TIME, ['-f', '%M', '-o', outFile, NODE, ...argv], { capture: true });
  if (r.code !== 0) throw new Error(describeFailure(`${label} (under ${TIME})`, r));
  const kib = Number((await readFile(outFile, 'utf8')).trim().split('\n').pop());
  if (!Number.isFinite(kib)) throw new Error(`${TIME} gave no peak RSS for ${label}`);
  return kib / 1024;
}

async function benchStartup(opts, tmp, progress) {
  const cases = startupCases().map((c) => ({ ...c, argv: [BIN, ...c.args], wall: [], rss: [] }));
  const base = { ...BASELINE, wall: [], rss: [] };
  const haveTime = canUseTime();
  const rssFile = path.join(tmp, 'time.out');

  // Warm-ups (page cache, compile cache), interleaved like the timed runs.
  for (let i = 0; i < WARMUPS; i++) {
    for (const c of cases) {
      await timedRun(base.argv, base.name);
      await timedRun(c.argv, c.name);
    }
  }
  // Timed runs: baseline, case, baseline, case, ...; the case order rotates each round.
  for (let i = 0; i < opts.runs; i++) {
    progress(`start-up run ${i + 1}/${opts.runs}`);
    for (let j = 0; j < cases.length; j++) {
      const c = cases[(i + j) % cases.length];
      base.wall.push(await timedRun(base.argv, base.name));
      c.wall.push(await timedRun(c.argv, c.name));
    }
  }
  // Peak RSS, in a separate pass so /usr/bin/time's own fork/exec stays out of the wall times.
  if (haveTime) {
    for (let i = 0; i < opts.runs; i++) {
      progress(`peak-RSS run ${i + 1}/${opts.runs}`);
      for (let j = 0; j < cases.length; j++) {
        const c = cases[(i + j) % cases.length];
        base.rss.push(await rssRun(base.argv, base.name, rssFile));
        c.rss.push(await rssRun(c.argv, c.name, rssFile));
      }
    }
  }

  const baseMedian = median(base.wall);
  const summarise = (c, isBase) => {
    const medianMs = median(c.wall);
    const ratio = medianMs / baseMedian;
    const peakRssMiB = c.rss.length ? Math.max(...c.rss) : null;
    let pass = null;
    const failures = [];
    if (!isBase && c.target) {
      if (ratio > c.target.ratio) failures.push(`${c.name}: median ${medianMs.toFixed(1)} ms is ${ratio.toFixed(2)}x node -e 0 (target <= ${c.target.ratio}x)`);
      if (peakRssMiB !== null && peakRssMiB > c.target.rssMiB) failures.push(`${c.name}: peak RSS ${peakRssMiB.toFixed(1)} MiB (target <= ${c.target.rssMiB} MiB)`);
      pass = failures.length === 0;
    }
    return {
      name: c.name,
      n: c.wall.length,
      medianMs: round(medianMs, 2),
      p90Ms: round(percentile(c.wall, 90), 2),
      minMs: round(Math.min(...c.wall), 2),
      ratio: round(ratio, 3),
      peakRssMiB: round(peakRssMiB, 1),
      target: isBase ? null : c.target,
      pass,
      failures,
    };
  };
  return { haveTime, cases: [summarise(base, true), ...cases.map((c) => summarise(c, false))] };
}

// --- concurrency case -----------------------------------------------------------------------------

/** Makes the stored session look expired (sessions file and secret file) and expires it at the double. */
async function expireStoredSession(configDir) {
  double.expireAccessTokens();
  const past = new Date(Date.now() - 60_000).toISOString();
  for (const file of [path.join(configDir, 'sessions', 'default.json'), path.join(configDir, 'secrets', 'default.json')]) {
    const data = JSON.parse(await readFile(file, 'utf8'));
    data.expiresAt = past;
    await writeFile(file, JSON.stringify(data, null, 2) + '\n'); // keeps the file's 0600 mode
  }
}

async function launchAll(n, args, env) {
  const t0 = process.hrtime.bigint();
  const results = await Promise.all(Array.from({ length: n }, () => mxs(args, { env, capture: true })));
  // From the first spawn until the last process exited.
  const last = results.reduce((m, r) => (r.exitAt > m ? r.exitAt : m), t0);
  const wallMs = Number(last - t0) / 1e6;
  return { wallMs, results };
}

async function benchConcurrency(opts, configDir, progress) {
  const env = childEnv(configDir);
  const rounds = [];
  for (let i = 0; i < opts.rounds; i++) {
    progress(`concurrency round ${i + 1}/${opts.rounds}`);
    await expireStoredSession(configDir);
    const before = double.count('/refresh');
    const token = await launchAll(opts.concurrency, ['token', '--min-valid', '30s'], env);
    const refreshes = double.count('/refresh') - before;
    const failed = token.results.filter((r) => r.code !== 0);
    const printed = new Set(token.results.filter((r) => r.code === 0).map((r) => r.stdout.trim()));
    const [only] = printed;
    const stored = JSON.parse(await readFile(path.join(configDir, 'secrets', 'default.json'), 'utf8')).accessToken;
    const sameToken = failed.length === 0 && printed.size === 1 && only === stored && double.accessTokenStatus(only) === 'valid';
    const status = await launchAll(opts.concurrency, ['status'], env);
    const statusFailed = status.results.filter((r) => r.code !== 0);
    rounds.push({
      tokenWallMs: round(token.wallMs, 1),
      statusWallMs: round(status.wallMs, 1),
      ratio: round(token.wallMs / status.wallMs, 3),
      refreshes,
      failures: failed.length,
      statusFailures: statusFailed.length,
      distinctTokens: printed.size,
      sameToken,
      firstFailure: failed[0] ? describeFailure('mxs token', failed[0]) : statusFailed[0] ? describeFailure('mxs status', statusFailed[0]) : null,
    });
  }
  const tokenWallMs = median(rounds.map((r) => r.tokenWallMs));
  const statusWallMs = median(rounds.map((r) => r.statusWallMs));
  const ratio = median(rounds.map((r) => r.ratio));
  const failures = [];
  rounds.forEach((r, i) => {
    const at = `concurrency round ${i + 1}`;
    if (r.refreshes !== 1) failures.push(`${at}: ${r.refreshes} refresh requests reached the homeserver (target 1)`);
    if (r.failures > 0) failures.push(`${at}: ${r.failures}/${opts.concurrency} mxs token failed; first: ${r.firstFailure}`);
    if (r.statusFailures > 0) failures.push(`${at}: ${r.statusFailures}/${opts.concurrency} mxs status failed; first: ${r.firstFailure}`);
    if (!r.sameToken) failures.push(`${at}: the token processes did not all print the one stored, valid token (${r.distinctTokens} distinct)`);
  });
  if (ratio > CONCURRENCY_RATIO_TARGET) {
    failures.push(`concurrency: ${opts.concurrency} x token took ${tokenWallMs.toFixed(0)} ms, ${ratio.toFixed(2)}x ${opts.concurrency} x status (${statusWallMs.toFixed(0)} ms; target <= ${CONCURRENCY_RATIO_TARGET}x)`);
  }
  return {
    processes: opts.concurrency,
    rounds: rounds.length,
    tokenWallMs: round(tokenWallMs, 1),
    statusWallMs: round(statusWallMs, 1),
    ratio: round(ratio, 3),
    refreshes: rounds.map((r) => r.refreshes),
    failures: rounds.reduce((a, r) => a + r.failures, 0),
    sameToken: rounds.every((r) => r.sameToken),
    target: { ratio: CONCURRENCY_RATIO_TARGET, refreshesPerRound: 1, failures: 0, sameToken: true },
    pass: failures.length === 0,
    perRound: rounds.map(({ firstFailure, ...r }) => r),
    failureDetails: failures,
  };
}

// --- output ---------------------------------------------------------------------------------------

/** `align`: one 'l' or 'r' per column. */
function table(rows, header, align) {
  const cells = [header, ...rows].map((r) => r.map((c) => String(c)));
  const widths = header.map((_, i) => Math.max(...cells.map((r) => r[i].length)));
  const line = (r) => r.map((c, i) => (align[i] === 'r' ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join('  ').trimEnd();
  return [line(cells[0]), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join('\n');
}

function printReport(doc, haveTime) {
  const fmt = (x, d = 1) => (x === null ? 'n/a' : x.toFixed(d));
  console.log(`mxs bench: node ${doc.node}, ${doc.machine.cpus} x ${doc.machine.model} (load ${doc.machine.loadavgAtEnd.join(' ')}), ${doc.runs} runs per case after ${WARMUPS} warm-ups`);
  console.log('');
  console.log(
    table(
      doc.cases.map((c) => [
        c.name,
        fmt(c.medianMs),
        fmt(c.p90Ms),
        `${c.ratio.toFixed(2)}x`,
        fmt(c.peakRssMiB),
        c.target ? `<=${c.target.ratio}x, <=${c.target.rssMiB} MiB` : c.name === BASELINE.name ? 'baseline' : 'info',
        c.pass === null ? '' : c.pass ? 'PASS' : 'FAIL',
      ]),
      ['case', 'median ms', 'p90 ms', 'ratio', 'peak RSS MiB', 'target', ''],
      'lrrrrll',
    ),
  );
  if (!haveTime) console.log(`(peak RSS n/a: ${TIME} not found; apt-get install time)`);
  const k = doc.concurrency;
  console.log('');
  console.log(`concurrency: ${k.processes} at once on an expired session, median of ${k.rounds} rounds`);
  console.log(
    table(
      [
        [`${k.processes} x mxs token --min-valid 30s`, fmt(k.tokenWallMs, 0), `refreshes per round: ${k.refreshes.join(', ')}`],
        [`${k.processes} x mxs status`, fmt(k.statusWallMs, 0), `token failures: ${k.failures}; same token: ${k.sameToken ? 'yes' : 'no'}`],
        ['ratio token / status', `${k.ratio.toFixed(2)}x`, `target <=${k.target.ratio}x, 1 refresh, 0 failures  ${k.pass ? 'PASS' : 'FAIL'}`],
      ],
      ['', 'wall ms', ''],
      'lrl',
    ),
  );
  console.log('');
  console.log(doc.pass ? 'all targets PASS' : 'FAIL:');
  for (const f of doc.failures) console.log(`  - ${f}`);
}

// --- main -----------------------------------------------------------------------------------------

async function main() {
  const opts = parseOptions(process.argv.slice(2));
  jsonMode = opts.json;
  const progress = opts.json || !process.stderr.isTTY ? () => {} : (msg) => process.stderr.write(`\r\x1b[K${msg}`);

  try {
    accessSync(path.join(REPO, 'dist', 'cli', 'fast-path.js'));
  } catch {
    throw new Error('dist/ is missing: run `npm run build` first (or `npm run bench`)');
  }

  const tmp = makeTempDir('mxs-bench-');
  BIN = snapshotApp(tmp);
  const { startHomeserverDouble } = await loadDouble(tmp);
  double = await startHomeserverDouble({ accessTokenLifetimeMs: LONG_LIFETIME_MS });

  // Two sessions (two devices of alice), each in its own config dir: one stays valid for the start-up
  // cases, the other is expired over and over by the concurrency case.
  const startupDir = path.join(tmp, 'startup');
  const concurrencyDir = path.join(tmp, 'concurrency');
  for (const dir of [startupDir, concurrencyDir]) {
    await mustSucceed('mxs login', mxs(['login', double.url, '-u', 'alice', '--password-stdin'], { env: childEnv(dir), input: 'alice-pw\n', capture: true }));
  }
  baseEnv = childEnv(startupDir);
  // The start-up cases must measure success paths: check them once.
  const st = await mustSucceed('mxs status --json', mxs(['status', '--json'], { capture: true }));
  const stJson = JSON.parse(st.stdout);
  if (stJson.loggedIn !== true || stJson.expired !== false) {
    throw new Error(`mxs status --json: unexpected answer ${st.stdout.trim()}`);
  }
  const refreshesBefore = double.count('/refresh');
  const tok = await mustSucceed('mxs token', mxs(['token'], { capture: true }));
  if (double.accessTokenStatus(tok.stdout.trim()) !== 'valid') throw new Error('mxs token printed a token the homeserver does not know');

  const startup = await benchStartup(opts, tmp, progress);
  if (double.count('/refresh') !== refreshesBefore) throw new Error('a start-up case refreshed the token: the token case did not measure the stored-token path');
  const concurrency = await benchConcurrency(opts, concurrencyDir, progress);
  progress('');
  if (!opts.json && process.stderr.isTTY) process.stderr.write('\r\x1b[K');

  const failures = [...startup.cases.flatMap((c) => c.failures), ...concurrency.failureDetails];
  const cpus = os.cpus();
  const loadavg = os.loadavg().map((x) => round(x, 2));
  const doc = {
    node: process.versions.node,
    machine: { cpus: cpus.length, model: cpus[0]?.model?.trim() ?? 'unknown', loadavgAtEnd: loadavg },
    runs: opts.runs,
    warmups: WARMUPS,
    peakRss: startup.haveTime ? `${TIME} -f %M, max over ${opts.runs} runs` : 'n/a',
    cases: startup.cases.map(({ failures: _f, ...c }) => c),
    concurrency: (({ failureDetails: _f, ...k }) => k)(concurrency),
    pass: failures.length === 0,
    failures,
  };

  if (opts.json) console.log(JSON.stringify(doc, null, 2));
  else printReport(doc, startup.haveTime);
  if (!doc.pass && opts.json) for (const f of failures) console.error(`bench: FAIL ${f}`);
  return doc.pass ? 0 : 1;
}

main()
  .catch((err) => {
    console.error(`bench: ${err instanceof Error ? err.message : err}`);
    return 2;
  })
  .then(async (code) => {
    await cleanup();
    process.exitCode = code;
  });
