// Preloaded (NODE_OPTIONS=--require) into a CLI run to record its keychain use in MXS_PROBE_FILE:
// one line per keytar call (`getPassword ACCOUNT`), saying whether the fast path's bundle
// (dist/cli/hot.cjs) had been loaded when the call was made.
const fs = require('node:fs');
const Module = require('node:module');
const file = process.env.MXS_PROBE_FILE;
const record = (what) => fs.appendFileSync(file, what + '\n');
const hotLoaded = () => Object.keys(require.cache).some((f) => f.endsWith('/dist/cli/hot.cjs'));
const load = Module._load;
Module._load = function (request, ...rest) {
  const exported = load.call(this, request, ...rest);
  if (request === 'keytar' && !exported.__probed) {
    record('load keytar');
    for (const op of ['getPassword', 'setPassword', 'deletePassword']) {
      const real = exported[op];
      exported[op] = (service, account, ...more) => {
        record(`${op} ${account} ${hotLoaded() ? 'after' : 'before'} hot.cjs`);
        return real.call(exported, service, account, ...more);
      };
    }
    exported.__probed = true;
  }
  return exported;
};
