import { connect, isIP, type Server } from 'node:net';
import { chmod, lstat, unlink } from 'node:fs/promises';
import { MxsError, usageError } from '../errors.js';
import { isLoopbackHost } from '../http/loopback.js';
import { printable } from '../printable.js';

// Where the proxy listens: a loopback address (any other only when the user insists) or a Unix socket
// that only its owner can connect to.

export type ListenSpec = { kind: 'tcp'; host: string; port: number } | { kind: 'socket'; path: string };

/** `HOST:PORT`, `[IPv6]:PORT`; `localhost` means 127.0.0.1 (so the URL given to clients names what is bound). */
export function parseListen(value: string, insecure: boolean): ListenSpec {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(value.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw usageError(`--listen takes HOST:PORT, got "${printable(value)}".`, 'For example: --listen 127.0.0.1:8008 (port 0 picks a free one).');
  let host = (m[1] ?? m[2]!).toLowerCase();
  if (host === 'localhost') host = '127.0.0.1';
  if (m[1] !== undefined && isIP(host) !== 6) throw usageError(`--listen: "${printable(host)}" is not an IPv6 address.`, 'For example: --listen [::1]:8008');
  if (!insecure && !isLoopbackHost(host)) {
    throw usageError(
      `Refusing to listen on ${printable(host)}: it is not a loopback address, and anyone who can reach the proxy and learns its token can use the session.`,
      'Listen on 127.0.0.1 (the default) or a --socket; to expose it on purpose, add --insecure (and put TLS in front).',
    );
  }
  return { kind: 'tcp', host, port };
}

export function urlOf(spec: ListenSpec, port: number): string {
  if (spec.kind === 'socket') return `http+unix://${encodeURIComponent(spec.path)}`;
  return `http://${isIP(spec.host) === 6 ? `[${spec.host}]` : spec.host}:${port}`;
}

/**
 * Listens; for a socket, created 0600 from the start (umask around bind) so no other user can connect
 * even for a moment. A stale socket (nobody answers on it) is replaced; anything else at the path is
 * refused. Resolves with the port (0 for a socket).
 */
export async function listenOn(server: Server, spec: ListenSpec): Promise<number> {
  if (spec.kind === 'tcp') {
    await bind(server, () => server.listen(spec.port, spec.host), `${spec.host}:${spec.port}`);
    const address = server.address();
    return typeof address === 'object' && address ? address.port : spec.port;
  }
  await clearStaleSocket(spec.path);
  const old = process.umask(0o177);
  try {
    await bind(server, () => server.listen(spec.path), spec.path);
  } finally {
    process.umask(old);
  }
  await chmod(spec.path, 0o600);
  return 0;
}

function bind(server: Server, start: () => void, where: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      server.off('listening', onListening);
      reject(listenError(err, where));
    };
    const onListening = () => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    start();
  });
}

function listenError(err: NodeJS.ErrnoException, where: string): MxsError {
  const shown = printable(where);
  switch (err.code) {
    case 'EADDRINUSE':
      return usageError(`Cannot listen on ${shown}: it is in use.`, 'Choose another --listen port (0 picks a free one) or --socket path.');
    case 'EACCES':
    case 'EPERM':
      return usageError(`Cannot listen on ${shown}: permission denied (${err.code}).`, 'Use a port above 1023, or a --socket path in a directory you can write.');
    case 'EADDRNOTAVAIL':
      return usageError(`Cannot listen on ${shown}: no such address on this machine.`, 'Use 127.0.0.1 or an address of this machine.');
    case 'ENOENT':
    case 'ENOTDIR':
      return usageError(`Cannot create the socket ${shown}: its directory does not exist.`, 'Create the directory first, or choose another --socket path.');
    default:
      return usageError(`Cannot listen on ${shown}: ${err.message}.`, 'Choose another --listen address or --socket path.');
  }
}

async function clearStaleSocket(path: string): Promise<void> {
  const st = await lstat(path).catch(() => null);
  if (!st) return;
  if (!st.isSocket()) throw usageError(`--socket ${printable(path)} exists and is not a socket.`, 'Remove it, or choose another path.');
  const alive = await new Promise<boolean>((resolve) => {
    const s = connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
  if (alive) throw usageError(`--socket ${printable(path)} is in use by another process.`, 'Stop the other proxy, or choose another path.');
  await unlink(path).catch(() => {});
}

/** Removes the socket at exit (only if it is still a socket: never someone else's file). */
export async function removeSocket(path: string): Promise<void> {
  const st = await lstat(path).catch(() => null);
  if (st?.isSocket()) await unlink(path).catch(() => {});
}
