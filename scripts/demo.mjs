#!/usr/bin/env node
// A one-minute tour of mxs against a real, throwaway Synapse:   npm run demo
//
// Starts a local Synapse (test/support/synapse.ts, the same harness the tests use; the first run installs the
// pinned matrix-synapse into .cache/synapse-venv), registers a user "demo", and runs the real CLI (bin/run.js,
// built by `npm run build`) step by step with its own output: login, status, a real token expiry, status
// (exit 5), whoami (refreshes), token, logout. Everything lives in a temporary directory (MXS_CONFIG_DIR,
// MXS_STORAGE=file): nothing of yours is read or touched. The server and the directory are removed at the end,
// on error, and on Ctrl-C.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { importTs } from './import-ts.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.join(here, '..');
const bin = path.join(repo, 'bin', 'run.js');
/** Access-token lifetime of the demo server: long enough to read `status`, short enough to wait for. */
const LIFETIME_S = 10;

const tty = Boolean(process.stdout.isTTY) && process.env.NO_COLOR === undefined && process.env.TERM !== 'dumb';
const style = (open, close) => (s) => (tty ? `\x1b[${open}m${s}\x1b[${close}m` : s);
const bold = style(1, 22);
const dim = style(2, 22);
const cyan = style(36, 39);
const say = (line = '') => process.stdout.write(`${line}\n`);

const loadHarness = () => importTs(path.join(repo, 'test', 'support', 'synapse.ts'));

// --- state to clean up --------------------------------------------------------------------------------------------
let server; // SynapseHandle
let home; // temp dir holding MXS_CONFIG_DIR
let current; // the mxs child running now
let cleaning;

function cleanup() {
  cleaning ??= (async () => {
    if (current && current.exitCode === null && current.signalCode === null) current.kill('SIGTERM');
    if (server) await server.stop().catch((err) => say(`could not stop Synapse: ${err.message}`));
    if (home) rmSync(home, { recursive: true, force: true });
  })();
  return cleaning;
}

for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(signal, () => {
    say(`\n${bold('Interrupted:')} stopping Synapse and removing the demo directory…`);
    // The harness's own 'exit' hook also kills a server that is still starting.
    cleanup().finally(() => process.exit(130));
  });
}

// --- running mxs ----------------------------------------------------------------------------------------------------
let mxsEnv;

/** Runs `mxs ARGS` with the user's terminal as stdout/stderr (stdout piped only when `capture`). */
function mxs(args, { input, capture = false } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, ...args], {
      env: mxsEnv,
      stdio: [input === undefined ? 'ignore' : 'pipe', capture ? 'pipe' : 'inherit', 'inherit'],
    });
    current = child;
    let stdout = '';
    child.stdout?.on('data', (d) => (stdout += d));
    if (input !== undefined) child.stdin.end(input);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      current = undefined;
      resolve({ code, signal, stdout });
    });
  });
}

let stepNo = 0;
/** Prints a narrated header and the command line, runs it, and checks its exit code. */
async function step(narration, shown, args, { expect = 0, explain, ...opts } = {}) {
  stepNo += 1;
  say();
  say(bold(`${stepNo}. ${narration}`));
  say(cyan(`$ ${shown}`));
  const r = await mxs(args, opts);
  if (r.signal) throw new Error(`mxs ${args[0]} was killed by ${r.signal}`);
  if (r.code !== expect) throw new Error(`mxs ${args[0]} exited ${r.code} (expected ${expect})`);
  if (expect !== 0) say(dim(`(exit ${r.code}: ${explain})`));
  return r;
}

/** Counts down (once a second) to `expiresAtMs`, then waits `graceMs` more so the token is surely expired. */
async function countdown(expiresAtMs, graceMs) {
  for (;;) {
    const leftMs = expiresAtMs - Date.now();
    if (leftMs <= 0) break;
    const line = `   the access token expires in ${Math.floor(leftMs / 1000)}s `;
    if (process.stdout.isTTY) process.stdout.write(`\r${line}`);
    else say(line);
    await new Promise((r) => setTimeout(r, (leftMs % 1000) + 1));
  }
  await new Promise((r) => setTimeout(r, graceMs));
  if (process.stdout.isTTY) process.stdout.write(`\r${' '.repeat(60)}\r`);
  say('   …expired.');
}

// --- the tour -------------------------------------------------------------------------------------------------------
async function main() {
  const started = Date.now();
  const harness = await loadHarness();
  const venvPython = path.join(harness.synapseVenvDir(), process.platform === 'win32' ? 'Scripts/python.exe' : 'bin/python');
  say(bold('mxs demo: a real Synapse, a short-lived access token, and the commands that handle it'));
  if (!existsSync(venvPython)) {
    say(`First run: installing matrix-synapse ${harness.SYNAPSE_PINNED_VERSION} into ${path.relative(process.cwd(), harness.synapseVenvDir()) || '.'} (a minute or two; later runs skip this).`);
  }
  say(dim(`Starting a throwaway Synapse on 127.0.0.1 (access tokens live ${LIFETIME_S}s)…`));
  server = await harness.startSynapse({ accessTokenLifetime: `${LIFETIME_S}s`, refreshTokenLifetime: '1h' });
  const password = `demo-${randomBytes(6).toString('hex')}`;
  await server.registerUser('demo', password);
  home = mkdtempSync(path.join(tmpdir(), 'mxs-demo-'));
  mxsEnv = { ...process.env, MXS_CONFIG_DIR: path.join(home, 'config'), MXS_STORAGE: 'file' };
  for (const k of ['MXS_PROFILE', 'MXS_TIMEOUT']) delete mxsEnv[k];
  say(`Synapse ${server.version} is up at ${server.baseUrl}; user @demo:localhost registered.`);
  say(dim(`mxs state goes to ${mxsEnv.MXS_CONFIG_DIR} (file storage); it is deleted at the end.`));

  await step(
    'Log in; the password comes from standard input, and mxs asks Synapse for a refresh token.',
    `echo "$PASSWORD" | mxs login ${server.baseUrl} -u demo --password-stdin`,
    ['login', server.baseUrl, '-u', 'demo', '--password-stdin'],
    { input: `${password}\n` },
  );

  await step('The stored session and its countdown, from local state only (no network).', 'mxs status', ['status']);

  const record = JSON.parse(readFileSync(path.join(mxsEnv.MXS_CONFIG_DIR, 'sessions', 'default.json'), 'utf8'));
  say();
  say(bold(`${++stepNo}. Wait for the short-lived access token to expire (for real: no faked clock).`));
  await countdown(Date.parse(record.expiresAt), 500);

  await step('status again: expired, but a refresh token is stored, so exit 5 ("run mxs refresh").', 'mxs status', ['status'], {
    expect: 5,
    explain: 'the access token has expired and can be refreshed; this is expected',
  });

  await step(
    'whoami needs a valid token: mxs refreshes first (--verbose shows the HTTP exchanges, tokens redacted).',
    'mxs whoami --verbose',
    ['whoami', '--verbose'],
  );

  await step('status: a new access token, with a fresh countdown.', 'mxs status', ['status']);

  const token = await step(
    'token prints the access token alone, for scripts (Authorization: Bearer $(mxs token)); shortened here.',
    'mxs token | cut -c1-12',
    ['token'],
    { capture: true },
  );
  say(`${token.stdout.trim().slice(0, 12)}…`);

  await step('Log out: the session ends on Synapse and is forgotten here.', 'mxs logout', ['logout']);

  await step('status: nothing stored any more (exit 4: log in again).', 'mxs status', ['status'], {
    expect: 4,
    explain: 'not logged in; this is expected',
  });

  say();
  say(dim(`Stopping Synapse and removing ${home}…`));
  await cleanup();
  say(bold(`Done in ${Math.round((Date.now() - started) / 1000)}s.`));
}

main().catch(async (err) => {
  say();
  say(`${bold('Demo failed:')} ${err instanceof Error ? err.message : err}`);
  await cleanup();
  process.exitCode = 1;
});
