import { resolve } from 'node:path';
import { Flags } from '@oclif/core';
import { MxsCommand } from '../base-command.js';
import { parseDuration } from '../duration.js';
import { parseListen, type ListenSpec } from '../proxy/listen.js';
import { RecentSecrets, requestLine, startLines, type ProxyTokenSource } from '../proxy/present.js';
import { checkProxyToken, newProxyToken, runProxy } from '../services/proxy.js';

export default class Proxy extends MxsCommand {
  static override summary = 'Run a local proxy that lets unmodified clients and bots use the session.';
  static override description = [
    'Give the client the printed URL as its homeserver and the printed proxy token as its access token. Each request carrying the proxy token goes to the homeserver with the session\'s current access token instead, refreshed ahead of expiry under the profile\'s lock (so mxs token and the proxy never race); a request the homeserver refuses with M_UNKNOWN_TOKEN is refreshed for and replayed once. Requests without a token are forwarded without one; any other token is answered 401 and never forwarded. Login, logout, refresh and OAuth endpoints (and the Synapse admin API\'s login as another user) are answered 403: the proxy owns the session. A request whose Host header names anything but the address the proxy listens on (or localhost with its port) is answered 421 and not forwarded, against DNS rebinding; on a --socket any Host is answered.',
    'MXS_PROXY_TOKEN sets the proxy token instead of a random one. One line per request goes to stderr (--quiet drops them). SIGINT or SIGTERM stops accepting, lets in-flight requests finish within --drain and exits 0; when the session can no longer be refreshed, requests get 401 and mxs exits 4.',
  ].join('\n\n');
  static override examples = [
    '<%= config.bin %> proxy',
    '<%= config.bin %> proxy --listen 127.0.0.1:8008 --token-file ~/.config/bot/token',
    'MXS_PROXY_TOKEN=$(cat /run/secrets/bot-token) <%= config.bin %> proxy --socket /run/mxs/proxy.sock --quiet',
    '<%= config.bin %> proxy --json    # {"profile":…,"url":…,"userId":…,"deviceId":…,"tokenFile":null} on stdout',
  ];
  static override flags = {
    listen: Flags.string({ default: '127.0.0.1:0', summary: 'HOST:PORT to listen on (port 0: a free one); loopback only unless --insecure.', exclusive: ['socket'] }),
    socket: Flags.string({ summary: 'Listen on a Unix socket at this path instead (mode 0600, removed at exit).', exclusive: ['listen'] }),
    insecure: Flags.boolean({ summary: 'Allow --listen on a non-loopback address.' }),
    'token-file': Flags.string({ summary: 'Also write the proxy token to this file (mode 0600; removed at exit).' }),
    drain: Flags.string({ default: '10s', summary: 'How long in-flight requests may take to finish after SIGINT/SIGTERM.' }),
    quiet: Flags.boolean({ char: 'q', summary: 'No line per request on stderr.' }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Proxy);
    const listen: ListenSpec = flags.socket !== undefined ? { kind: 'socket', path: resolve(flags.socket) } : parseListen(flags.listen, flags.insecure);
    const drainMs = parseDuration(flags.drain, '--drain');
    const fromEnv = process.env.MXS_PROXY_TOKEN;
    const proxyToken = fromEnv !== undefined ? checkProxyToken(fromEnv) : newProxyToken();
    const ctx = this.setup(flags);
    // A proxy runs for days: it hides its own token and the session's last few, not every token it ever saw.
    const secrets = new RecentSecrets();
    const deps = { ...ctx.deps, rememberSecret: (...values: (string | null | undefined)[]) => secrets.add(...values) };
    const shown: ProxyTokenSource = fromEnv !== undefined ? { kind: 'env' } : { kind: 'shown', token: proxyToken };
    const json = this.jsonEnabled();
    await runProxy(
      { profile: ctx.profile, listen, proxyToken, tokenFile: flags['token-file'] === undefined ? null : resolve(flags['token-file']), drainMs },
      deps,
      {
        onStart: (info) => {
          // Printed before the proxy token joins the redacted secrets: this is where the user gets it.
          for (const line of startLines(info, shown, drainMs)) this.out.info(line);
          if (json) this.out.data(JSON.stringify({ profile: info.profile, url: info.url, userId: info.userId, deviceId: info.deviceId, tokenFile: info.tokenFile }));
          secrets.pin(proxyToken);
        },
        onRequest: flags.quiet ? undefined : (entry) => this.out.info(secrets.redact(requestLine(entry))),
        notice: (message) => this.out.notice(secrets.redact(message)),
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
  }

  override logJson(): void {
    // The start line was printed when the proxy started listening.
  }
}
