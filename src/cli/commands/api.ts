import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { usageError } from '../../errors.js';
import { apiPages, apiRequest, defaultMethod, httpError, parseField, parseHeader, readCappedText, typedValue, type ApiField, type ApiInput } from '../../services/api.js';
import type { CommandDefinition, Outcome } from '../command.js';
import type { Stdin } from '../context.js';

const METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS'];

interface ApiFlags {
  method?: string;
  'raw-field'?: string[];
  field?: string[];
  input?: string;
  header?: string[];
  include: boolean;
  paginate: boolean;
}

/** Under --json: the answer as one document. Otherwise the body streams to stdout as received. */
export interface ApiAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
}

export const apiCommand: CommandDefinition<ApiFlags, { first: string; second?: string }, ApiAnswer | undefined> = {
  id: 'api',
  summary: "Make an authenticated request to the session's homeserver, like gh api.",
  description:
    'PATH is relative to /_matrix/client/v3/ unless it starts with /_matrix/ or /_synapse/; {userId} and {deviceId} are filled in from the session. The token is refreshed first when it has less than 60s left, and once more if the server refuses it. The response body goes to stdout as received; an HTTP error exits 7 (3 for 5xx) after printing it.',
  examples: [
    '<%= config.bin %> api account/whoami',
    '<%= config.bin %> api PUT "profile/{userId}/displayname" -f displayname="Alice"',
    '<%= config.bin %> api POST createRoom -f name=ops -F is_direct=false',
    '<%= config.bin %> api --paginate "rooms/!room:example.org/messages?dir=b" -F limit=100',
    '<%= config.bin %> api -X GET /_synapse/admin/v2/users -F limit=10',
    '<%= config.bin %> api POST /_matrix/media/v3/upload --input photo.png -H "Content-Type: image/png"',
  ],
  args: {
    first: { description: 'METHOD (optional) or PATH.', required: true, name: 'PATH', usage: '[METHOD] PATH' },
    second: { description: 'PATH, when METHOD was given first.', usage: '' },
  },
  flags: {
    method: { type: 'option', char: 'X', summary: 'HTTP method (default GET, or POST with fields or --input).' },
    'raw-field': { type: 'option', char: 'f', multiple: true, summary: 'A string field key=value (query string for GET/DELETE, else JSON body).' },
    field: { type: 'option', char: 'F', multiple: true, summary: 'A typed field key=value: numbers, true, false, null become JSON; @file reads the value from a file.' },
    input: { type: 'option', summary: 'Send this file (- for stdin) as the request body, as is.' },
    header: { type: 'option', char: 'H', multiple: true, summary: "An extra header 'Name: value'." },
    include: { type: 'boolean', char: 'i', summary: 'Print the status line and headers before the body.' },
    paginate: { type: 'boolean', summary: 'Repeat a GET while the answer has next_batch/next_token; one JSON document per line.' },
  },
  // The server's answer as received, like curl: a token in a /login answer is the user's to see.
  json: 'unredacted',
  async run(ctx, { flags, args, json }): Promise<Outcome<ApiAnswer | undefined>> {
    const { profile, deps, out } = ctx;
    const positionalMethod = args.second !== undefined ? args.first.toUpperCase() : undefined;
    if (positionalMethod !== undefined && !METHODS.includes(positionalMethod)) throw usageError(`Unknown HTTP method "${args.first.slice(0, 20)}".`, `Use one of ${METHODS.join(', ')}.`);
    const path = args.second ?? args.first;
    const fields: ApiField[] = [
      ...(flags['raw-field'] ?? []).map((f) => parseField(f)),
      ...(await Promise.all(
        (flags.field ?? []).map(async (f) => {
          const { key, value } = parseField(f);
          return { key, value: value.startsWith('@') ? await readFieldFile(value.slice(1)) : typedValue(value) };
        }),
      )),
    ];
    const input = flags.input === undefined ? undefined : await requestBody(flags.input, ctx.stdin);
    const request: ApiInput = { profile, method: '', path, fields, headers: (flags.header ?? []).map(parseHeader), input };
    // --paginate only pages GETs: its fields go in the query string.
    request.method = (flags.method ?? positionalMethod ?? (flags.paginate ? 'GET' : defaultMethod(request))).toUpperCase();
    if (!METHODS.includes(request.method)) throw usageError(`Unknown HTTP method "${request.method.slice(0, 20)}".`, `Use one of ${METHODS.join(', ')}.`);

    if (flags.paginate) {
      for await (const page of apiPages(request, deps)) {
        if (page.status >= 200 && page.status < 300) {
          out.rawData(compactJson(page.text) + '\n');
        } else {
          out.rawData(page.text.endsWith('\n') ? page.text : `${page.text}\n`);
          throw httpError(page.status, page.text, new URL(page.url).host);
        }
      }
      return { result: undefined, exitCode: 0 };
    }

    const res = await apiRequest(request, deps);
    const host = new URL(res.url).host;
    if (json) {
      const text = await readCappedText(res.body);
      const isJson = /json/i.test(String(res.headers['content-type'] ?? ''));
      let body: unknown = text;
      if (isJson) {
        try {
          body = JSON.parse(text);
        } catch {
          // malformed JSON is shown as the text it is
        }
      }
      const result = { status: res.status, headers: res.headers, body };
      // The answer is the result on stdout; the failure is only said on stderr, with its exit code.
      return res.status >= 400 ? { result, exitCode: 0, error: httpError(res.status, text, host) } : { result, exitCode: 0 };
    }
    if (flags.include) {
      const head = [`HTTP/1.1 ${res.status} ${res.statusText}`.trimEnd(), ...Object.entries(res.headers).flatMap(([k, v]) => (Array.isArray(v) ? v : [v]).map((x) => `${k}: ${x}`))];
      out.rawData(head.join('\r\n') + '\r\n\r\n');
    }
    // On a terminal a JSON answer is for reading: indented and ending with a newline, as gh api does.
    const forReading = out.interactive && /json/i.test(String(res.headers['content-type'] ?? ''));
    if (res.status >= 400 || forReading) {
      const text = await readCappedText(res.body);
      out.rawData(forReading ? prettyJson(text) : text);
      if (res.status >= 400) throw httpError(res.status, text, host);
      return { result: undefined, exitCode: 0 };
    }
    await out.pipeData(res.body);
    return { result: undefined, exitCode: 0 };
  },
};

/** JSON indented by two spaces with a final newline; text that does not parse, as it is (with the newline). */
function prettyJson(text: string): string {
  try {
    return `${JSON.stringify(JSON.parse(text), null, 2)}\n`;
  } catch {
    return text.endsWith('\n') ? text : `${text}\n`;
  }
}

async function readFieldFile(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch {
    throw usageError(`Cannot read the file ${path} for a field.`, 'Check the path after @.');
  }
}

/** One page on one line (JSON Lines). */
function compactJson(text: string): string {
  try {
    return JSON.stringify(JSON.parse(text));
  } catch {
    return text.replace(/\n/g, ' ');
  }
}

/** Servers want a Content-Length for uploads (Synapse refuses chunked media): a file streams with its size, stdin is read first. */
async function requestBody(source: string, stdin: () => Stdin): Promise<NonNullable<ApiInput['input']>> {
  if (source === '-') {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of stdin()) {
      const buf = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
      size += buf.length;
      if (size > MAX_STDIN_BODY) throw usageError(`Standard input is larger than ${MAX_STDIN_BODY / 1024 / 1024} MiB.`, 'Save it to a file and pass --input FILE (files stream).');
      chunks.push(buf);
    }
    return { body: Buffer.concat(chunks), replayable: true };
  }
  const st = await stat(source).catch(() => null);
  if (!st?.isFile()) throw usageError(`Cannot read --input ${source}: not a readable file.`, 'Give a readable file, or - for standard input.');
  return { body: () => createReadStream(source), replayable: true, length: st.size };
}

/** stdin is held in memory to learn its length (and to send it again after a refresh): bounded. */
const MAX_STDIN_BODY = 256 * 1024 * 1024;
