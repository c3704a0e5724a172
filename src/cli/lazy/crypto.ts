import type { createHash as CreateHash, randomBytes as RandomBytes } from 'node:crypto';

// node:crypto as the start-up bundle sees it (`--alias` in package.json's build script): the same
// functions, but Node loads the module on their first call. `status` and `token` reach modules that
// import it for writing files (temp names, lock nonces) and never call it unless they write, and
// loading it took a fifth of `mxs token`'s start-up on Node 24 (measured side by side, CPU time).
// A function missing here fails the build, naming it.

const crypto = () => process.getBuiltinModule('node:crypto');

export const randomBytes = ((...args: unknown[]) => (crypto().randomBytes as (...a: unknown[]) => unknown)(...args)) as typeof RandomBytes;
export const createHash = ((...args: unknown[]) => (crypto().createHash as (...a: unknown[]) => unknown)(...args)) as typeof CreateHash;
