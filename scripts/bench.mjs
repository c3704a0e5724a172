#!/usr/bin/env node
// Start-up and concurrency benchmark for mxs, side by side with its peers (issue 12). Not a test: it
// measures and reports.
//
//   npm run bench                         build, then run this script
//   node scripts/bench.mjs [--runs N] [--json] [--concurrency N] [--rounds N] [--node PATH]... [--app DIR]
//
//   --runs N         timed runs per start-up case, after 3 warm-ups (default 15)
//   --json           print one JSON document instead of the tables
//   --concurrency N  processes launched at once in the concurrency case (default 50)
//   --rounds N       repetitions of the concurrency pair (default 3)
//   --node PATH      a Node to measure on (repeatable); default: this Node and, when present,
//                    .cache/node24/bin/node (scripts/node24.sh fetches it)
//   --app DIR        measure the mxs built in DIR (bin/, dist/, oclif.manifest.json, node_modules)
//                    instead of a snapshot of this tree: an older build, for before/after numbers
//
// On each Node, the start-up cases run round-robin, one run of each case per round, the order rotating
// every round, so machine noise hits all of them alike: `node -e 0`, `gh auth token` (Go; Debian's
// `gh`, reading a hosts.yml in a temporary GH_CONFIG_DIR), `mxs status`, `mxs status --json`, `mxs status --short`,
// `mxs token` with the file store and with the OS keychain (a private D-Bus and gnome-keyring, as the
// keychain suite starts them: test/support/secret-service.ts), and `mxs --version` (through oclif,
// for information). A case whose program is missing is skipped with the reason printed. Wall time is
// spawn -> exit of an unwrapped child; peak RSS comes from a second, equally interleaved pass under
// `/usr/bin/time -f %M` ('n/a' without GNU time). Medians are compared, as ratios within one Node.
//
// Targets (issue 12), per Node:
//   Node 24+: mxs token (file) and mxs status: median <= 1.0 x `gh auth token`'s (unchecked without gh)
//   older:    mxs token (file) and mxs status: median <= 1.3 x `node -e 0`'s
//   mxs token (keychain): median <= 1.25 x mxs token (file)
//   mxs status --short (the shell-prompt line): median <= 1.1 x mxs status (no slower: identical cases
//                    differ by up to ~10% on a loaded machine; a real cost, oclif or chalk, is +50% or more)
//   every mxs case but --version: peak RSS <= `node -e 0`'s + 12 MiB
//   N concurrent `mxs token --min-valid 30s` on an expired session: 1 refresh, no failure, one token,
//   wall <= 1.5 x N concurrent `mxs status`
// Exit 0 when every checked target passes, 1 when one fails, 2 when the benchmark itself could not run.
//
// It runs a snapshot of the built CLI (bin/, dist/, manifest) taken at start, so a concurrent rebuild
// in the same tree cannot break it half-way; when the snapshot holds tsc's shim rather than the bundle
// (a bare tsc ran since `npm run build`), the build's esbuild step is run on the snapshot. Everything
// it starts (the homeserver double from test/support/homeserver-double.ts, the Secret Service, temporary
// dirs, child processes) is stopped and removed on exit, error or Ctrl-C.
import { spawn, spawnSync } from 'node:child_process';
import { accessSync, constants as fsc, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const REPO = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const NODE24 = path.join(REPO, '.cache', 'node24', 'bin', 'node');
const TIME = '/usr/bin/time';
const WARMUPS = 3;
const NODE_RATIO_TARGET = 1.3;
const GH_RATIO_TARGET = 1.0;
const GH_TARGET_FROM_MAJOR = 24;
const KEYCHAIN_RATIO_TARGET = 1.25;
const SHORT_RATIO_TARGET = 1.1;
const RSS_OVER_NODE_MIB = 12;
const CONCURRENCY_RATIO_TARGET = 1.5;
const LONG_LIFETIME_MS = 60 * 60 * 1000;
const CHILD_TIMEOUT_MS = 60_000;
const GH_TOKEN = 'gho_mxsBench0000000000000000000000000000';

// --- options -------------------------------------------------------------------------------------

function usage(msg) {
  if (msg) console.error(`bench: ${msg}`);
  console.error('usage: node scripts/bench.mjs [--runs N] [--json] [--concurrency N] [--rounds N] [--node PATH]... [--app DIR]');
  process.exit(2);
}

function parseOptions(argv) {
  const opts = { runs: 15, json: false, concurrency: 50, rounds: 3, nodes: [], app: null };
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
    else if (a === '--node') opts.nodes.push(value() ?? usage('--node needs a path'));
    else if (a === '--app') opts.app = path.resolve(value() ?? usage('--app needs a directory'));
    else if (a === '--help' || a === '-h') usage();
    else usage(`unknown option ${argv[i]}`);
  }
  return opts;
}

// --- resources and cleanup ------------------------------------------------------------------------

const live = new Set(); // children still running; each leads its own process group
const tempDirs = [];
const tempFiles = [];
let double = null;
let secretService = null;
let cleaning = null;

function killChildren() {
  for (const child of live) {
    try {
      process.kill(-child.pid, 'SIGKILL'); // its group: /usr/bin/time and the program under it
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
  for (const p of [...tempDirs.splice(0), ...tempFiles.splice(0)]) rmSync(p, { recursive: true, force: true });
}

function cleanup() {
  cleaning ??= (async () => {
    killChildren();
    const d = double;
    double = null;
    if (d) await d.close().catch(() => {});
    const ss = secretService;
    secretService = null;
    if (ss) await ss.stop().catch(() => {});
    removeTempDirs();
  })();
  return cleaning;
}

// Last resort for a path that skips cleanup(): synchronous parts only (the Secret Service harness
// kills its daemons from its own exit hook).
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

// --- the test harnesses, reused ---------------------------------------------------------------------

/**
 * Imports a TypeScript helper from test/support (node: builtins only, plus keytar for the Secret Service
 * one) by transpiling it into `dir`, which has a node_modules link so that its requires resolve.
 */
async function importSupport(name, dir) {
  const { default: ts } = await import('typescript');
  const source = path.join(REPO, 'test', 'support', `${name}.ts`);
  const { outputText } = ts.transpileModule(readFileSync(source, 'utf8'), {
    compilerOptions: { module: ts.ModuleKind.ES2022, target: ts.ScriptTarget.ES2022 },
    fileName: source,
  });
  const file = path.join(dir, `.mxs-bench-${process.pid}-${name}.mjs`);
  writeFileSync(file, outputText);
  if (dir !== REPO) tempFiles.push(file);
  return import(pathToFileURL(file).href);
}

// --- the CLI under test ---------------------------------------------------------------------------

/**
 * Copies the built CLI (bin/, dist/, package.json, oclif.manifest.json; node_modules linked) so a
 * rebuild by someone else in the same tree cannot swap files under a running benchmark, and makes
 * sure the copy runs the bundled fast path. Returns the copy's dir and what it runs.
 */
function snapshotApp(tmp) {
  const app = path.join(tmp, 'app');
  for (const entry of ['bin', 'dist', 'package.json', 'oclif.manifest.json']) {
    cpSync(path.join(REPO, entry), path.join(app, entry), { recursive: true });
  }
  symlinkSync(path.join(REPO, 'node_modules'), path.join(app, 'node_modules'), 'dir');
  const hot = path.join(app, 'dist', 'cli', 'hot.cjs');
  if (readFileSync(hot, 'utf8').includes("import('./fast-path.js')")) {
    // tsc's shim (src/cli/hot.cts): bundle this copy the way `npm run build` does.
    const build = JSON.parse(readFileSync(path.join(REPO, 'package.json'), 'utf8')).scripts.build;
    const step = build.split(' && ').find((s) => s.startsWith('esbuild '));
    const r = spawnSync('sh', ['-c', step], { cwd: app, encoding: 'utf8', env: { ...process.env, PATH: `${path.join(REPO, 'node_modules', '.bin')}:${process.env.PATH}` } });
    if (r.status !== 0) throw new Error(`bundling the snapshot failed: ${(r.stderr || r.stdout).trim()}`);
  }
  return { app, bin: path.join(app, 'bin', 'run.js'), bundled: !readFileSync(hot, 'utf8').includes("import('./fast-path.js')") };
}

// --- child processes ------------------------------------------------------------------------------

/** The environment of every child: the caller's, minus anything that could change what is measured. */
function cleanEnv(extra) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    // MXS_* (e.g. MXS_NO_FAST_PATH), gh's token variables (gh would print those, not read hosts.yml),
    // and NODE_OPTIONS (a preload would be measured too).
    if (k.startsWith('MXS_') || /^(GH_|GITHUB_)/.test(k) || k === 'NODE_OPTIONS' || k === 'NODE_COMPILE_CACHE') continue;
    env[k] = v;
  }
  return { ...env, NO_COLOR: '1', DBUS_SESSION_BUS_ADDRESS: 'unix:path=/nonexistent/mxs-bench-bus', ...extra };
}

const mxsEnv = (configDir, extra = {}) => cleanEnv({ MXS_CONFIG_DIR: configDir, MXS_STORAGE: 'file', ...extra });

/**
 * Spawns one child (async: the double lives in this event loop) and resolves when it has exited and
 * its pipes are drained. `ms` is spawn -> 'exit' wall time.
 */
function run(cmd, args, { env, input = '', capture = false } = {}) {
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

function which(program) {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    const candidate = path.join(dir || '.', program);
    try {
      accessSync(candidate, fsc.X_OK);
      return candidate;
    } catch {
      /* not here */
    }
  }
  return null;
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

// --- the Nodes --------------------------------------------------------------------------------------

function describeNode(bin) {
  const r = spawnSync(bin, ['-p', 'process.versions.node'], { encoding: 'utf8', env: cleanEnv({}) });
  if (r.status !== 0) throw new Error(`${bin} does not run: ${(r.stderr || r.error?.message || '').trim()}`);
  const version = r.stdout.trim();
  return { bin, version, major: Number(version.split('.')[0]) };
}

function nodesToMeasure(opts) {
  const bins = opts.nodes.length ? opts.nodes : [process.execPath, ...(existsSync(NODE24) ? [NODE24] : [])];
  const nodes = [];
  for (const bin of bins) {
    const n = describeNode(bin);
    if (!nodes.some((m) => m.version === n.version)) nodes.push(n);
  }
  return nodes;
}

// --- start-up cases -------------------------------------------------------------------------------

/**
 * The cases on one Node. `kind` says what a case is compared with; `skip` gives the reason a case
 * cannot run here.
 */
function startupCases(node, env) {
  const mxs = (args, e = env.file) => ({ cmd: node.bin, args: [env.bin, ...args], env: e });
  const cases = [
    { name: 'node -e 0', kind: 'node', cmd: node.bin, args: ['-e', '0'], env: cleanEnv({}) },
    env.gh
      ? { name: 'gh auth token', kind: 'gh', cmd: env.gh.bin, args: ['auth', 'token'], env: env.gh.env }
      : { name: 'gh auth token', kind: 'gh', skip: env.ghSkip },
    { name: 'mxs status', kind: 'hot', ...mxs(['status']) },
    { name: 'mxs status --json', kind: 'info', ...mxs(['status', '--json']) },
    { name: 'mxs status --short', kind: 'short', ...mxs(['status', '--short']) },
    { name: 'mxs token (file)', kind: 'hot', ...mxs(['token']) },
    env.keychain
      ? { name: 'mxs token (keychain)', kind: 'keychain', ...mxs(['token'], env.keychain) }
      : { name: 'mxs token (keychain)', kind: 'keychain', skip: env.keychainSkip },
    { name: 'mxs --version (oclif)', kind: 'info', ...mxs(['--version']) },
  ];
  return cases.map((c) => ({ ...c, wall: [], rss: [] }));
}

function canUseTime() {
  try {
    accessSync(TIME, fsc.X_OK);
    return true;
  } catch {
    return false;
  }
}

async function timedRun(c) {
  const r = await run(c.cmd, c.args, { env: c.env });
  if (r.code !== 0) throw new Error(describeFailure(c.name, r));
  return r.ms;
}

async function rssRun(c, outFile) {
  const r = await run(TIME, ['-f', '%M', '-o', outFile, c.cmd, ...c.args], { env: c.env, capture: true });
  if (r.code !== 0) throw new Error(describeFailure(`${c.name} (under ${TIME})`, r));
  const kib = Number((await readFile(outFile, 'utf8')).trim().split('\n').pop());
  if (!Number.isFinite(kib)) throw new Error(`${TIME} gave no peak RSS for ${c.name}`);
  return kib / 1024;
}

async function benchStartup(opts, node, env, tmp, progress) {
  const all = startupCases(node, env);
  const cases = all.filter((c) => !c.skip);
  const haveTime = canUseTime();
  const rssFile = path.join(tmp, 'time.out');
  const at = `Node ${node.version}`;

  // Warm-ups (page cache, compile cache), then the timed runs: one of each case per round, the order
  // rotating every round.
  for (let i = 0; i < WARMUPS; i++) for (const c of cases) await timedRun(c);
  for (let i = 0; i < opts.runs; i++) {
    progress(`${at}: start-up round ${i + 1}/${opts.runs}`);
    for (let j = 0; j < cases.length; j++) {
      const c = cases[(i + j) % cases.length];
      c.wall.push(await timedRun(c));
    }
  }
  // Peak RSS, in a separate pass so /usr/bin/time's own fork/exec stays out of the wall times.
  if (haveTime) {
    for (let i = 0; i < opts.runs; i++) {
      progress(`${at}: peak-RSS round ${i + 1}/${opts.runs}`);
      for (let j = 0; j < cases.length; j++) {
        const c = cases[(i + j) % cases.length];
        c.rss.push(await rssRun(c, rssFile));
      }
    }
  }

  const stat = (name) => {
    const c = cases.find((x) => x.name === name);
    return c ? { medianMs: median(c.wall), peakRssMiB: c.rss.length ? Math.max(...c.rss) : null } : null;
  };
  const base = stat('node -e 0');
  const gh = stat('gh auth token');
  const file = stat('mxs token (file)');
  const status = stat('mxs status');
  const rows = all.map((c) => {
    if (c.skip) return { name: c.name, skipped: c.skip, target: null, pass: null, failures: [] };
    const medianMs = median(c.wall);
    const peakRssMiB = c.rss.length ? Math.max(...c.rss) : null;
    const failures = [];
    const checks = [];
    const vs = (what, ratio, limit) => {
      checks.push(`<= ${limit}x ${what}`);
      if (ratio > limit) failures.push(`${at}: ${c.name}: median ${medianMs.toFixed(1)} ms is ${ratio.toFixed(2)}x ${what} (target <= ${limit}x)`);
    };
    if (c.kind === 'hot') {
      if (node.major >= GH_TARGET_FROM_MAJOR) {
        if (gh) vs('gh auth token', medianMs / gh.medianMs, GH_RATIO_TARGET);
        else checks.push(`<= ${GH_RATIO_TARGET}x gh auth token: unchecked (${env.ghSkip})`);
      } else {
        vs('node -e 0', medianMs / base.medianMs, NODE_RATIO_TARGET);
      }
    }
    if (c.kind === 'keychain') vs('mxs token (file)', medianMs / file.medianMs, KEYCHAIN_RATIO_TARGET);
    if (c.kind === 'short') vs('mxs status', medianMs / status.medianMs, SHORT_RATIO_TARGET);
    if ((c.kind === 'hot' || c.kind === 'keychain' || c.kind === 'short' || c.name === 'mxs status --json') && base.peakRssMiB !== null) {
      const limit = base.peakRssMiB + RSS_OVER_NODE_MIB;
      checks.push(`RSS <= ${limit.toFixed(1)} MiB`);
      if (peakRssMiB > limit) failures.push(`${at}: ${c.name}: peak RSS ${peakRssMiB.toFixed(1)} MiB (target <= node -e 0's ${base.peakRssMiB.toFixed(1)} + ${RSS_OVER_NODE_MIB} MiB)`);
    }
    return {
      name: c.name,
      n: c.wall.length,
      medianMs: round(medianMs, 2),
      p90Ms: round(percentile(c.wall, 90), 2),
      minMs: round(Math.min(...c.wall), 2),
      vsNode: round(medianMs / base.medianMs, 3),
      vsGh: gh ? round(medianMs / gh.medianMs, 3) : null,
      vsFileToken: c.kind === 'keychain' ? round(medianMs / file.medianMs, 3) : null,
      vsStatus: c.kind === 'short' ? round(medianMs / status.medianMs, 3) : null,
      peakRssMiB: round(peakRssMiB, 1),
      target: checks.length ? checks.join(', ') : c.kind === 'node' ? 'baseline' : c.kind === 'gh' ? 'peer' : 'information',
      pass: checks.length ? failures.length === 0 : null,
      failures,
    };
  });
  return { haveTime, cases: rows };
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

async function launchAll(n, node, bin, args, env) {
  const t0 = process.hrtime.bigint();
  const results = await Promise.all(Array.from({ length: n }, () => run(node.bin, [bin, ...args], { env, capture: true })));
  // From the first spawn until the last process exited.
  const last = results.reduce((m, r) => (r.exitAt > m ? r.exitAt : m), t0);
  return { wallMs: Number(last - t0) / 1e6, results };
}

async function benchConcurrency(opts, node, bin, configDir, progress) {
  const env = mxsEnv(configDir);
  const at = `Node ${node.version}`;
  const rounds = [];
  for (let i = 0; i < opts.rounds; i++) {
    progress(`${at}: concurrency round ${i + 1}/${opts.rounds}`);
    await expireStoredSession(configDir);
    const before = double.count('/refresh');
    const token = await launchAll(opts.concurrency, node, bin, ['token', '--min-valid', '30s'], env);
    const refreshes = double.count('/refresh') - before;
    const failed = token.results.filter((r) => r.code !== 0);
    const printed = new Set(token.results.filter((r) => r.code === 0).map((r) => r.stdout.trim()));
    const [only] = printed;
    const stored = JSON.parse(await readFile(path.join(configDir, 'secrets', 'default.json'), 'utf8')).accessToken;
    const sameToken = failed.length === 0 && printed.size === 1 && only === stored && double.accessTokenStatus(only) === 'valid';
    const status = await launchAll(opts.concurrency, node, bin, ['status'], env);
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
    const where = `${at}: concurrency round ${i + 1}`;
    if (r.refreshes !== 1) failures.push(`${where}: ${r.refreshes} refresh requests reached the homeserver (target 1)`);
    if (r.failures > 0) failures.push(`${where}: ${r.failures}/${opts.concurrency} mxs token failed; first: ${r.firstFailure}`);
    if (r.statusFailures > 0) failures.push(`${where}: ${r.statusFailures}/${opts.concurrency} mxs status failed; first: ${r.firstFailure}`);
    if (!r.sameToken) failures.push(`${where}: the token processes did not all print the one stored, valid token (${r.distinctTokens} distinct)`);
  });
  if (ratio > CONCURRENCY_RATIO_TARGET) {
    failures.push(`${at}: concurrency: ${opts.concurrency} x token took ${tokenWallMs.toFixed(0)} ms, ${ratio.toFixed(2)}x ${opts.concurrency} x status (${statusWallMs.toFixed(0)} ms; target <= ${CONCURRENCY_RATIO_TARGET}x)`);
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
    perRound: rounds.map(({ firstFailure: _f, ...r }) => r),
    failureDetails: failures,
  };
}

// --- the peers and the keychain ---------------------------------------------------------------------

/** `gh auth token` reading a hosts.yml of ours, or the reason it cannot run here. */
async function setUpGh(tmp) {
  const bin = which('gh');
  if (!bin) return { skip: 'gh is not installed (Debian: apt-get install gh)' };
  const dir = path.join(tmp, 'gh');
  mkdirSync(dir, { mode: 0o700 });
  writeFileSync(path.join(dir, 'hosts.yml'), `github.com:\n    user: mxs-bench\n    oauth_token: ${GH_TOKEN}\n    git_protocol: https\n`, { mode: 0o600 });
  const env = cleanEnv({ GH_CONFIG_DIR: dir, GH_NO_UPDATE_NOTIFIER: '1', GH_PROMPT_DISABLED: '1' });
  const r = await run(bin, ['auth', 'token'], { env, capture: true });
  if (r.code !== 0 || r.stdout.trim() !== GH_TOKEN) return { skip: `gh auth token did not print the token of ${dir}/hosts.yml (${describeFailure('gh', r)})` };
  const version = (await run(bin, ['--version'], { env, capture: true })).stdout.split('\n')[0].trim();
  return { gh: { bin, env, version } };
}

/** A private Secret Service (D-Bus + gnome-keyring), or the reason there is none. */
async function setUpKeychain(app) {
  const harness = await importSupport('secret-service', app);
  const avail = await harness.secretServiceAvailability();
  if (!avail.ok) return { skip: avail.reason };
  secretService = await harness.startSecretService();
  return { ss: secretService };
}

// --- output ---------------------------------------------------------------------------------------

/** `align`: one 'l' or 'r' per column. */
function table(rows, header, align) {
  const cells = [header, ...rows].map((r) => r.map((c) => String(c)));
  const widths = header.map((_, i) => Math.max(...cells.map((r) => r[i].length)));
  const line = (r) => r.map((c, i) => (align[i] === 'r' ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join('  ').trimEnd();
  return [line(cells[0]), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join('\n');
}

function printReport(doc) {
  const fmt = (x, d = 1, suffix = '') => (x === null || x === undefined ? '' : `${x.toFixed(d)}${suffix}`);
  const m = doc.machine;
  console.log(`mxs bench: ${m.cpus} x ${m.model}, load ${m.loadavgAtStart.join(' ')} at start, ${m.loadavgAtEnd.join(' ')} at end`);
  console.log(`${doc.runs} runs per case after ${WARMUPS} warm-ups, round-robin; medians; peak RSS: ${doc.peakRss}; ${doc.gh ?? `gh: ${doc.skipped.gh}`}`);
  if (doc.skipped.keychain) console.log(`keychain: skipped, ${doc.skipped.keychain}`);
  if (doc.app) console.log(`the mxs built in ${doc.app}`);
  else if (!doc.bundled) console.log('note: the CLI ran without its bundled fast path (dist/cli/hot.cjs is tsc\'s shim)');
  for (const n of doc.nodes) {
    console.log('');
    console.log(`Node ${n.version} (${n.bin})`);
    console.log(
      table(
        n.cases.map((c) =>
          c.skipped
            ? [c.name, 'skipped', '', '', '', '', c.skipped, '']
            : [c.name, fmt(c.medianMs), fmt(c.p90Ms), fmt(c.vsNode, 2, 'x'), fmt(c.vsGh, 2, 'x'), fmt(c.peakRssMiB), c.target, c.pass === null ? '' : c.pass ? 'PASS' : 'FAIL'],
        ),
        ['case', 'median ms', 'p90 ms', 'vs node -e 0', 'vs gh', 'peak RSS MiB', 'target', ''],
        'lrrrrrll',
      ),
    );
    const k = n.concurrency;
    console.log(
      `${k.processes} x mxs token --min-valid 30s at once on an expired session: ${fmt(k.tokenWallMs, 0)} ms, ${fmt(k.ratio, 2)}x ${k.processes} x mxs status (${fmt(k.statusWallMs, 0)} ms), ` +
        `refreshes per round ${k.refreshes.join(', ')}, ${k.failures} failures, same token: ${k.sameToken ? 'yes' : 'no'} (median of ${k.rounds} rounds; target <= ${k.target.ratio}x, 1 refresh, 0 failures)  ${k.pass ? 'PASS' : 'FAIL'}`,
    );
  }
  console.log('');
  console.log(doc.pass ? 'all checked targets PASS' : 'FAIL:');
  for (const f of doc.failures) console.log(`  - ${f}`);
}

// --- main -----------------------------------------------------------------------------------------

async function main() {
  const opts = parseOptions(process.argv.slice(2));
  jsonMode = opts.json;
  const progress = opts.json || !process.stderr.isTTY ? () => {} : (msg) => process.stderr.write(`\r\x1b[K${msg}`);
  const loadavgAtStart = os.loadavg().map((x) => round(x, 2));

  if (!opts.app && !existsSync(path.join(REPO, 'dist', 'cli', 'hot.cjs'))) throw new Error('dist/ is missing: run `npm run build` first (or `npm run bench`)');
  const nodes = nodesToMeasure(opts);
  const tmp = makeTempDir('mxs-bench-');
  const { app, bin, bundled } = opts.app ? { app: opts.app, bin: path.join(opts.app, 'bin', 'run.js'), bundled: null } : snapshotApp(tmp);
  const { startHomeserverDouble } = await importSupport('homeserver-double', app);
  double = await startHomeserverDouble({ accessTokenLifetimeMs: LONG_LIFETIME_MS });
  const { gh, skip: ghSkip } = await setUpGh(tmp);
  const { ss, skip: keychainSkip } = await setUpKeychain(app);

  // One config dir per use: the start-up sessions stay valid, the concurrency one is expired over and over.
  const login = (dir, env) => mustSucceed(`mxs login (${dir})`, run(process.execPath, [bin, 'login', double.url, '-u', 'alice', '--password-stdin'], { env, input: 'alice-pw\n', capture: true }));
  const fileDir = path.join(tmp, 'file');
  await login(fileDir, mxsEnv(fileDir));
  const keychainDir = path.join(tmp, 'keychain');
  const keychainEnv = ss ? mxsEnv(keychainDir, { ...ss.env, MXS_STORAGE: 'keychain' }) : null;
  if (keychainEnv) await login(keychainDir, keychainEnv);
  const env = { bin, file: mxsEnv(fileDir), keychain: keychainEnv, keychainSkip, gh, ghSkip };

  const results = [];
  for (const node of nodes) {
    // The measured paths must be the success paths: check them once on this Node.
    const st = JSON.parse((await mustSucceed('mxs status --json', run(node.bin, [bin, 'status', '--json'], { env: env.file, capture: true }))).stdout);
    if (st.loggedIn !== true || st.expired !== false) throw new Error(`mxs status --json: unexpected answer ${JSON.stringify(st)}`);
    const refreshesBefore = double.count('/refresh');
    for (const e of [env.file, env.keychain].filter(Boolean)) {
      const tok = await mustSucceed('mxs token', run(node.bin, [bin, 'token'], { env: e, capture: true }));
      if (double.accessTokenStatus(tok.stdout.trim()) !== 'valid') throw new Error(`mxs token (${e.MXS_STORAGE}) printed a token the homeserver does not take as valid`);
    }
    const startup = await benchStartup(opts, node, env, tmp, progress);
    if (double.count('/refresh') !== refreshesBefore) throw new Error('a start-up case refreshed the token: the token cases did not measure the stored-token path');
    results.push({ node, startup });
  }
  // Last: expiring the concurrency session expires every access token at the double.
  for (const r of results) {
    const concurrencyDir = path.join(tmp, `concurrency-${r.node.version}`);
    await login(concurrencyDir, mxsEnv(concurrencyDir));
    r.concurrency = await benchConcurrency(opts, r.node, bin, concurrencyDir, progress);
  }
  progress('');
  if (!opts.json && process.stderr.isTTY) process.stderr.write('\r\x1b[K');

  const failures = results.flatMap((r) => [...r.startup.cases.flatMap((c) => c.failures), ...r.concurrency.failureDetails]);
  const cpus = os.cpus();
  const doc = {
    machine: { cpus: cpus.length, model: cpus[0]?.model?.trim() ?? 'unknown', loadavgAtStart, loadavgAtEnd: os.loadavg().map((x) => round(x, 2)) },
    runs: opts.runs,
    warmups: WARMUPS,
    peakRss: results.every((r) => r.startup.haveTime) ? `${TIME} -f %M, max over ${opts.runs} runs` : 'n/a (no GNU time: apt-get install time)',
    app: opts.app,
    bundled,
    gh: gh ? gh.version : null,
    skipped: { ...(ghSkip && { gh: ghSkip }), ...(keychainSkip && { keychain: keychainSkip }) },
    nodes: results.map(({ node, startup, concurrency }) => ({
      version: node.version,
      bin: node.bin,
      cases: startup.cases.map(({ failures: _f, ...c }) => c),
      concurrency: (({ failureDetails: _f, ...k }) => k)(concurrency),
    })),
    pass: failures.length === 0,
    failures,
  };

  if (opts.json) console.log(JSON.stringify(doc, null, 2));
  else printReport(doc);
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
