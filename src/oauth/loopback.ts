import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { MxsError } from '../errors.js';

// RFC 8252 §7.3: a native app receives the authorization response on a loopback redirect URI with an
// OS-chosen port. The URI is registered without a port (the server must accept any port).

export const CALLBACK_PATH = '/callback';

export interface LoopbackReceiver {
  /** The redirect URI with the port, as sent in the authorization request. */
  redirectUri: string;
  /** Resolves with the code once a redirect with the right `state` (and `iss`, when present) arrives. */
  code: Promise<string>;
  close(): void;
}

const page = (title: string, text: string) =>
  `<!doctype html><html><head><meta charset="utf-8"><title>${title}</title></head>` +
  `<body style="font-family:sans-serif;max-width:36em;margin:4em auto"><h1>${title}</h1><p>${text}</p></body></html>`;

/** Listens on 127.0.0.1 until a redirect arrives, `timeoutMs` passes, or `signal` aborts. */
export async function receiveAuthorizationCode(opts: { state: string; issuer: string; issRequired?: boolean; timeoutMs: number; signal?: AbortSignal }): Promise<LoopbackReceiver> {
  let settle!: { resolve: (code: string) => void; reject: (e: unknown) => void };
  const code = new Promise<string>((resolve, reject) => (settle = { resolve, reject }));
  code.catch(() => {});
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    if (url.pathname !== CALLBACK_PATH) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('Not found');
      return;
    }
    const q = url.searchParams;
    const answer = (ok: boolean, title: string, text: string) => {
      res.writeHead(ok ? 200 : 400, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' }).end(page(title, text));
    };
    // A request without our state is not the answer to our request (a stray or forged redirect): ignore it.
    if (q.get('state') !== opts.state) {
      answer(false, 'Login failed', 'This answer does not belong to the login mxs started. Return to the terminal.');
      return;
    }
    // RFC 9207 (mix-up attacks): when the server names itself, it must be the issuer we asked; a server
    // whose metadata promises `iss` must send it (§2.4).
    const iss = q.get('iss');
    if (iss !== opts.issuer && (iss !== null || opts.issRequired)) {
      answer(false, 'Login failed', 'The answer did not come from the expected issuer. Return to the terminal.');
      const message = iss === null ? `The authorization answer carried no iss, although ${opts.issuer} promises it (RFC 9207).` : `The authorization answer came from issuer ${iss}, not ${opts.issuer}.`;
      settle.reject(new MxsError({ code: 'bad_response', message, hint: 'Run mxs login again; if it repeats, report it to the server admin.', kind: 'network' }));
      return;
    }
    const error = q.get('error');
    if (error !== null) {
      answer(false, 'Login not completed', 'mxs was not given access. You can close this window.');
      const denied = error === 'access_denied';
      settle.reject(
        new MxsError({
          code: /^[\x20-\x7e]{1,64}$/.test(error) ? error : 'bad_response',
          message: denied ? 'The login was denied in the browser.' : `The server ended the login: ${(q.get('error_description') ?? error).slice(0, 200)}.`,
          hint: 'Run mxs login again and approve the request.',
          kind: 'auth',
        }),
      );
      return;
    }
    const got = q.get('code');
    if (!got) {
      answer(false, 'Login failed', 'The answer carried no authorization code. Return to the terminal.');
      return;
    }
    answer(true, 'Logged in', 'mxs has what it needs. You can close this window and return to the terminal.');
    settle.resolve(got);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const timer = setTimeout(() => {
    settle.reject(new MxsError({ code: 'timeout', message: `No answer from the browser within ${Math.round(opts.timeoutMs / 1000)}s.`, hint: 'Run mxs login --browser again, or use the device code (without --browser).', kind: 'auth' }));
  }, opts.timeoutMs);
  const onAbort = () => settle.reject(opts.signal!.reason);
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  const close = () => {
    clearTimeout(timer);
    opts.signal?.removeEventListener('abort', onAbort);
    server.closeAllConnections();
    server.close();
  };
  code.then(close, close);
  return { redirectUri: `http://127.0.0.1:${port}${CALLBACK_PATH}`, code, close };
}
