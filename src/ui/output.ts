import type { MxsError } from '../errors.js';
import { Redactor } from '../redact.js';
import { printable } from '../printable.js';

export interface Stream {
  write(chunk: string): unknown;
  isTTY?: boolean;
}

/**
 * The one place mxs writes to the terminal. Data goes to stdout, everything else to stderr;
 * colour only on a TTY and never with NO_COLOR; every line passes the redactor, so no secret
 * can be printed by accident (`mxs token` prints its token through `secretData`).
 */
export type Paint = (text: string) => string;
export interface Colors {
  red: Paint;
  green: Paint;
  yellow: Paint;
  dim: Paint;
}

const plain = (text: string) => text;
export const NO_COLORS: Colors = { red: plain, green: plain, yellow: plain, dim: plain };

export class Output {
  readonly redactor = new Redactor();

  constructor(
    private readonly stdout: Stream,
    private readonly stderr: Stream,
    readonly color: Colors = NO_COLORS,
  ) {}

  /** chalk is loaded only when colour will be shown: scripts piping `mxs token` do not pay for it. */
  static async create(stdout: Stream, stderr: Stream, env: NodeJS.ProcessEnv): Promise<Output> {
    // FORCE_COLOR=0 (and false) is the other common way to say no colour (chalk's, Node's).
    const colorful = Boolean(stdout.isTTY) && env.NO_COLOR === undefined && env.TERM !== 'dumb' && env.FORCE_COLOR !== '0' && env.FORCE_COLOR !== 'false';
    if (!colorful) return new Output(stdout, stderr);
    const { Chalk } = await import('chalk');
    return new Output(stdout, stderr, new Chalk({ level: 1 }));
  }

  /** Whether stderr is a terminal (prompts and live progress go there). */
  get errorsInteractive(): boolean {
    return Boolean(this.stderr.isTTY);
  }

  get interactive(): boolean {
    return Boolean(this.stdout.isTTY);
  }

  data(line: string): void {
    this.stdout.write(this.redactor.redact(line) + '\n');
  }

  /** Raw write to stdout (for in-place updates); still redacted. */
  raw(text: string): void {
    this.stdout.write(this.redactor.redact(text));
  }

  /** Bytes as the server sent them (`mxs api`): unredacted and unescaped, like `curl`'s output. */
  rawData(text: string | Buffer): void {
    this.stdout.write(text as string);
  }

  /**
   * Streams a body to stdout with backpressure (a 100 MiB download never sits in memory), and resolves
   * once stdout has taken all of it: pipeline() without `end` resolves when the body ends, with the last
   * chunks possibly still queued for a full pipe, and the CLI exits right after (losing them).
   */
  async pipeData(body: NodeJS.ReadableStream): Promise<void> {
    const { pipeline } = await import('node:stream/promises');
    const stdout = this.stdout as unknown as NodeJS.WritableStream;
    await pipeline(body, stdout, { end: false });
    // Write callbacks run in order: this one runs once everything written before it is flushed.
    await new Promise<void>((resolve, reject) => stdout.write('', (err) => (err ? reject(err) : resolve())));
  }

  /** The only unredacted path: `mxs token`. */
  secretData(line: string): void {
    this.stdout.write(line + '\n');
  }

  json(value: unknown): void {
    this.stdout.write(this.redactor.redact(JSON.stringify(value, null, 2)) + '\n');
  }

  info(line: string): void {
    this.stderr.write(this.redactor.redact(line) + '\n');
  }

  /** Raw write to stderr (live progress lines); still redacted. */
  infoRaw(text: string): void {
    this.stderr.write(this.redactor.redact(text));
  }

  notice(line: string): void {
    this.info(`mxs: ${line}`);
  }

  /** `hint` as src/ui/hints.ts rendered it for this invocation. */
  error(err: MxsError, verbose: boolean, hint: string): void {
    // One line of what happened and one of what to do: text from servers and users inside them is escaped.
    this.info(`${this.color.red('Error:')} ${printable(err.message)}`);
    if (hint) this.info(printable(hint));
    if (verbose) {
      let cause: unknown = err;
      while (cause instanceof Error) {
        this.info(this.color.dim(cause.stack ?? cause.message));
        cause = cause.cause;
      }
    }
  }
}
