import type { Output } from '../ui/output.js';
import type { HintView } from '../ui/hints.js';
import type { CommandDefinition, GlobalFlags, Host } from './command.js';
import { commandContext, type CommandContext, type Stdin } from './context.js';
import { resolveInvocation } from './invocation.js';
import { reportAfterResult, reportError } from './report-error.js';
import { cancelOnSigint } from './terminal.js';

/** A command line as a front end parsed it from a definition's flags and args. */
export interface ParsedInput {
  flags: Record<string, unknown>;
  args: Record<string, unknown>;
  rest?: string[];
}

export interface RunIO {
  out: Output;
  env: NodeJS.ProcessEnv;
  stdin: () => Stdin;
  host?: Host;
  /** A real process (oclif, the fast path): Ctrl-C cancels the run (CommandDefinition.sigint). */
  interrupts?: boolean;
}

/**
 * Runs a command definition on a parsed command line, for every front end (oclif, the fast path,
 * tests): resolves the invocation once, runs, prints the result, reports any error; the exit code.
 */
export async function runDefinition(command: CommandDefinition, parsed: ParsedInput, io: RunIO): Promise<number> {
  const flags = parsed.flags as unknown as GlobalFlags;
  const json = flags.json === true;
  let hints: HintView = { defaultProfile: null };
  const sigint = io.interrupts && command.sigint !== 'own' ? cancelOnSigint(command.cancelled ?? 'Cancelled.') : undefined;
  try {
    const given = command.profileArg !== undefined ? (parsed.args[command.profileArg] as string) : flags.profile;
    const invocation = resolveInvocation({ ...flags, profile: given }, io.env);
    hints = invocation;
    const ctx = commandContext(invocation, io, { keychain: command.keychain, cancellation: sigint });
    const outcome = await command.run(ctx, { flags: parsed.flags, args: parsed.args, json, rest: parsed.rest ?? [] });
    present(command, ctx, outcome.result, json);
    return outcome.error ? reportAfterResult(outcome.error, io.out, hints) : outcome.exitCode;
  } catch (err) {
    // After Ctrl-C, whatever a layer made of the aborted exchange (a fallback, a wrapped message), the run was cancelled.
    const failure: unknown = sigint?.signal.aborted ? sigint.signal.reason : err;
    return reportError(failure, io.out, { json, verbose: flags.verbose === true, hints });
  } finally {
    sigint?.dispose();
  }
}

function present(command: CommandDefinition, ctx: CommandContext, result: unknown, json: boolean): void {
  if (!json) return command.text?.(ctx, result);
  const document = command.jsonShape ? command.jsonShape(result) : result;
  if (document === undefined) return;
  const printing = command.json ?? 'redacted';
  if (printing === 'redacted') ctx.out.json(document);
  // The one output allowed to carry a secret: `token` prints it, `api` prints the server's answer as received.
  else if (printing === 'unredacted') ctx.out.secretData(JSON.stringify(document, null, 2));
}
