import { Command, Flags, type Interfaces } from '@oclif/core';
import { parseDuration } from './duration.js';
import { asMxsError, Exit, MxsError, usageError } from './errors.js';
import type { StoragePreference } from './model.js';
import { buildDeps } from './runtime.js';
import type { Deps } from './services/deps.js';
import { validateProfile } from './store/paths.js';
import { Output } from './ui/output.js';

export type BaseFlags<T extends typeof Command> = Interfaces.InferredFlags<(typeof MxsCommand)['baseFlags'] & T['flags']>;

/**
 * Global flags, wiring and the single error exit of every command. Commands stay thin:
 * parse, call one service, render or return the result (oclif prints it under --json).
 */
export abstract class MxsCommand extends Command {
  static override enableJsonFlag = true;

  static override baseFlags = {
    profile: Flags.string({ char: 'p', env: 'MXS_PROFILE', default: 'default', helpGroup: 'GLOBAL', summary: 'Named session to use; several can coexist.' }),
    verbose: Flags.boolean({ helpGroup: 'GLOBAL', summary: 'Trace HTTP exchanges on stderr (tokens redacted) and show error details.' }),
    storage: Flags.option({ options: ['auto', 'keychain', 'file'] as const, env: 'MXS_STORAGE', default: 'auto' as const, helpGroup: 'GLOBAL', summary: 'Where secrets live: the OS keychain, a 0600 file, or auto (keychain, else file).' })(),
    timeout: Flags.string({ env: 'MXS_TIMEOUT', default: '30s', helpGroup: 'GLOBAL', summary: 'Longest one HTTP exchange may take, e.g. 10s or 1m.' }),
  };

  protected out = new Output(process.stdout, process.stderr, process.env);

  /** Validated global options, and the services' dependencies built from them. */
  protected setup(flags: { profile: string; verbose: boolean; storage: string; timeout: string }): {
    profile: string;
    storage: StoragePreference;
    deps: Deps;
  } {
    const profile = validateProfile(flags.profile);
    const timeoutMs = parseDuration(flags.timeout, '--timeout');
    if (timeoutMs <= 0) throw usageError('--timeout must be longer than zero.', 'For example: --timeout 10s');
    const deps = buildDeps({ env: process.env, timeoutMs, verbose: flags.verbose, out: this.out });
    return { profile, storage: flags.storage as StoragePreference, deps };
  }

  protected get verbose(): boolean {
    return this.argv.includes('--verbose');
  }

  /** Sets the exit code of a successful run that still has something to say (status: 4, 5). */
  protected exitWith(code: number): void {
    process.exitCode = code;
  }

  override logJson(json: unknown): void {
    this.out.json(json);
  }

  override async catch(err: Error & { oclif?: { exit?: number } }): Promise<void> {
    const e = err instanceof MxsError ? err : isParseError(err) ? parseError(err, this.argv) : asMxsError(err);
    this.out.error(e, this.verbose);
    if (this.jsonEnabled()) this.out.json({ error: e.toJSON() });
    process.exitCode = e.exitCode;
  }
}

function isParseError(err: Error & { oclif?: { exit?: number } }): boolean {
  return err.oclif !== undefined || /Flag|argument/i.test(err.constructor?.name ?? '');
}

/** oclif's parser errors become usage errors; a password-like flag never gets its value echoed. */
function parseError(err: Error, argv: string[]): MxsError {
  if (argv.some((a) => /^--?(password|pass|pw|token|access-token)(=|$)/i.test(a))) {
    return usageError(
      'Secrets are never accepted as flag values (they would show in the process list and shell history).',
      'Use --password-stdin or --token-stdin, or let mxs prompt for the password.',
    );
  }
  const first = err.message.split('\n')[0]!.trim();
  return new MxsError({ code: 'usage', message: first, hint: 'See: mxs --help, or mxs COMMAND --help', exitCode: Exit.usage, cause: err });
}
