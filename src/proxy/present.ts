import { Redactor } from '../redact.js';
import { printable } from '../printable.js';
import type { ProxyStartInfo } from './run.js';
import type { RequestLogEntry } from './server.js';

// What the proxy says on stderr: the start lines and one line per request.

/** `2030-01-01T12:00:00.000Z GET /_matrix/client/v3/sync 200 31ms` (no query string: it may carry a token). */
export function requestLine(e: RequestLogEntry): string {
  return `${new Date(e.at).toISOString()} ${printable(e.method)} ${printable(e.path)} ${e.status === 0 ? '-' : e.status} ${e.ms}ms`;
}

export type ProxyTokenSource = { kind: 'shown'; token: string } | { kind: 'env' };

export function startLines(info: ProxyStartInfo & { homeserver: string }, token: ProxyTokenSource, drainMs: number): string[] {
  const lines = [
    `mxs proxy: ${info.userId === null ? 'client credentials' : `${printable(info.userId)} (device ${printable(info.deviceId ?? '?')})`} on ${printable(info.homeserver)}`,
    `  homeserver URL for clients: ${info.url}`,
    token.kind === 'shown' ? `  access token for clients:   ${token.token}` : '  access token for clients:   the one in MXS_PROXY_TOKEN',
  ];
  if (info.tokenFile !== null) lines.push(`  (also written to ${printable(info.tokenFile)})`);
  if (info.url.startsWith('http+unix:')) {
    // Runs as printed where the token can be named: the environment, the token file; else $TOKEN stands for the token above.
    const path = shellWord(decodeURIComponent(info.url.slice('http+unix://'.length)));
    const bearer = token.kind === 'env' ? '$MXS_PROXY_TOKEN' : info.tokenFile !== null ? `$(cat ${shellWord(info.tokenFile)})` : '$TOKEN';
    lines.push(`  e.g.: curl --unix-socket ${path} -H "Authorization: Bearer ${bearer}" http://localhost/_matrix/client/v3/account/whoami`);
  }
  lines.push(`Ctrl-C or SIGTERM stops it (in-flight requests get up to ${Math.round(drainMs / 100) / 10}s).`);
  return lines;
}

/** A word a POSIX shell reads back as `s`: as is when it is plain, else in single quotes. */
function shellWord(s: string): string {
  return /^[A-Za-z0-9_/.,:@%+=-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * The secrets a long-running proxy may have to hide: the last few tokens only. The Output's redactor
 * keeps every value it was ever given, which over days of refreshes would grow without bound and
 * slow down every log line.
 */
export class RecentSecrets {
  private readonly values: string[] = [];
  private readonly pinned: string[] = [];
  private redactor = new Redactor();

  constructor(private readonly keep = 16) {}

  /** A secret hidden for as long as the proxy runs (its own token). */
  pin(value: string): void {
    this.pinned.push(value);
    this.rebuild();
  }

  add(...values: (string | null | undefined)[]): void {
    let changed = false;
    for (const v of values) {
      if (!v || v.length < 4 || this.values.includes(v)) continue;
      this.values.push(v);
      changed = true;
    }
    if (!changed) return;
    this.values.splice(0, Math.max(0, this.values.length - this.keep));
    this.rebuild();
  }

  private rebuild(): void {
    this.redactor = new Redactor();
    this.redactor.add(...this.pinned, ...this.values);
  }

  redact(text: string): string {
    return this.redactor.redact(text);
  }
}
