import { cancelled } from '../errors.js';
import type { Cancellation } from '../runtime.js';

// Terminal helpers for commands that wait on the user: open a page in a browser, turn Ctrl-C into a
// cancellation. Used by login and devices delete.

/** A browser can be opened on macOS and Windows, and on other systems with a display, but not over SSH without one. */
export function canOpenBrowser(env: NodeJS.ProcessEnv): boolean {
  if (env.MXS_NO_BROWSER) return false;
  if (process.platform === 'darwin' || process.platform === 'win32') return !env.SSH_CONNECTION;
  return Boolean(env.DISPLAY || env.WAYLAND_DISPLAY);
}

/** Opens `url` in the user's browser when one can be; whether it was. Never throws: the caller has printed the URL. */
export async function openInBrowser(url: string, env: NodeJS.ProcessEnv): Promise<boolean> {
  if (!canOpenBrowser(env)) return false;
  try {
    const { default: open } = await import('open');
    const child = await open(url);
    child.on('error', () => {});
    child.unref();
    return true;
  } catch {
    return false;
  }
}

/**
 * Ctrl-C while a command runs: aborts with a cancellation (exit 130) saying `what`. Ctrl-C is caught
 * from the start; the AbortSignal itself is made when first asked for (by a network exchange or a
 * wait), so a run that never waits (`mxs token` with a fresh token) does not load Node's AbortController.
 */
export function cancelOnSigint(what: string): Cancellation & { dispose(): void } {
  let controller: AbortController | undefined;
  const control = () => (controller ??= new AbortController());
  const onSigint = () => control().abort(cancelled(what));
  process.once('SIGINT', onSigint);
  return {
    get signal() {
      return control().signal;
    },
    dispose: () => process.off('SIGINT', onSigint),
  };
}
