#!/usr/bin/env node
import module from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

// Node 22.1+ caches compiled code between runs; Node 20 has no such API (feature-detected).
module.enableCompileCache?.();

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
// `status` and `token` with plain flags skip loading oclif (see src/cli/fast-path.ts).
const { tryFastPath, normalizeArgv } = await import('../dist/cli/fast-path.js');
const argv = normalizeArgv(process.argv.slice(2));
const code = await tryFastPath(argv, root);
if (code !== undefined) process.exit(code);

const { execute } = await import('@oclif/core');
await execute({ dir: import.meta.url, args: argv }).catch(() => {
  process.exitCode ??= 1;
});
// Exit explicitly, once oclif has flushed: nothing left over (a keychain helper, a socket)
// may keep the CLI alive.
process.exit();
