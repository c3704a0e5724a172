import { usageError } from '../errors.js';
import { openInBrowser } from './terminal.js';
import { formatDuration } from '../duration.js';
import type { LoginMethod } from '../matrix/client.js';
import type { DeviceAuthorization } from '../oauth/client.js';
import type { LoginInteraction } from '../services/login.js';
import { printable } from '../printable.js';
import { promptSecret, promptText } from '../ui/input.js';
import type { Output } from '../ui/output.js';

export interface TerminalState {
  stdinIsTTY: boolean;
  stderrIsTTY: boolean;
  env: NodeJS.ProcessEnv;
  now: () => number;
}

/** A user name as typed at the prompt or given with --user, trimmed; blank is refused (it can never log in). */
export function userName(typed: string): string {
  const name = typed.trim();
  if (name === '') throw usageError('The user name is blank.', 'Pass --user alice (or @alice:example.org).');
  return name;
}

/** The terminal side of a login: prompts, the device-code countdown, the browser. */
export function terminalInteraction(out: Output, term: TerminalState, signal: AbortSignal): LoginInteraction {
  return {
    signal,
    async credentials(kind, user): Promise<LoginMethod> {
      if (!term.stdinIsTTY) {
        throw usageError(
          `No ${kind === 'token' ? 'login token' : 'password'}: standard input is not a terminal, so mxs cannot prompt.`,
          kind === 'token' ? 'Pipe the login token in with --token-stdin.' : 'Pipe the password in with --password-stdin.',
        );
      }
      if (kind === 'token') return { type: 'm.login.token', token: await promptSecret('Login token', { signal }) };
      const name = user ?? userName(await promptText('User', { signal }));
      return { type: 'm.login.password', user: name, password: await promptSecret(`Password for ${printable(name)}`, { signal }) };
    },
    showDeviceCode(code: DeviceAuthorization) {
      out.info(`To log in, open ${printable(code.verificationUri)} in a browser and enter the code: ${out.color.green(printable(code.userCode))}`);
      if (code.verificationUriComplete) out.info(`Or open this link, which carries the code: ${printable(code.verificationUriComplete)}`);
      const left = () => formatDuration(Math.max(0, code.expiresAt - term.now()));
      if (!term.stderrIsTTY) {
        out.info(`Waiting for approval (the code expires in ${left()})...`);
        return () => {};
      }
      const frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
      let i = 0;
      const draw = () => out.infoRaw(`\r\x1b[2K${frames[i++ % frames.length]} Waiting for approval; the code expires in ${left()}`);
      draw();
      const timer = setInterval(draw, 250);
      return () => {
        clearInterval(timer);
        out.infoRaw('\r\x1b[2K');
      };
    },
    async openAuthorizationUrl(url) {
      out.info('Open this URL in a browser to log in:');
      out.info(`  ${printable(url)}`);
      // The URL is printed either way: the user can open it by hand (over SSH, elsewhere).
      if (await openInBrowser(url, term.env)) out.info('(opened in your browser)');
    },
  };
}
