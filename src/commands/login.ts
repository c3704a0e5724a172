import { Args, Flags } from '@oclif/core';
import { MxsCommand } from '../base-command.js';
import { usageError } from '../errors.js';
import type { LoginMethod } from '../matrix/client.js';
import { loginService, type LoginResult } from '../services/login.js';
import { promptSecret, promptText, readStdinLine } from '../ui/input.js';
import { loginLine } from '../ui/render.js';

export default class Login extends MxsCommand {
  static override summary = 'Log in to a Matrix homeserver and store the session.';
  static override description =
    'SERVER is a server name (resolved through /.well-known/matrix/client) or a base URL. The password is read from standard input with --password-stdin, or prompted for without echo on a terminal; it is never accepted as a flag. Asks for a refresh token unless --no-refresh.';
  static override examples = [
    '<%= config.bin %> login example.org --user alice',
    'printf "%s\\n" "$MATRIX_PASSWORD" | <%= config.bin %> login https://matrix.example.org -u @alice:example.org --password-stdin',
    'printf "%s\\n" "$LOGIN_TOKEN" | <%= config.bin %> login example.org --token-stdin --profile work',
  ];
  static override args = {
    // ignoreStdin: the password arrives on stdin (--password-stdin) and must never be taken for SERVER.
    server: Args.string({ description: 'Server name or homeserver URL (default: the profile\'s stored homeserver).', ignoreStdin: true }),
  };
  static override flags = {
    user: Flags.string({ char: 'u', summary: 'User: a localpart (alice) or a full user ID (@alice:example.org).' }),
    'password-stdin': Flags.boolean({ summary: 'Read the password from standard input (one line).', exclusive: ['token-stdin'] }),
    'token-stdin': Flags.boolean({ summary: 'Log in with an m.login.token read from standard input.', exclusive: ['password-stdin', 'user'] }),
    'device-id': Flags.string({ summary: 'Reuse or choose this device ID.' }),
    'device-name': Flags.string({ summary: 'Display name for a new device.' }),
    refresh: Flags.boolean({ default: true, allowNo: true, summary: 'Ask for a refresh token (--no-refresh: do not).' }),
    insecure: Flags.boolean({ summary: 'Allow plain http:// to a non-loopback host.' }),
  };

  async run(): Promise<LoginResult> {
    const { args, flags } = await this.parse(Login);
    const { profile, storage, deps } = this.setup(flags);
    const server = args.server ?? (await deps.sessions.read(profile))?.homeserver;
    if (!server) throw usageError('No server given.', 'Run: mxs login example.org --user alice');
    const method = await this.loginMethod(flags);
    const result = await loginService(
      { profile, server, method, deviceId: flags['device-id'], deviceName: flags['device-name'], refresh: flags.refresh, insecure: flags.insecure, storage },
      deps,
    );
    this.out.info(loginLine(result, Date.now(), this.out.color));
    return result;
  }

  private async loginMethod(flags: { user?: string; 'password-stdin': boolean; 'token-stdin': boolean }): Promise<LoginMethod> {
    if (flags['token-stdin']) return { type: 'm.login.token', token: await readStdinLine(process.stdin, 'login token', '--token-stdin') };
    const interactive = Boolean(process.stdin.isTTY) && !flags['password-stdin'];
    const user = flags.user ?? (interactive ? await promptText('User') : undefined);
    if (!user) throw usageError('No user given.', 'Pass --user alice (or @alice:example.org).');
    if (flags['password-stdin']) return { type: 'm.login.password', user, password: await readStdinLine(process.stdin, 'password', '--password-stdin') };
    if (!interactive) {
      throw usageError('No password: standard input is not a terminal, so mxs cannot prompt.', 'Pipe the password in with --password-stdin.');
    }
    return { type: 'm.login.password', user, password: await promptSecret(`Password for ${user}`) };
  }
}
