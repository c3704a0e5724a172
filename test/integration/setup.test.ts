// The README's set-up, as a newcomer meets it (issue 10 items 1-2): the lock installs with `npm ci`,
// installing builds mxs (so `node bin/run.js` works right after it), and the demo runs end to end.
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { REPO } from '../support/cli.js';
import { describeWithSynapse } from '../support/synapse.js';

const run = promisify(execFile);

it('the README gives two set-up commands: install and run the demo, then run the tests', async () => {
  const readme = await readFile(join(REPO, 'README.md'), 'utf8');
  const block = /## Set up\n\n```sh\n([\s\S]*?)```/.exec(readme)![1]!;
  const commands = block.trim().split('\n').map((l) => l.replace(/\s+#.*$/, '').trim());
  expect(commands).toEqual(['npm ci && npm run demo', 'npm test']);
});

it('npm ci accepts the committed lock (no package missing from it or out of step with package.json)', async () => {
  const { stderr } = await run('npm', ['ci', '--dry-run', '--ignore-scripts', '--no-audit', '--no-fund'], { cwd: REPO });
  expect(stderr).not.toMatch(/Missing: |npm error/);
}, 120_000);

it('installing builds mxs: package.json prepares dist/, and every install script is allowed or denied on purpose', async () => {
  const pkg = JSON.parse(await readFile(join(REPO, 'package.json'), 'utf8'));
  expect(pkg.scripts.prepare).toMatch(/\bbuild\b/);
  const { stdout } = await run(process.execPath, [join(REPO, 'bin', 'run.js'), '--version']);
  expect(stdout).toMatch(/^mxs\/\d/);
  const { stdout: ls } = await run('npm', ['install-scripts', 'ls', '--json'], { cwd: REPO }).catch((e) => ({ stdout: String(e.stdout ?? '') }));
  // Nothing pending review: npm warns about such packages on every install.
  expect(ls).not.toMatch(/not yet covered|"pending"/i);
}, 60_000);

it('the packed tarball carries the Apache-2.0 LICENSE that package.json names, and git ignores the tarball', async () => {
  const pkg = JSON.parse(await readFile(join(REPO, 'package.json'), 'utf8'));
  expect(pkg.license).toBe('Apache-2.0');
  const license = await readFile(join(REPO, 'LICENSE'), 'utf8');
  expect(license).toMatch(/^\s*Apache License\s+Version 2\.0, January 2004\s+http:\/\/www\.apache\.org\/licenses\//);
  expect(license).toContain('END OF TERMS AND CONDITIONS');
  const { stdout } = await run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: REPO });
  const [packed] = JSON.parse(stdout) as { filename: string; files: { path: string }[] }[];
  expect(packed!.files.map((f) => f.path)).toContain('LICENSE');
  // `git check-ignore` exits 0 when the path is ignored.
  await expect(run('git', ['check-ignore', '-q', packed!.filename], { cwd: REPO })).resolves.toBeDefined();
}, 60_000);

describeWithSynapse('the demo', () => {
  it('npm run demo logs in, watches the token expire, refreshes it and logs out (exit 0)', async () => {
    const { stdout } = await run(process.execPath, [join(REPO, 'scripts', 'demo.mjs')], { cwd: REPO, env: { ...process.env, NO_COLOR: '1' }, timeout: 150_000 });
    expect(stdout).toMatch(/login/i);
    expect(stdout).toMatch(/refresh/i);
    expect(stdout).toMatch(/logout/i);
  }, 180_000);
});
