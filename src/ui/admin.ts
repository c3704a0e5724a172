import type { AdminSession, AdminToken } from '../services/admin/backend.js';
import type { AdminEndedResult, AdminSessionsResult, AdminTokenResult, AdminTokensResult } from '../services/admin/admin.js';
import { printable } from '../printable.js';
import { promptText, type PromptOptions } from './input.js';
import type { Output } from './output.js';

// How `mxs admin` shows sessions and tokens. User agents, client and device names come from other
// people's clients: every one is escaped, and cut to a line's worth.

const shown = (v: string | null, max = 60) => (v === null || v === '' ? '-' : printable(v, { maxChars: max }));

function sessionLines(s: AdminSession): string[] {
  const lines = [`${s.kind.padEnd(8)} ${printable(s.id)}  device ${shown(s.deviceId, 40)}  client ${shown(s.client)}`];
  lines.push(`         created ${shown(s.createdAt)}  last active ${shown(s.lastActiveAt)} from ${shown(s.lastActiveIp, 45)}`);
  if (s.userAgent !== null) lines.push(`         ${shown(s.userAgent, 120)}`);
  if (s.finishedAt !== null) lines.push(`         finished ${shown(s.finishedAt)}`);
  return lines;
}

export function sessionsText(r: AdminSessionsResult): string {
  if (r.sessions.length === 0) return `${printable(r.user)} has no sessions.`;
  return [`Sessions of ${printable(r.user)} (${r.sessions.length}):`, ...r.sessions.flatMap(sessionLines)].join('\n');
}

export function endedLine(r: AdminEndedResult): string {
  return r.ended.length === 0 ? 'No sessions to end.' : `Ended ${r.ended.length} session${r.ended.length === 1 ? '' : 's'}: ${r.ended.map((id) => printable(id)).join(', ')}.`;
}

function tokenLine(t: AdminToken): string {
  const state = t.revokedAt !== null ? `revoked ${t.revokedAt}` : t.expiresAt === null ? 'never expires' : `expires ${t.expiresAt}`;
  return `${printable(t.id)}  ${shown(t.name)}  created ${shown(t.createdAt)}  last active ${shown(t.lastActiveAt)}  ${state}`;
}

export function tokensText(r: AdminTokensResult): string {
  if (r.tokens.length === 0) return `${printable(r.user)} has no personal access tokens.`;
  return [`Personal access tokens of ${printable(r.user)} (${r.tokens.length}):`, ...r.tokens.map(tokenLine)].join('\n');
}

/** stderr beside a new token on stdout: which session it is and when it ends. */
export function createdLine(r: AdminTokenResult): string {
  return `Token for ${printable(r.userId)}: session ${printable(r.id)}, ${r.expiresAt === null ? 'never expires' : `expires ${r.expiresAt}`}.`;
}

/** Lists the sessions and asks on the terminal. */
export async function confirmEnd(out: Output, sessions: AdminSession[], opts: PromptOptions): Promise<boolean> {
  out.info(`About to end ${sessions.length === 1 ? 'this session' : `these ${sessions.length} sessions`}:`);
  for (const s of sessions) for (const line of sessionLines(s)) out.info(`  ${line}`);
  const answer = await promptText(`End ${sessions.length === 1 ? 'it' : 'them'}? (y/N)`, { ...opts, required: false });
  return /^y(es)?$/i.test(answer.trim());
}
