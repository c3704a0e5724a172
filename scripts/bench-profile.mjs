#!/usr/bin/env node
// Where does an mxs start-up spend its time? Summarises V8 CPU profiles by module (self time).
//
//   node scripts/bench-profile.mjs [mxs args...]       profile `node bin/run.js <args>` (default: status)
//                                                      against a throwaway, empty config dir
//   node scripts/bench-profile.mjs --file x.cpuprofile summarise an existing profile
//
// Node's own bootstrap before the profiler starts is not in the profile; compare with `node -e 0`.
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
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

function summarise(file) {
  const prof = JSON.parse(readFileSync(file, 'utf8'));
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const selfUs = new Map();
  for (let i = 0; i < prof.samples.length; i++) {
    const n = byId.get(prof.samples[i]);
    const key = group(n.callFrame.url, n.callFrame.functionName);
    selfUs.set(key, (selfUs.get(key) ?? 0) + (prof.timeDeltas[i] ?? 0));
  }
  const total = [...selfUs.values()].reduce((a, b) => a + b, 0);
  console.log(`profile ${path.basename(file)}: ${(total / 1000).toFixed(1)} ms sampled (${(prof.endTime - prof.startTime) / 1000} ms wall)`);
  for (const [k, us] of [...selfUs].sort((a, b) => b[1] - a[1]).slice(0, 25)) {
    console.log(`${(us / 1000).toFixed(1).padStart(8)} ms  ${((100 * us) / total).toFixed(1).padStart(5)}%  ${k}`);
  }
}

async function main() {
  const args = process.argv.slice(2);
  if (args[0] === '--file') return summarise(args[1]);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mxs-bench-prof-'));
  try {
    const env = { ...process.env, MXS_CONFIG_DIR: path.join(dir, 'config'), MXS_STORAGE: 'file', NO_COLOR: '1' };
    const child = spawn(process.execPath, ['--cpu-prof', '--cpu-prof-interval', '100', '--cpu-prof-dir', dir, path.join(REPO, 'bin', 'run.js'), ...(args.length ? args : ['status'])], { env, stdio: ['ignore', 'ignore', 'ignore'] });
    await new Promise((resolve, reject) => child.on('error', reject).on('close', resolve));
    const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
    if (!file) throw new Error('no .cpuprofile written');
    summarise(path.join(dir, file));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exitCode = 1;
});
