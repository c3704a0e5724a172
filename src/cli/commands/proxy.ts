import { resolve } from 'node:path';
import { parseDuration } from '../../duration.js';
import { usageError } from '../../errors.js';
import { printable } from '../../printable.js';
import { parseListen, type ListenSpec } from '../../proxy/listen.js';
import { RecentSecrets, requestLine, startLines, type ProxyTokenSource } from '../../proxy/present.js';
import { checkProxyToken, newProxyToken, runProxy } from '../../proxy/run.js';
import type { CommandDefinition } from '../command.js';

interface ProxyFlags {
  listen: string;
  socket?: string;
  insecure: boolean;
  'token-file'?: string;
  drain: string;
  quiet: boolean;
}

export const proxyCommand: CommandDefinition<ProxyFlags, object, undefined> = {
  id: 'proxy',
  // SIGINT stops accepting and drains in-flight requests.
  sigint: 'own',
  summary: 'Run a local proxy that lets unmodified clients and bots use the session.',
  description: [
    "Give the client the printed URL as its homeserver and the printed proxy token as its access token. Each request carrying the proxy token goes to the homeserver with the session's current access token instead, refreshed ahead of expiry under the profile's lock (so mxs token and the proxy never race); a request the homeserver refuses with M_UNKNOWN_TOKEN is refreshed for and replayed once. Requests without a token are forwarded without one; any other token is answered 401 and never forwarded. Login, logout, refresh and OAuth endpoints (and the Synapse admin API\'s login as another user) are answered 403: the proxy owns the session. A request whose Host header names anything but the address the proxy listens on (or localhost with its port) is answered 421 and not forwarded, against DNS rebinding; on a --socket any Host is answered.",
    'MXS_PROXY_TOKEN sets the proxy token instead of a random one. One line per request goes to stderr (--quiet drops them). SIGINT or SIGTERM stops accepting, lets in-flight requests finish within --drain and exits 0; when the session can no longer be refreshed, requests get 401 and mxs exits 4.',
  ].join('\n\n'),
  examples: [
    '<%= config.bin %> proxy',
    '<%= config.bin %> proxy --listen 127.0.0.1:8008 --token-file ~/.config/bot/token',
    'MXS_PROXY_TOKEN=$(cat /run/secrets/bot-token) <%= config.bin %> proxy --socket /run/mxs/proxy.sock --quiet',
    '<%= config.bin %> proxy --json    # {"profile":…,"url":…,"userId":…,"deviceId":…,"tokenFile":null} on stdout',
  ],
  flags: {
    listen: { type: 'option', default: '127.0.0.1:0', summary: 'HOST:PORT to listen on (port 0: a free one); loopback only unless --insecure.', exclusive: ['socket'] },
    socket: { type: 'option', summary: 'Listen on a Unix socket at this path instead (mode 0600, removed at exit).', exclusive: ['listen'] },
    insecure: { type: 'boolean', summary: 'Allow --listen on a non-loopback address.' },
    'token-file': { type: 'option', summary: 'Also write the proxy token to this file (mode 0600; removed at exit).' },
    drain: { type: 'option', default: '10s', summary: 'How long in-flight requests may take to finish after SIGINT/SIGTERM.' },
    quiet: { type: 'boolean', char: 'q', summary: 'No line per request on stderr.' },
  },
  // The start line goes to stdout when the proxy listens, long before it ends.
  json: 'streamed',
  async run(ctx, { flags, json }) {
    const { out, env } = ctx;
    const listen: ListenSpec = flags.socket !== undefined ? { kind: 'socket', path: resolve(flags.socket) } : parseListen(flags.listen, flags.insecure);
    const tokenFile = flags['token-file'] === undefined ? null : resolve(expandedPath(flags['token-file'], '--token-file'));
    const drainMs = parseDuration(flags.drain, '--drain');
    const fromEnv = env.MXS_PROXY_TOKEN;
    const proxyToken = fromEnv !== undefined ? checkProxyToken(fromEnv) : newProxyToken();
    // A proxy runs for days: it hides its own token and the session's last few, not every token it ever saw.
    const secrets = new RecentSecrets();
    const deps = { ...ctx.deps, rememberSecret: (...values: (string | null | undefined)[]) => secrets.add(...values) };
    const shown: ProxyTokenSource = fromEnv !== undefined ? { kind: 'env' } : { kind: 'shown', token: proxyToken };
    await runProxy(
      { profile: ctx.profile, listen, proxyToken, tokenFile, drainMs },
      deps,
      {
        onStart: (info) => {
          // Printed before the proxy token joins the redacted secrets: this is where the user gets it.
          for (const line of startLines(info, shown, drainMs)) out.info(line);
          if (json) out.data(JSON.stringify({ profile: info.profile, url: info.url, userId: info.userId, deviceId: info.deviceId, tokenFile: info.tokenFile }));
          secrets.pin(proxyToken);
        },
        onRequest: flags.quiet ? undefined : (entry) => out.info(secrets.redact(requestLine(entry))),
        notice: (message) => out.notice(secrets.redact(message)),
        onStopSignal: (stop) => {
          const onSignal = (signal: NodeJS.Signals) => stop(signal);
          process.on('SIGINT', onSignal);
          process.on('SIGTERM', onSignal);
          return () => {
            process.off('SIGINT', onSignal);
            process.off('SIGTERM', onSignal);
          };
        },
      },
    );
    return { result: undefined, exitCode: 0 };
  },
};

/** A path whose `~` the shell left alone (quoted, or after `=`) would make a directory named `~` here. */
function expandedPath(path: string, flag: string): string {
  if (path !== '~' && !path.startsWith('~/')) return path;
  throw usageError(`${flag} ${printable(path)}: the shell did not expand ~ (it does not in quotes or after =).`, `Write it as ${flag} "$HOME/${printable(path.slice(2))}", or ${flag} ~/… unquoted.`);
}
