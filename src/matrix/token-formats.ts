import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';

// What a token says about itself, read the way the servers that issue them write them. Pure: no I/O.
//
// Synapse (synapse/handlers/auth.py, generate_access_token / generate_refresh_token):
//   syt_<localpart, standard base64 unpadded>_<20 random letters>_<CRC>  (syr_ for refresh tokens)
//   CRC = CRC-32 of "syt_<b64>_<random>", base62 (0-9A-Za-z) most significant digit first, padded
//   on the left with 0 to 6 characters (synapse/util/stringutils.py, base62_encode(minwidth=6)).
// Matrix Authentication Service (crates/data-model/src/tokens.rs, TokenType::generate / check):
//   <prefix>_<30 alphanumerics>_<CRC>, prefixes mat (OAuth access), mar (OAuth refresh), mct / mcr
//   (compatibility access / refresh), mpt (personal access token);
//   CRC = CRC-32/ISO-HDLC (zlib's) of "<prefix>_<random>", base62 with the same alphabet but the
//   digits written least significant first, then padded on the left with 0 to 6 characters. The two
//   servers' checksums are thus not interchangeable: each format is checked its own server's way.
// mxs's own proxy token (src/proxy/run.ts): mxp_<32 random bytes, base64url> — no checksum.

export type TokenKind =
  | 'synapse_access'
  | 'synapse_refresh'
  | 'mas_access'
  | 'mas_refresh'
  | 'mas_compat_access'
  | 'mas_compat_refresh'
  | 'mas_personal'
  | 'mxs_proxy'
  | 'unknown';

export type TokenServer = 'synapse' | 'mas' | 'mxs';

export interface TokenFormat {
  kind: TokenKind;
  server: TokenServer | null;
  /** The user's localpart, where the format carries one (Synapse's); null otherwise or when it does not decode. */
  localpart: string | null;
  /** Whether the built-in checksum holds; null for formats without one. A token cut short or reshaped fails it. */
  checksumValid: boolean | null;
}

/** Whether a kind is a refresh token: one that can only be checked by using it (and thereby rotating it). */
export function isRefreshKind(kind: TokenKind): boolean {
  return kind === 'synapse_refresh' || kind === 'mas_refresh' || kind === 'mas_compat_refresh';
}

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/** Base62 digits of n, most significant first (Synapse's order). */
function base62(n: number): string {
  let out = '';
  for (let rest = n; rest > 0; rest = Math.floor(rest / 62)) out = BASE62[rest % 62] + out;
  return out;
}

/** Synapse's checksum of `base`: base62, most significant digit first, left-padded to 6. */
export function synapseChecksum(base: string): string {
  return base62(crc32(base) >>> 0).padStart(6, '0');
}

/** The Matrix Authentication Service's checksum of `base`: base62 least significant digit first, left-padded to 6. */
export function masChecksum(base: string): string {
  return [...base62(crc32(base) >>> 0)].reverse().join('').padStart(6, '0');
}

const SYNAPSE: Record<string, TokenKind> = { syt: 'synapse_access', syr: 'synapse_refresh' };
const MAS: Record<string, TokenKind> = {
  mat: 'mas_access',
  mar: 'mas_refresh',
  mct: 'mas_compat_access',
  mcr: 'mas_compat_refresh',
  mpt: 'mas_personal',
};
const PROXY = /^mxp_[A-Za-z0-9_-]{43}$/;

export function tokenFormat(token: string): TokenFormat {
  const prefix = token.slice(0, token.indexOf('_'));
  const synapseKind = Object.hasOwn(SYNAPSE, prefix) ? SYNAPSE[prefix] : undefined;
  if (synapseKind) return { kind: synapseKind, server: 'synapse', ...synapseParts(token) };
  const masKind = Object.hasOwn(MAS, prefix) ? MAS[prefix] : undefined;
  if (masKind) return { kind: masKind, server: 'mas', localpart: null, checksumValid: masValid(token) };
  if (PROXY.test(token)) return { kind: 'mxs_proxy', server: 'mxs', localpart: null, checksumValid: null };
  return { kind: 'unknown', server: null, localpart: null, checksumValid: null };
}

function synapseParts(token: string): Pick<TokenFormat, 'localpart' | 'checksumValid'> {
  const parts = token.split('_');
  const [, b64, random, crc] = parts;
  const localpart = b64 === undefined ? null : decodeLocalpart(b64);
  if (parts.length !== 4 || !random || crc?.length !== 6) return { localpart, checksumValid: false };
  return { localpart, checksumValid: synapseChecksum(`${parts[0]}_${b64}_${random}`) === crc };
}

/** Standard unpadded base64 of UTF-8; null when it is not exactly that. */
function decodeLocalpart(b64: string): string | null {
  if (b64 === '' || !/^[A-Za-z0-9+/]+$/.test(b64) || b64.length % 4 === 1) return null;
  const bytes = Buffer.from(b64, 'base64');
  // Only the canonical spelling: Buffer ignores stray bits that a re-encoding would not reproduce.
  if (bytes.toString('base64').replace(/=+$/, '') !== b64) return null;
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return null;
  }
}

function masValid(token: string): boolean {
  const parts = token.split('_');
  if (parts.length !== 3) return false;
  const [prefix, random, crc] = parts as [string, string, string];
  return random.length === 30 && /^[A-Za-z0-9]+$/.test(random) && crc.length === 6 && masChecksum(`${prefix}_${random}`) === crc;
}

/** The first 12 hex digits of the token's SHA-256: tokens compared across logs without being shown. */
export function tokenFingerprint(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex').slice(0, 12);
}
