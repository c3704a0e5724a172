// dist/cli/hot.cjs, the module bin/run.js starts from. As tsc emits it, it is this: the fast path
// (src/cli/fast-path.ts) as tsc compiled it, one ES module per source file. `npm run build` then
// replaces the file with that same fast path bundled into one CommonJS file (esbuild, see the build
// script in package.json), which starts faster: each further module costs Node a resolve, a read
// and a compile, and ES modules of builtins are costlier to load than `require`. A build by tsc
// alone thus never leaves a stale bundle behind. bin/run.js awaits what this exports.
export = import('./fast-path.js');
