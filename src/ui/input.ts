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

export interface PromptOptions {
  /** Ctrl-C while waiting (the command's own SIGINT handling): the prompt gives up with its reason. */
  signal?: AbortSignal;
  /** What the cancellation says (exit 130). */
  cancelled?: string;
}

/** Asks on the terminal without echo. Prompts write to stderr, so stdout holds only data (or --json). */
export async function promptSecret(message: string, opts: PromptOptions = {}): Promise<string> {
  const { default: password } = await import('@inquirer/password');
  return asked(password({ message, mask: false }, { output: process.stderr, signal: opts.signal }), opts);
}

/** Asks for a line of text; `required: false` accepts an empty answer (confirmations, "press Enter"). */
export async function promptText(message: string, opts: PromptOptions & { required?: boolean } = {}): Promise<string> {
  const { default: input } = await import('@inquirer/input');
  return asked(input({ message, required: opts.required ?? true }, { output: process.stderr, signal: opts.signal }), opts);
}

/** Ctrl-C or Ctrl-D at a prompt is the user cancelling (exit 130), not a failure. */
async function asked(answer: Promise<string>, opts: PromptOptions): Promise<string> {
  try {
    return await answer;
  } catch (err) {
    if (opts.signal?.aborted) throw opts.signal.reason;
    const name = (err as Error)?.name ?? '';
    if (/ExitPromptError|AbortPromptError|CancelPromptError/.test(name)) throw cancelled(opts.cancelled ?? 'Cancelled at the prompt; nothing was stored or sent.');
    throw err;
  }
}
