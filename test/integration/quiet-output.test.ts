// Issue 10 item 3: a passing test run and a build print their results, not warnings (ts-jest's
// isolatedModules deprecation, Node's VM-modules ExperimentalWarning, oclif's update notice and
// "wrote manifest" line). Runs the package.json scripts' own command lines.
import { spawnSync } from 'node:child_process';
import { cp, mkdtemp, readFile, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from '../support/cli.js';

// ts-jest's "ts-jest[config] (WARN)", Node's "(node:N) ExperimentalWarning: …", oclif's "Warning: … update available".
const NOISE = /\(WARN\)|Warning:|deprecated|update available|wrote manifest/i;

async function scripts(): Promise<Record<string, string>> {
  return JSON.parse(await readFile(join(REPO, 'package.json'), 'utf8')).scripts;
}

function sh(command: string, cwd: string): { code: number | null; output: string } {
  // As npm runs scripts: the package's node_modules/.bin first on PATH.
  const env: NodeJS.ProcessEnv = { ...process.env, MXS_TEST_SYNAPSE: '0', FORCE_COLOR: '0', PATH: `${join(cwd, 'node_modules', '.bin')}:${process.env.PATH}` };
  delete env.NODE_OPTIONS;
  delete env.JEST_WORKER_ID;
  const r = spawnSync('sh', ['-c', command], { cwd, env, encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, output: `${r.stdout}${r.stderr}` };
}

it('`npm run test:unit`’s command, on a passing test file, prints the results and no warning', async () => {
  const command = (await scripts())['test:unit']!;
  expect(command).toMatch(/ test\/unit$/);
  const r = sh(command.replace(/ test\/unit$/, ' test/unit/duration.test.ts'), REPO);
  expect(r.code).toBe(0);
  expect(r.output).toMatch(/Tests:\s+\d+ passed/);
  expect(r.output.split('\n').filter((l) => NOISE.test(l))).toEqual([]);
}, 120_000);

it.each(['test', 'test:node20', 'coverage'])('`npm run %s`’s jest command has the same flags as `npm run test:unit`’s (no ExperimentalWarning either)', async (name) => {
  const s = await scripts();
  const jestPart = (c: string) => c.slice(c.indexOf('node '), c.indexOf('jest.js') + 'jest.js'.length);
  expect(jestPart(s[name]!)).toBe(jestPart(s['test:unit']!));
  expect(s[name]).not.toMatch(/npm run build/); // `npm run -s build`: no npm banner for the nested run
});

it('`npm run build`’s manifest step prints nothing (no update notice, no "wrote manifest")', async () => {
  const build = (await scripts()).build!;
  const [compile, ...rest] = build.split(' && ');
  expect(compile).toMatch(/^tsc /);
  // On a copy of the built package (the working tree's manifest is left alone).
  const dir = await mkdtemp(join(tmpdir(), 'mxs-quiet-'));
  try {
    for (const part of ['bin', 'dist', 'package.json']) await cp(join(REPO, part), join(dir, part), { recursive: true });
    await symlink(join(REPO, 'node_modules'), join(dir, 'node_modules'), 'dir');
    const r = sh(rest.join(' && '), dir);
    expect(r.code).toBe(0);
    expect(r.output).toBe('');
    expect(JSON.parse(await readFile(join(dir, 'oclif.manifest.json'), 'utf8')).commands.status).toBeDefined();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}, 120_000);
