import type { InspectReport, TokenReport } from '../services/inspect.js';
import { printable } from '../printable.js';
import type { Colors } from './output.js';

const SOURCE: Record<TokenReport['source'], string> = {
  stdin: 'standard input',
  access: 'stored access token',
  refresh: 'stored refresh token',
};

const KIND: Record<TokenReport['kind'], string> = {
  synapse_access: 'Synapse access token',
  synapse_refresh: 'Synapse refresh token',
  mas_access: 'Matrix Authentication Service OAuth access token',
  mas_refresh: 'Matrix Authentication Service OAuth refresh token',
  mas_compat_access: 'Matrix Authentication Service compatibility access token',
  mas_compat_refresh: 'Matrix Authentication Service compatibility refresh token',
  mas_personal: 'Matrix Authentication Service personal access token',
  mxs_proxy: 'mxs proxy token',
  unknown: 'unknown (not a format mxs knows: an opaque OAuth token, a JWT, a macaroon…)',
};

/** One block per token; the token itself is never part of it. */
export function inspectLines(report: InspectReport, c: Colors): string[] {
  return report.tokens.flatMap((t, i) => [
    ...(i > 0 ? [''] : []),
    `Token:       ${SOURCE[t.source]}`,
    `Kind:        ${KIND[t.kind]} (${t.kind})`,
    `Server:      ${t.server ?? 'unknown'}`,
    `Localpart:   ${t.localpart !== null ? printable(t.localpart) : t.server === 'synapse' ? c.red('unreadable (the token is malformed)') : 'not in this format'}`,
    `Checksum:    ${t.checksumValid === null ? 'none in this format' : t.checksumValid ? c.green('ok') : c.red('bad (mistyped, cut short or altered)')}`,
    `Fingerprint: ${t.fingerprint} (first 12 hex digits of its SHA-256)`,
    ...(t.valid === undefined ? [] : [`Owner:       ${owner(t, report.asked, c)}`]),
  ]);
}

function owner(t: TokenReport, asked: string | null, c: Colors): string {
  const where = printable(asked ?? 'the homeserver');
  if (t.valid === null) return `not asked (${t.kind === 'mxs_proxy' ? 'a proxy token never goes to a homeserver' : 'a refresh token is only checked by using it'})`;
  if (!t.valid) return c.red(`not valid at ${where} (unknown, expired or revoked)`);
  return `${printable(t.userId ?? '?')}${t.deviceId ? ` (device ${printable(t.deviceId)})` : ''} at ${where}`;
}
