import { cancelled } from '../errors.js';

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

/** Ctrl-C while a command waits on the user: aborts with a cancellation (exit 130) saying `what`. */
export function cancelOnSigint(what: string): { signal: AbortSignal; dispose(): void } {
  const controller = new AbortController();
  const onSigint = () => controller.abort(cancelled(what));
  process.once('SIGINT', onSigint);
  return { signal: controller.signal, dispose: () => process.off('SIGINT', onSigint) };
}
