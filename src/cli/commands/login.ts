import { usageError } from '../../errors.js';
import type { LoginMethod } from '../../matrix/client.js';
import { loginService, type LoginResult } from '../../services/login.js';
import { checkTokenShape, readStdinLine } from '../../ui/input.js';
import { loginLine } from '../../ui/render.js';
import type { CommandDefinition } from '../command.js';
import type { CommandContext } from '../context.js';
import { terminalInteraction, userName } from '../login-interaction.js';

interface LoginFlags {
  method: 'auto' | 'oauth' | 'password' | 'token';
  browser: boolean;
  admin: boolean;
  'client-credentials': boolean;
  'client-id'?: string;
  user?: string;
  'password-stdin': boolean;
  'token-stdin': boolean;
  'device-id'?: string;
  'device-name'?: string;
  refresh: boolean;
  insecure: boolean;
}

export const loginCommand: CommandDefinition<LoginFlags, { server?: string }, LoginResult> = {
  id: 'login',
  cancelled: 'Login cancelled; nothing was stored.',
  summary: 'Log in to a Matrix homeserver and store the session.',
  description:
    'SERVER is a server name (resolved through /.well-known/matrix/client) or a base URL. On servers that use OAuth 2.0 (such as those running the Matrix Authentication Service), mxs shows a code to approve in any browser (also over SSH and in CI logs), or with --browser opens one here. Elsewhere it logs in with a password, read from standard input with --password-stdin or prompted for without echo on a terminal; it is never accepted as a flag. Asks for a refresh token unless --no-refresh.',
  examples: [
    '<%= config.bin %> login example.org --user alice',
    '<%= config.bin %> login matrix.org --browser',
    '<%= config.bin %> login example.org --admin',
    'printf "%s\\n" "$CLIENT_SECRET" | <%= config.bin %> login example.org --client-credentials --client-id 01J0ADMINCLIENT --profile ops',
    'printf "%s\\n" "$MATRIX_PASSWORD" | <%= config.bin %> login https://matrix.example.org -u @alice:example.org --password-stdin',
    'printf "%s\\n" "$LOGIN_TOKEN" | <%= config.bin %> login example.org --token-stdin --profile work',
  ],
  args: {
    server: { description: "Server name or homeserver URL (default: the profile's stored homeserver)." },
  },
  flags: {
    method: { type: 'option', options: ['auto', 'oauth', 'password', 'token'], default: 'auto', summary: 'auto: OAuth 2.0 where the server offers it, else password.' },
    browser: { type: 'boolean', summary: 'OAuth: log in through a browser (authorization code + PKCE) instead of a device code.', exclusive: ['password-stdin', 'token-stdin'] },
    admin: { type: 'boolean', summary: 'OAuth: also ask for the admin scopes (urn:mas:admin, urn:synapse:admin:*), for mxs admin.', exclusive: ['password-stdin', 'token-stdin'] },
    'client-credentials': {
      type: 'boolean',
      summary: 'OAuth: log in as a confidential client (client credentials grant, for unattended admin tools); the client secret on standard input.',
      exclusive: ['password-stdin', 'token-stdin', 'browser', 'admin', 'user', 'device-id', 'device-name'],
    },
    'client-id': { type: 'option', summary: 'With --client-credentials: the client ID the server knows the client by.' },
    user: { type: 'option', char: 'u', summary: 'User: a localpart (alice) or a full user ID (@alice:example.org); a login hint for OAuth.' },
    'password-stdin': { type: 'boolean', summary: 'Read the password from standard input (one line).', exclusive: ['token-stdin'] },
    'token-stdin': { type: 'boolean', summary: 'Log in with an m.login.token read from standard input.', exclusive: ['password-stdin', 'user'] },
    'device-id': { type: 'option', summary: 'Reuse or choose this device ID.' },
    'device-name': { type: 'option', summary: 'Display name for a new device (default: mxs on HOSTNAME).' },
    refresh: { type: 'boolean', default: true, allowNo: true, summary: 'Ask for a refresh token (--no-refresh: do not).' },
    insecure: { type: 'boolean', summary: 'Allow plain http:// to a non-loopback host.' },
  },
  async run(ctx, { flags, args }) {
    const { profile, storage, deps, out, env } = ctx;
    const server = args.server ?? (await deps.sessions.read(profile))?.homeserver;
    if (!server) throw usageError('No server given.', 'Run: mxs login example.org --user alice');
    if (Boolean(flags['client-credentials']) !== (flags['client-id'] !== undefined)) {
      throw usageError('--client-credentials and --client-id go together.', 'Run: mxs login SERVER --client-credentials --client-id ID (the client secret on standard input).');
    }
    if (flags.user !== undefined) flags = { ...flags, user: userName(flags.user) };
    const credentials = await givenCredentials(ctx, flags);
    // The secret comes only from standard input, never argv (one line, like --password-stdin).
    const clientCredentials = flags['client-credentials'] ? { clientId: flags['client-id']!, clientSecret: await readStdinLine(ctx.stdin(), 'client secret', '--client-credentials') } : undefined;
    const io = terminalInteraction(out, { stdinIsTTY: Boolean(ctx.stdin().isTTY), stderrIsTTY: out.errorsInteractive, env, now: Date.now }, ctx.signal);
    const result = await loginService(
      {
        profile,
        server,
        method: flags['token-stdin'] ? 'token' : flags.method,
        credentials,
        user: flags.user,
        browser: flags.browser,
        admin: flags.admin,
        clientCredentials,
        // For deployments that register mxs under their own page (MSC2966: https, not localhost).
        clientUri: env.MXS_OAUTH_CLIENT_URI || undefined,
        deviceId: flags['device-id'],
        deviceName: flags['device-name'],
        refresh: flags.refresh,
        insecure: flags.insecure,
        storage,
      },
      deps,
      io,
    );
    out.info(loginLine(result, Date.now(), out.color));
    return { result, exitCode: 0 };
  },
};

/** Credentials piped in on stdin; anything else is asked for only when the server needs it. */
async function givenCredentials(ctx: CommandContext, flags: LoginFlags): Promise<LoginMethod | undefined> {
  if (flags['token-stdin']) return { type: 'm.login.token', token: checkTokenShape(await readStdinLine(ctx.stdin(), 'login token', '--token-stdin'), 'login token', '--token-stdin') };
  if (!flags['password-stdin']) return undefined;
  if (!flags.user) throw usageError('No user given.', 'Pass --user alice (or @alice:example.org).');
  return { type: 'm.login.password', user: flags.user, password: await readStdinLine(ctx.stdin(), 'password', '--password-stdin') };
}
