import { Args, Flags } from '@oclif/core';
import { MxsCommand } from '../base-command.js';
import { usageError } from '../errors.js';
import { whoamiService, whoamiTokenService, type WhoamiResult } from '../services/whoami.js';
import { checkTokenShape, readStdinLine } from '../ui/input.js';
import { whoamiLines } from '../ui/render.js';

export default class Whoami extends MxsCommand {
  static override summary = 'Ask the server whom the access token belongs to.';
  static override description =
    'Uses the stored session, refreshing first if its access token has expired. With --token-stdin, checks a token read from standard input instead and stores nothing.';
  static override examples = [
    '<%= config.bin %> whoami',
    '<%= config.bin %> whoami --json --profile work',
    'printf "%s\\n" "$TOKEN" | <%= config.bin %> whoami https://matrix.example.org --token-stdin',
  ];
  static override args = {
    // ignoreStdin: the token arrives on stdin (--token-stdin) and must never be taken for SERVER.
    server: Args.string({ description: 'Server name or URL; only needed with --token-stdin when no session is stored.', ignoreStdin: true }),
  };
  static override flags = {
    'token-stdin': Flags.boolean({ summary: 'Check an access token read from standard input; store nothing.' }),
    insecure: Flags.boolean({ summary: 'Allow plain http:// to a non-loopback host (with --token-stdin).' }),
  };

  async run(): Promise<WhoamiResult> {
    const { args, flags } = await this.parse(Whoami);
    const { profile, deps } = this.setup(flags);
    let report;
    if (flags['token-stdin']) {
      const stored = args.server ? null : await deps.sessions.read(profile);
      const server = args.server ?? stored?.homeserver;
      if (!server) throw usageError('No server to ask: give SERVER, or log in first.', 'Run: mxs whoami example.org --token-stdin');
      const token = checkTokenShape(await readStdinLine(process.stdin, 'access token', '--token-stdin'), 'access token', '--token-stdin');
      report = await whoamiTokenService(token, server, flags.insecure || Boolean(stored?.insecure), deps);
    } else {
      if (args.server) throw usageError('SERVER is only used with --token-stdin.', 'Run: mxs whoami (the stored session knows its server).');
      report = await whoamiService(profile, deps);
    }
    if (!this.jsonEnabled()) this.out.data(whoamiLines(report).join('\n'));
    return report.result;
  }
}
