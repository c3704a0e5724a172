import { cancelled, usageError } from '../errors.js';

/** Reads one secret line from standard input (`--password-stdin`, `--token-stdin`): the trailing newline is dropped. */
export async function readStdinLine(stdin: NodeJS.ReadStream, what: string, flag: string): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stdin) {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
    size += buf.length;
    if (size > 64 * 1024) throw usageError(`Standard input is too large for ${what}.`, `Pipe the ${what} alone into ${flag}.`);
    chunks.push(buf);
    if (buf.includes(10)) break;
  }
  const line = Buffer.concat(chunks).toString('utf8').split(/\r?\n/)[0] ?? '';
  if (line === '') {
    throw usageError(`${flag} was given but standard input held no ${what}.`, `Pipe it in, e.g.: printf '%s\\n' "$SECRET" | mxs ... ${flag}`);
  }
  return line;
}

/** A token from stdin must be a token: printable ASCII, no spaces or control characters (checked before anything is sent). */
export function checkTokenShape(token: string, what: string, flag: string): string {
  if (!/^[\x21-\x7e]{1,4096}$/.test(token)) {
    throw usageError(
      `The ${what} read from standard input contains spaces, control characters or non-ASCII text, so it cannot be a token; nothing was sent.`,
      `Pipe the token alone, e.g.: printf '%s\\n' "$TOKEN" | mxs ... ${flag}`,
    );
  }
  return token;
}

/** Asks on the terminal without echo. */
export async function promptSecret(message: string): Promise<string> {
  const { default: password } = await import('@inquirer/password');
  return asked(password({ message, mask: false }));
}

export async function promptText(message: string): Promise<string> {
  const { default: input } = await import('@inquirer/input');
  return asked(input({ message, required: true }));
}

/** Ctrl-C or Ctrl-D at a prompt is the user cancelling (exit 130), not a failure. */
async function asked(answer: Promise<string>): Promise<string> {
  try {
    return await answer;
  } catch (err) {
    const name = (err as Error)?.name ?? '';
    if (/ExitPromptError|AbortPromptError|CancelPromptError/.test(name)) throw cancelled('Cancelled at the prompt; nothing was stored or sent.');
    throw err;
  }
}
