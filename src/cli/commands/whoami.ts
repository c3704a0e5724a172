import { usageError } from '../../errors.js';
import { whoamiService, whoamiTokenService, type WhoamiReport } from '../../services/whoami.js';
import { checkTokenShape, readStdinLine } from '../../ui/input.js';
import { whoamiLines } from '../../ui/render.js';
import type { CommandDefinition } from '../command.js';

export const whoamiCommand: CommandDefinition<{ 'token-stdin': boolean; insecure: boolean }, { server?: string }, WhoamiReport> = {
  id: 'whoami',
  summary: 'Ask the server whom the access token belongs to.',
  description:
    'Uses the stored session, refreshing first if its access token has expired. With --token-stdin, checks a token read from standard input instead and stores nothing.',
  examples: [
    '<%= config.bin %> whoami',
    '<%= config.bin %> whoami --json --profile work',
    'printf "%s\\n" "$TOKEN" | <%= config.bin %> whoami https://matrix.example.org --token-stdin',
  ],
  args: {
    server: { description: 'Server name or URL; only needed with --token-stdin when no session is stored.' },
  },
  flags: {
    'token-stdin': { type: 'boolean', summary: 'Check an access token read from standard input; store nothing.' },
    insecure: { type: 'boolean', summary: 'Allow plain http:// to a non-loopback host (with --token-stdin).' },
  },
  async run(ctx, { flags, args }) {
    const { profile, deps } = ctx;
    let report: WhoamiReport;
    if (flags['token-stdin']) {
      const stored = args.server ? null : await deps.sessions.read(profile);
      const server = args.server ?? stored?.homeserver;
      if (!server) throw usageError('No server to ask: give SERVER, or log in first.', 'Run: mxs whoami example.org --token-stdin');
      const token = checkTokenShape(await readStdinLine(ctx.stdin(), 'access token', '--token-stdin'), 'access token', '--token-stdin');
      report = await whoamiTokenService(token, server, flags.insecure || Boolean(stored?.insecure), deps);
    } else {
      if (args.server) throw usageError('SERVER is only used with --token-stdin.', 'Run: mxs whoami (the stored session knows its server).');
      report = await whoamiService(profile, deps);
    }
    return { result: report, exitCode: 0 };
  },
  // The clock line is for a person; --json gives the result alone.
  text: (ctx, report) => ctx.out.data(whoamiLines(report).join('\n')),
  jsonShape: (report) => report.result,
};
