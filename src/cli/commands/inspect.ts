import { usageError } from '../../errors.js';
import { inspectService, noToken, storedTokens, tokenFromInput, type GivenToken, type InspectReport, type Online } from '../../services/inspect.js';
import { inspectLines } from '../../ui/inspect.js';
import type { CommandDefinition } from '../command.js';
import type { Stdin } from '../context.js';

export interface InspectFlags {
  stored: boolean;
  online: boolean;
  server?: string;
  insecure: boolean;
}

/** More than this on standard input is not a token (and is not kept in memory whole). */
const MAX_INPUT = 64 * 1024;

export const inspectCommand: CommandDefinition<InspectFlags, object, InspectReport> = {
  id: 'inspect',
  summary: 'Tell what a token is without printing it.',
  description:
    "Reads a token from standard input (never from the command line) and says, from the token alone, its kind (Synapse, Matrix Authentication Service, mxs proxy or unknown), the issuing server, the user's localpart where the format carries it, whether its built-in checksum holds, and a fingerprint (the first 12 hex digits of its SHA-256) to compare tokens across logs. With no input (a terminal) or --stored, inspects the profile's stored access and refresh tokens. --online also asks the homeserver whom an access token belongs to: the token is sent to the session's homeserver, or to --server. Exit 0 whenever the token could be looked at, whatever was found; 2 when no token was given.",
  examples: [
    'jq -r .access_token bot-config.json | <%= config.bin %> inspect',
    '<%= config.bin %> inspect --stored --json',
    'printf "%s\\n" "$TOKEN" | <%= config.bin %> inspect --online --server https://matrix.example.org',
  ],
  flags: {
    stored: { type: 'boolean', summary: "Inspect the profile's stored access and refresh tokens (the default on a terminal)." },
    online: { type: 'boolean', summary: 'Also ask the homeserver (/account/whoami) whom an access token belongs to.' },
    server: { type: 'option', helpValue: 'URL', summary: "With --online: the server to ask instead of the session's homeserver." },
    insecure: { type: 'boolean', summary: 'Allow plain http:// to a non-loopback --server.' },
  },
  async run(ctx, { flags }) {
    const { profile, deps } = ctx;
    if (flags.server !== undefined && !flags.online) throw usageError('--server is only used with --online.', 'Run: mxs inspect --online --server URL');
    const stdin = ctx.stdin();
    let given: GivenToken[];
    let homeserver: string | null = null;
    if (flags.stored || stdin.isTTY) {
      ({ tokens: given, homeserver } = await storedTokens(profile, deps));
    } else {
      given = [{ source: 'stdin', token: tokenFromInput(await readInput(stdin)) }];
    }
    let online: Online | null = null;
    if (flags.online) {
      if (flags.server !== undefined) online = { server: flags.server, insecure: flags.insecure };
      else {
        homeserver ??= (await deps.sessions.read(profile))?.homeserver ?? null;
        if (homeserver === null) throw usageError('No server to ask: give --server, or log in first.', 'Run: mxs inspect --online --server https://matrix.example.org');
        online = { homeserver };
      }
    }
    return { result: await inspectService(given, online, deps), exitCode: 0 };
  },
  text: (ctx, report) => ctx.out.data(inspectLines(report, ctx.out.color).join('\n')),
  jsonShape: (report) => ({ tokens: report.tokens }),
};

async function readInput(stdin: Stdin): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stdin) {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
    size += buf.length;
    if (size > MAX_INPUT) throw usageError(`Standard input holds more than ${MAX_INPUT / 1024} KiB, so it is not a token; it is not shown here.`, "Pipe the token alone, e.g.: printf '%s\\n' \"$TOKEN\" | mxs inspect");
    chunks.push(buf);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') throw noToken();
  return text;
}
