import type { Hint } from '../errors.js';
import type { StoragePreference } from '../model.js';
import { buildDeps, type Cancellation } from '../runtime.js';
import type { Deps } from '../services/deps.js';
import type { ConfigStore } from '../store/config.js';
import { renderHint } from '../ui/hints.js';
import type { Output } from '../ui/output.js';
import type { Host } from './command.js';
import type { Invocation } from './invocation.js';

/** Standard input as commands read it (a password line, a request body); a TTY prompts. */
export type Stdin = NodeJS.ReadStream;

/** What a command's run function is given: the invocation, the wired services and the world's edges. */
export interface CommandContext {
  invocation: Invocation;
  /** invocation.profile, the profile the command acts on. */
  profile: string;
  storage: StoragePreference;
  deps: Deps;
  out: Output;
  config: ConfigStore;
  env: NodeJS.ProcessEnv;
  /** Standard input, opened on first use (process.stdin costs the fast path a few ms). */
  stdin(): Stdin;
  host: Host;
  /** Aborted when the user cancels the run (Ctrl-C), with the command's cancellation as its reason; never aborts in tests that do not. */
  signal: AbortSignal;
  /** The profile used without --profile or MXS_PROFILE: the one chosen with `mxs switch`, else `default` (exit 6 when the config file is unreadable). */
  defaultProfile(): string;
  /** A hint as this invocation shows it (src/ui/hints.ts). */
  hint(hint: Hint): string;
}

export interface ContextIO {
  out: Output;
  env: NodeJS.ProcessEnv;
  stdin: () => Stdin;
  host?: Host;
}

export interface ContextOptions {
  /** 'in-process': keytar may run in this process (see src/store/keytar-direct.ts); else in a helper process. */
  keychain?: 'in-process' | undefined;
  /** The run's cancellation (src/cli/run.ts): the network layer and the command's own waits end with it. */
  cancellation?: Cancellation | undefined;
}

/** Wires the services' dependencies for one invocation (shared by every front end). */
export function commandContext(invocation: Invocation, io: ContextIO, opts: ContextOptions = {}): CommandContext {
  const { out, env } = io;
  const deps = buildDeps({ env, timeoutMs: invocation.timeoutMs, verbose: invocation.verbose, out, keychain: opts.keychain, cancellation: opts.cancellation });
  let never: AbortSignal | undefined;
  return {
    invocation,
    profile: invocation.profile,
    storage: invocation.storage,
    deps,
    out,
    config: invocation.config,
    env,
    stdin: io.stdin,
    host: io.host ?? {},
    get signal() {
      return opts.cancellation?.signal ?? (never ??= new AbortController().signal);
    },
    defaultProfile: () => invocation.config.defaultProfile() ?? 'default',
    hint: (hint) => renderHint(hint, invocation),
  };
}
