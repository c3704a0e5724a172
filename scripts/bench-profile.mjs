#!/usr/bin/env node
// Where does an mxs start-up spend its time? Summarises V8 CPU profiles by module (self time, mean
// over the runs) and counts the modules a run loads.
//
//   node scripts/bench-profile.mjs [--node PATH] [--runs N] [mxs args...]
//        profile `node bin/run.js <args>` (default: token) N times (default 5) against a throwaway
//        config dir holding a valid file-store session, on this Node or PATH
//   node scripts/bench-profile.mjs --file x.cpuprofile...
//        summarise existing profiles
//
// Node's own bootstrap before the profiler starts is not in a profile: compare with `node -e 0`
// (`--node PATH -e 0` is not an mxs run; profile it with `node --cpu-prof -e 0`). The module count
// is from a separate, unprofiled run: files compiled by the CommonJS loader and, where Node has
// in-thread module hooks (22.15+), files loaded as ES modules; and the builtin modules loaded.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');

function group(url, name) {
  if (!url) return name === '(program)' || name === '(garbage collector)' || name === '(idle)' ? name : `(native) ${name || '?'}`;
  if (url.startsWith('node:')) return url.split('/')[0] === 'node:internal' ? `node:internal/${url.split('/')[1]}` : url;
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const parts = url.slice(nm + 14).split('/');
    return `node_modules/${parts[0].startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]}`;
  }
  return url.replace(/^file:\/\//, '').replace(REPO + '/', '').replace(/^.*\/(bin|dist)\//, '$1/');
}

function summarise(files) {
  const selfUs = new Map();
  let wallMs = 0;
  for (const file of files) {
    const prof = JSON.parse(readFileSync(file, 'utf8'));
    const byId = new Map(prof.nodes.map((n) => [n.id, n]));
    wallMs += (prof.endTime - prof.startTime) / 1000;
    for (let i = 0; i < prof.samples.length; i++) {
      const n = byId.get(prof.samples[i]);
      const key = group(n.callFrame.url, n.callFrame.functionName);
      selfUs.set(key, (selfUs.get(key) ?? 0) + (prof.timeDeltas[i] ?? 0));
    }
  }
  const n = files.length;
  const total = [...selfUs.values()].reduce((a, b) => a + b, 0);
  console.log(`${n} profile${n === 1 ? '' : 's'}: ${(total / n / 1000).toFixed(1)} ms sampled, ${(wallMs / n).toFixed(1)} ms wall (mean)`);
  for (const [k, us] of [...selfUs].sort((a, b) => b[1] - a[1]).slice(0, 25)) {
    console.log(`${(us / n / 1000).toFixed(1).padStart(8)} ms  ${((100 * us) / total).toFixed(1).padStart(5)}%  ${k}`);
  }
}

// Preloaded into the counting run: which files and builtins the run loads.
const COUNTER = `
const { writeFileSync } = require('node:fs');
const Module = require('node:module');
const esm = new Set();
if (typeof Module.registerHooks === 'function') {
  Module.registerHooks({ load(url, context, next) { if (url.startsWith('file:') && context.format === 'module') esm.add(url); return next(url, context); } });
}
process.on('exit', () => {
  const builtins = process.moduleLoadList.filter((m) => m.startsWith('NativeModule ')).map((m) => m.slice(13));
  writeFileSync(process.env.MXS_PROFILE_COUNT, JSON.stringify({
    cjs: Object.keys(require.cache).filter((f) => !f.endsWith('counter.cjs')),
    esm: typeof Module.registerHooks === 'function' ? [...esm] : null,
    builtins,
  }));
});
`;

function parseArgs(argv) {
  const opts = { node: process.execPath, runs: 5, args: [], files: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--file') opts.files = argv.slice(i + 1);
    else if (a === '--node') opts.node = argv[++i];
    else if (a === '--runs') opts.runs = Number(argv[++i]);
    else {
      opts.args = argv.slice(i);
      break;
    }
    if (opts.files) break;
  }
  if (!opts.args.length) opts.args = ['token'];
  return opts;
}

/** A config dir with a valid session in the file store (no server is asked: the token is not due). */
function makeConfig(dir) {
  const config = path.join(dir, 'config');
  mkdirSync(path.join(config, 'sessions'), { recursive: true, mode: 0o700 });
  mkdirSync(path.join(config, 'secrets'), { recursive: true, mode: 0o700 });
  const issuedAt = new Date().toISOString();
  const expiresAt = new Date(Date.now() + 3_600_000).toISOString();
  const record = { format: 2, profile: 'default', homeserver: 'https://matrix.example.org', userId: '@alice:example.org', deviceId: 'PROFILE', issuedAt, expiresAt, refreshable: true, storage: 'file', method: 'password', auth: { type: 'matrix' } };
  writeFileSync(path.join(config, 'sessions', 'default.json'), JSON.stringify(record));
  writeFileSync(path.join(config, 'secrets', 'default.json'), JSON.stringify({ accessToken: 'syt_profile', refreshToken: 'syr_profile', issuedAt, expiresAt }), { mode: 0o600 });
  return config;
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (opts.files) return summarise(opts.files);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mxs-bench-prof-'));
  try {
    const env = { ...process.env, MXS_CONFIG_DIR: makeConfig(dir), MXS_STORAGE: 'file', NO_COLOR: '1' };
    delete env.NODE_OPTIONS;
    const bin = path.join(REPO, 'bin', 'run.js');
    const version = spawnSync(opts.node, ['--version'], { encoding: 'utf8' }).stdout.trim();
    console.log(`mxs ${opts.args.join(' ')} on Node ${version}`);
    const profDir = path.join(dir, 'prof');
    for (let i = 0; i < opts.runs; i++) {
      // Output to a pipe, as in `$(mxs token)`.
      const r = spawnSync(opts.node, ['--cpu-prof', '--cpu-prof-interval', '100', '--cpu-prof-dir', profDir, bin, ...opts.args], { env, encoding: 'utf8' });
      if (r.status !== 0 && i === 0) console.log(`(exit ${r.status}: ${r.stderr.trim().split('\n')[0]})`);
    }
    summarise(readdirSync(profDir).filter((f) => f.endsWith('.cpuprofile')).map((f) => path.join(profDir, f)));

    const counter = path.join(dir, 'counter.cjs');
    writeFileSync(counter, COUNTER);
    const countFile = path.join(dir, 'count.json');
    spawnSync(opts.node, ['--require', counter, bin, ...opts.args], { env: { ...env, MXS_PROFILE_COUNT: countFile }, encoding: 'utf8' });
    const count = JSON.parse(readFileSync(countFile, 'utf8'));
    const show = (files) => files.map((f) => group(f.startsWith('file:') ? f : `file://${f}`, '')).join(', ');
    console.log('');
    console.log(`modules: ${count.cjs.length} CommonJS (${show(count.cjs)})`);
    console.log(`         ${count.esm === null ? 'ES modules not counted (Node < 22.15 has no module.registerHooks)' : `${count.esm.length} ES modules${count.esm.length ? ` (${show(count.esm.slice(0, 12))}${count.esm.length > 12 ? ', …' : ''})` : ''}`}`);
    const pub = count.builtins.filter((b) => !b.startsWith('internal/'));
    console.log(`         ${count.builtins.length} builtin modules, ${pub.length} public: ${pub.join(', ')}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

try {
  main();
} catch (err) {
  console.error(err instanceof Error ? err.message : err);
  process.exitCode = 1;
}
