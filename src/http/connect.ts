import type { Dispatcher } from 'undici';
import type { HttpDeps } from './transport.js';
import type { UndiciCore } from './undici.js';

// Making connections for the transport: the agents (one per --timeout), the handshake's own bound,
// the phase each connection is in (for the notice a long wait shows), and the look at what listens
// behind an https:// URL that failed.

/** The TCP connection and TLS handshake get this long on their own (or --timeout, when shorter): a port that does not speak TLS hangs there. */
export const HANDSHAKE_TIMEOUT_MS = 5000;
const WAITING_NOTICE_MS = 1500;

const agents = new Map<number, Dispatcher>();

/** Where each origin's connection stands while it is being made (for the waiting notice). */
const connecting = new Map<string, 'connecting' | 'TLS handshake'>();

/**
 * One agent per timeout: undici's own connect timeout (10 s) must not outlast --timeout, and the
 * handshake gets at most HANDSHAKE_TIMEOUT_MS of it. Its connector notes each connection's phase.
 */
export function defaultDispatcher(undici: UndiciCore, timeoutMs: number): Dispatcher {
  let agent = agents.get(timeoutMs);
  if (!agent) {
    const connect = undici.buildConnector({ timeout: Math.min(timeoutMs, HANDSHAKE_TIMEOUT_MS) });
    const tracked: typeof connect = (opts, callback) => {
      const origin = `${opts.protocol}//${opts.host}`;
      connecting.set(origin, 'connecting');
      const socket = connect(opts, (err, s) => {
        connecting.delete(origin);
        callback(err, s as never);
      }) as unknown as import('node:net').Socket | undefined;
      if (opts.protocol === 'https:') socket?.once?.('connect', () => connecting.has(origin) && connecting.set(origin, 'TLS handshake'));
      return socket as never;
    };
    agents.set(timeoutMs, (agent = new undici.Agent({ connect: tracked })));
  }
  return agent;
}

/** `Waiting for https://host/ (TLS handshake)…` once an exchange has waited a while (deps.onWaiting). */
export function waitingNotice(deps: Pick<HttpDeps, 'onWaiting'>, url: string): () => void {
  if (!deps.onWaiting) return () => {};
  const { origin } = new URL(url);
  let clear: (() => void) | undefined;
  const timer = setTimeout(() => (clear = deps.onWaiting!(`Waiting for ${origin}/ (${connecting.get(origin) ?? 'the answer'})…`)), WAITING_NOTICE_MS);
  return () => {
    clearTimeout(timer);
    clear?.();
  };
}


/**
 * What listens behind an https:// URL that failed: a plain HTTP server (`http`: TLS cannot work
 * there), something that takes the connection and stays silent (`open`), or nothing (`closed`).
 */
export async function probePort(url: string, timeoutMs: number): Promise<'http' | 'open' | 'closed'> {
  const { connect } = await import('node:net');
  const u = new URL(url);
  return new Promise((resolve) => {
    const socket = connect({ host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port || 443) });
    let answer = '';
    let connected = false;
    const done = (result: 'http' | 'open' | 'closed') => {
      socket.destroy();
      resolve(result);
    };
    const verdict = () => (answer.startsWith('HTTP/') ? 'http' : connected ? 'open' : 'closed');
    socket.setTimeout(timeoutMs, () => done(verdict()));
    socket.on('error', () => done(verdict()));
    socket.on('connect', () => {
      connected = true;
      socket.write(`HEAD / HTTP/1.0\r\nHost: ${u.host}\r\n\r\n`);
    });
    socket.on('data', (d) => {
      answer += d.toString('latin1');
      if (answer.length >= 5) done(verdict());
    });
    socket.on('end', () => done(verdict()));
  });
}
