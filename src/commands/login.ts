import { Args, Flags } from '@oclif/core';
import { MxsCommand } from '../base-command.js';
import { usageError } from '../errors.js';
import type { LoginMethod } from '../matrix/client.js';
import { loginService, type LoginResult } from '../services/login.js';
import { checkTokenShape, readStdinLine } from '../ui/input.js';
import { terminalInteraction } from '../cli/login-interaction.js';
import { cancelOnSigint } from '../cli/terminal.js';
import { loginLine } from '../ui/render.js';

export default class Login extends MxsCommand {
  static override summary = 'Log in to a Matrix homeserver and store the session.';
  static override description =
    'SERVER is a server name (resolved through /.well-known/matrix/client) or a base URL. On servers that use OAuth 2.0 (such as those running the Matrix Authentication Service), mxs shows a code to approve in any browser (also over SSH and in CI logs), or with --browser opens one here. Elsewhere it logs in with a password, read from standard input with --password-stdin or prompted for without echo on a terminal; it is never accepted as a flag. Asks for a refresh token unless --no-refresh.';
  static override examples = [
    '<%= config.bin %> login example.org --user alice',
    '<%= config.bin %> login matrix.org --browser',
    'printf "%s\\n" "$MATRIX_PASSWORD" | <%= config.bin %> login https://matrix.example.org -u @alice:example.org --password-stdin',
    'printf "%s\\n" "$LOGIN_TOKEN" | <%= config.bin %> login example.org --token-stdin --profile work',
  ];
  static override args = {
    // ignoreStdin: the password arrives on stdin (--password-stdin) and must never be taken for SERVER.
    server: Args.string({ description: 'Server name or homeserver URL (default: the profile\'s stored homeserver).', ignoreStdin: true }),
  };
  static override flags = {
    method: Flags.option({ options: ['auto', 'oauth', 'password', 'token'] as const, default: 'auto' as const, summary: 'auto: OAuth 2.0 where the server offers it, else password.' })(),
    browser: Flags.boolean({ summary: 'OAuth: log in through a browser (authorization code + PKCE) instead of a device code.', exclusive: ['password-stdin', 'token-stdin'] }),
    user: Flags.string({ char: 'u', summary: 'User: a localpart (alice) or a full user ID (@alice:example.org); a login hint for OAuth.' }),
    'password-stdin': Flags.boolean({ summary: 'Read the password from standard input (one line).', exclusive: ['token-stdin'] }),
    'token-stdin': Flags.boolean({ summary: 'Log in with an m.login.token read from standard input.', exclusive: ['password-stdin', 'user'] }),
    'device-id': Flags.string({ summary: 'Reuse or choose this device ID.' }),
    'device-name': Flags.string({ summary: 'Display name for a new device (default: mxs on HOSTNAME).' }),
    refresh: Flags.boolean({ default: true, allowNo: true, summary: 'Ask for a refresh token (--no-refresh: do not).' }),
    insecure: Flags.boolean({ summary: 'Allow plain http:// to a non-loopback host.' }),
  };

  async run(): Promise<LoginResult> {
    const { args, flags } = await this.parse(Login);
    const { profile, storage, deps } = this.setup(flags);
    const server = args.server ?? (await deps.sessions.read(profile))?.homeserver;
    if (!server) throw usageError('No server given.', 'Run: mxs login example.org --user alice');
    const credentials = await this.givenCredentials(flags);
    const sigint = cancelOnSigint('Login cancelled; nothing was stored.');
    try {
      const io = terminalInteraction(this.out, { stdinIsTTY: Boolean(process.stdin.isTTY), stderrIsTTY: Boolean(process.stderr.isTTY), env: process.env, now: Date.now }, sigint.signal);
      const result = await loginService(
        {
          profile,
          server,
          method: flags['token-stdin'] ? 'token' : flags.method,
          credentials,
          user: flags.user,
          browser: flags.browser,
          // For deployments that register mxs under their own page (MSC2966: https, not localhost).
          clientUri: process.env.MXS_OAUTH_CLIENT_URI || undefined,
          deviceId: flags['device-id'],
          deviceName: flags['device-name'],
          refresh: flags.refresh,
          insecure: flags.insecure,
          storage,
        },
        deps,
        io,
      );
      this.out.info(loginLine(result, Date.now(), this.out.color));
      return result;
    } finally {
      sigint.dispose();
    }
  }

  /** Credentials piped in on stdin; anything else is asked for only when the server needs it. */
  private async givenCredentials(flags: { user?: string; 'password-stdin': boolean; 'token-stdin': boolean }): Promise<LoginMethod | undefined> {
    if (flags['token-stdin']) return { type: 'm.login.token', token: checkTokenShape(await readStdinLine(process.stdin, 'login token', '--token-stdin'), 'login token', '--token-stdin') };
    if (!flags['password-stdin']) return undefined;
    if (!flags.user) throw usageError('No user given.', 'Pass --user alice (or @alice:example.org).');
    return { type: 'm.login.password', user: flags.user, password: await readStdinLine(process.stdin, 'password', '--password-stdin') };
  }
}
