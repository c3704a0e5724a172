#!/usr/bin/env node
import { execute } from '@oclif/core';

// Exit explicitly: a keychain call abandoned after its timeout may still hold a libuv
// thread, which must not keep the CLI alive.
await execute({ dir: import.meta.url }).catch(() => {
  process.exitCode ??= 1;
});
process.exit();
