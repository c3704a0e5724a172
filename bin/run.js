#!/usr/bin/env node
'use strict';
// CommonJS (bin/package.json): an ES-module entry point makes Node set up its ES module loader
// first, a measurable part of `mxs token`'s start-up that this file and the fast path do not need.
const { enableCompileCache } = require('node:module');
const { join } = require('node:path');

// Node 22.1+ caches compiled code between runs; Node 20 has no such API (feature-detected).
enableCompileCache?.();

async function main() {
  // `mxs token` on a keychain session: the keychain read starts now and overlaps the loading below
  // (src/cli/early.ts). Absent after a bare tsc build, and then simply skipped.
  try {
    if (process.argv.includes('token')) require('../dist/cli/early.cjs').prefetchKeychain(process.argv.slice(2));
  } catch {}
  // `status` and `token` with plain flags skip loading oclif (src/cli/fast-path.ts). hot.cjs is that
  // fast path bundled into one file by `npm run build`, or after a bare tsc a shim that imports it
  // (src/cli/hot.cts); either way it resolves to the module.
  const front = await require('../dist/cli/hot.cjs');
  const argv = front.normalizeArgv(process.argv.slice(2));
  const code = await front.tryFastPath(argv);
  if (code !== undefined) front.exitProcess(code);

  const { execute } = await import('@oclif/core');
  const { exitProcess } = await import('../dist/store/keytar-direct.js');
  // The package root by its package.json: oclif would take bin/package.json for it.
  await execute({ dir: join(__dirname, '..', 'package.json'), args: argv }).catch(() => {
    process.exitCode ??= 1;
  });
  // What the command wrote to a pipe may still be queued (a reader slower than mxs): let stdout take it
  // all first, or the exit below drops it. Write callbacks run in order; a closed pipe calls back with EPIPE.
  await new Promise((resolve) => process.stdout.write('', resolve));
  // Exit explicitly, at once once oclif is done: nothing left over (a keychain helper, a socket) may
  // keep the CLI alive, nor a keytar call stuck in this process (src/store/keytar-direct.ts).
  exitProcess(Number(process.exitCode ?? 0));
}

main();
