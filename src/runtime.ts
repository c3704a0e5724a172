import type { Deps } from './services/deps.js';
import { keychainAccount, KeychainSecretStore, loadKeytar } from './store/keychain.js';
import { configDir, statePaths } from './store/paths.js';
import { FileSecretStore } from './store/secrets.js';
import { SessionStore } from './store/sessions.js';
import type { Output } from './ui/output.js';

export interface RuntimeOptions {
  env: NodeJS.ProcessEnv;
  timeoutMs: number;
  verbose: boolean;
  out: Output;
  /** 'in-process': keytar in this process where that is safe (see src/store/keytar-direct.ts); default: a helper process. */
  keychain?: 'in-process' | undefined;
  /** The user's cancellation (Ctrl-C) for the whole run: every network exchange and wait ends with it. */
  cancellation?: Cancellation | undefined;
}

/** A run's cancellation: its signal is read only when something can wait on it (made on first read). */
export interface Cancellation {
  readonly signal: AbortSignal;
}

const DEFAULT_KEYCHAIN_TIMEOUT_MS = 3000;

function abortableSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** The real world, wired for a command: files under the config dir, keytar, undici, the clock. */
export function buildDeps(opts: RuntimeOptions): Deps {
  const root = configDir(opts.env);
  const paths = statePaths(root);
  const isDefaultDir = !opts.env.MXS_CONFIG_DIR;
  const keychainTimeout = Number(opts.env.MXS_KEYCHAIN_TIMEOUT_MS) || DEFAULT_KEYCHAIN_TIMEOUT_MS;
  const clock = { skewMs: null as number | null };
  const now = () => Date.now();
  const cancelled = () => opts.cancellation?.signal;
  return {
    now,
    sleep: (ms, signal) => abortableSleep(ms, signal ?? cancelled()),
    clock,
    http: {
      timeoutMs: opts.timeoutMs,
      now,
      sleep: (ms) => abortableSleep(ms, cancelled()),
      get signal() {
        return cancelled();
      },
      // On a terminal, a wait of more than a moment is said (and cleared): silence looks like a hang.
      ...(opts.out.errorsInteractive && {
        onWaiting: (what: string) => {
          opts.out.infoRaw(what);
          return () => opts.out.infoRaw('\r\x1b[K');
        },
      }),
      trace: opts.verbose ? (line) => opts.out.info(opts.out.color.dim(line)) : undefined,
      onClockSample: (skew) => {
        clock.skewMs = skew;
      },
    },
    sessions: new SessionStore(paths),
    secretStores: {
      keychain: new KeychainSecretStore(() => loadKeytar(opts.keychain), keychainTimeout, (profile) => keychainAccount(profile, root, isDefaultDir)),
      file: new FileSecretStore(paths),
    },
    lock: {
      path: paths.lock,
      // Long enough for a holder to finish a refresh with all its retries; bounded all the same.
      waitMs: opts.timeoutMs * 3 + 15_000,
    },
    notice: (m) => opts.out.notice(m),
    rememberSecret: (...values) => opts.out.redactor.add(...values),
  };
}
