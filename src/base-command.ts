import { Command, Flags } from '@oclif/core';
import { commandContext, type CommandContext, type GlobalFlags } from './cli/context.js';
import { reportError } from './cli/report-error.js';
import { Output } from './ui/output.js';

/**
 * Global flags, wiring and the single error exit of every command. Commands stay thin:
 * parse, call one service, render or return the result (oclif prints it under --json).
 */
export abstract class MxsCommand extends Command {
  static override enableJsonFlag = true;

  static override baseFlags = {
    // No fixed default: without --profile or MXS_PROFILE the context uses the profile chosen with `mxs switch`, else `default`.
    profile: Flags.string({ char: 'p', env: 'MXS_PROFILE', helpGroup: 'GLOBAL', summary: 'Named session to use (default: the one chosen with mxs switch, else default).' }),
    verbose: Flags.boolean({ helpGroup: 'GLOBAL', summary: 'Trace HTTP exchanges on stderr (tokens redacted) and show error details.' }),
    storage: Flags.option({ options: ['auto', 'keychain', 'file'] as const, env: 'MXS_STORAGE', default: 'auto' as const, helpGroup: 'GLOBAL', summary: 'Where secrets live: the OS keychain, a 0600 file, or auto (keychain, else file).' })(),
    timeout: Flags.string({ env: 'MXS_TIMEOUT', default: '30s', helpGroup: 'GLOBAL', summary: 'Longest one HTTP exchange may take, e.g. 10s or 1m.' }),
  };

  private output: Output | undefined;

  protected get out(): Output {
    return (this.output ??= new Output(process.stdout, process.stderr));
  }

  override async init(): Promise<void> {
    await super.init();
    this.output = await Output.create(process.stdout, process.stderr, process.env);
  }

  protected setup(flags: GlobalFlags): CommandContext {
    return commandContext(flags, this.out);
  }

  /** Sets the exit code of a successful run that still has something to say (status: 4, 5). */
  protected exitWith(code: number): void {
    process.exitCode = code;
  }

  override logJson(json: unknown): void {
    this.out.json(json);
  }

  override async catch(err: Error): Promise<void> {
    process.exitCode = reportError(err, this.out, { json: this.jsonEnabled(), verbose: this.argv.includes('--verbose'), argv: this.argv });
  }
}
