import { statSync } from 'node:fs';
import { constants, tmpdir } from 'node:os';
import { isAbsolute } from 'node:path';
import { parseDuration } from '../../duration.js';
import { usageError } from '../../errors.js';
import { execService } from '../../services/exec.js';
import { printable } from '../../printable.js';
import type { CommandDefinition } from '../command.js';
import { nodeLauncher } from '../exec-child.js';

/** The grace a command told to stop (SIGTERM) gets before SIGKILL. */
const KILL_GRACE_MS = 10_000;

const USAGE_HINT = 'Run: mxs exec [--keep-fresh] -- CMD [ARGS...]';

/** Under --json, only when the command could not be started: stdout is otherwise the command's. */
export interface ExecNotStarted {
  error: { code: string; message: string; exitCode: number };
}

export const execCommand: CommandDefinition<{ 'min-valid': string; 'keep-fresh': boolean; signal?: string }, object, ExecNotStarted | undefined> = {
  id: 'exec',
  // exec passes SIGINT on to the command it runs.
  sigint: 'own',
  summary: 'Run a command with a fresh access token and the session in its environment.',
  description: [
    "The command gets MATRIX_HOMESERVER, MATRIX_USER_ID, MATRIX_DEVICE_ID, MATRIX_ACCESS_TOKEN, MXS_PROFILE and MXS_EXPIRES_AT (empty when the token never expires), and inherits stdin, stdout and stderr. The token has at least --min-valid left when the command starts. SIGINT, SIGTERM and SIGHUP sent to mxs are passed on. mxs exits with the command's exit code (128+N when signal N ended it), and with its own codes only when it fails before the command starts.",
    'With --keep-fresh, mxs stays beside the command, refreshes the token ahead of expiry and keeps the current one in the 0600 file named by MXS_TOKEN_FILE (removed at exit); --signal HUP signals the command after each refresh. When the session can no longer be refreshed, the command gets SIGTERM (SIGKILL 10s later if it is still running) and mxs exits 4.',
    "The command's environment (and the token file) holds the access token: anything that can read them can use it.",
  ].join('\n\n'),
  examples: [
    '<%= config.bin %> exec -- sh -c \'curl -H "Authorization: Bearer $MATRIX_ACCESS_TOKEN" "$MATRIX_HOMESERVER/_matrix/client/v3/account/whoami"\'',
    '<%= config.bin %> exec --keep-fresh --signal HUP -- node bot.js    # bot.js rereads $MXS_TOKEN_FILE on SIGHUP',
    '<%= config.bin %> exec --profile work --min-valid 10m -- ./nightly-export.sh',
  ],
  usage: 'exec [--min-valid DURATION] [--keep-fresh [--signal NAME]] -- CMD [ARGS...]',
  flags: {
    'min-valid': { type: 'option', default: '60s', summary: 'The token has at least this left when the command starts (at most half its lifetime); --keep-fresh keeps it so.' },
    'keep-fresh': { type: 'boolean', summary: 'Stay beside the command and keep a fresh token in the file named by MXS_TOKEN_FILE.' },
    signal: { type: 'option', summary: 'Signal the command after each refresh, e.g. HUP (with --keep-fresh).' },
  },
  // Everything after `--` is the command's: mxs never reads its flags, and never echoes what stood
  // before a missing `--` (it is the command's, and may carry a secret).
  passThrough: { missing: () => usageError('mxs exec takes its own flags before -- and the command after it.', USAGE_HINT) },
  async run({ profile, deps, out, env }, { flags, rest }) {
    const [command, ...args] = rest;
    if (command === undefined) throw usageError('No command to run after --.', USAGE_HINT);
    const minValidMs = parseDuration(flags['min-valid'], '--min-valid');
    if (flags.signal !== undefined && !flags['keep-fresh']) {
      throw usageError('--signal is sent after each refresh, which only --keep-fresh does.', 'Add --keep-fresh, or drop --signal.');
    }
    const result = await execService(
      {
        profile,
        command,
        args,
        minValidMs,
        keepFresh: flags['keep-fresh'],
        reloadSignal: flags.signal === undefined ? null : signalNamed(flags.signal),
        baseEnv: env,
        tokenDirParent: privateTempParent(env),
        killGraceMs: killGrace(env),
      },
      deps,
      nodeLauncher,
    );
    if (result.outcome !== 'not-started') return { result: undefined, exitCode: result.exitCode };
    // One line, as a shell says it (127/126): not an mxs failure but the command's.
    out.info(`mxs: ${printable(result.message)}`);
    return { result: { error: { code: result.code, message: result.message, exitCode: result.exitCode } }, exitCode: result.exitCode };
  },
};

/** `HUP`, `SIGHUP`, `hup` or `1`, as `kill -s` and `timeout --signal` take them. */
function signalNamed(input: string): NodeJS.Signals {
  const text = input.trim().toUpperCase();
  const signals = constants.signals as Record<string, number>;
  const byNumber = /^\d+$/.test(text) ? Object.keys(signals).find((k) => signals[k] === Number(text)) : undefined;
  const name = byNumber ?? (text.startsWith('SIG') ? text : `SIG${text}`);
  if (signals[name] === undefined) {
    throw usageError(`Unknown signal "${input}" for --signal.`, 'Give a signal name such as HUP, USR1 or TERM (see: kill -l).');
  }
  return name as NodeJS.Signals;
}

/** A memory-backed, per-user directory when the system has one ($XDG_RUNTIME_DIR), else the temp dir. */
function privateTempParent(env: NodeJS.ProcessEnv): string {
  const runtime = env.XDG_RUNTIME_DIR;
  if (runtime && isAbsolute(runtime)) {
    try {
      if (statSync(runtime).isDirectory()) return runtime;
    } catch {
      // gone: use the temp dir
    }
  }
  return tmpdir();
}

/** MXS_EXEC_KILL_GRACE_MS (for tests) shortens the grace before SIGKILL. */
function killGrace(env: NodeJS.ProcessEnv): number {
  const v = env.MXS_EXEC_KILL_GRACE_MS;
  return v !== undefined && /^\d+$/.test(v) ? Number(v) : KILL_GRACE_MS;
}
