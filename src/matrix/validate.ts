import { badResponse } from '../errors.js';

// Every server answer is checked before mxs stores or uses anything from it.

/** The longest lifetime mxs believes: a larger expires_in_ms is a broken server, not a token. */
const MAX_LIFETIME_MS = 366 * 24 * 3600 * 1000;
const TOKEN_CHARS = /^[\x21-\x7e]+$/;

type Json = Record<string, unknown>;

export function requireString(body: Json, key: string, what: string): string {
  const v = body[key];
  if (typeof v !== 'string' || v === '') throw badResponse(`The server's ${what} response has no valid "${key}".`);
  return v;
}

export function optionalString(body: Json, key: string, what: string): string | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string' || v === '') throw badResponse(`The server's ${what} response has an invalid "${key}".`);
  return v;
}

export function requireToken(body: Json, key: string, what: string): string {
  const v = requireString(body, key, what);
  if (!TOKEN_CHARS.test(v) || v.length > 4096) throw badResponse(`The server's ${what} response has a malformed "${key}".`);
  return v;
}

export function optionalToken(body: Json, key: string, what: string): string | undefined {
  return body[key] === undefined || body[key] === null ? undefined : requireToken(body, key, what);
}

/** `expires_in_ms`: absent means the token does not expire; otherwise a positive whole number of ms. */
export function optionalLifetimeMs(body: Json, key: string, what: string, scale = 1): number | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0 || v * scale > MAX_LIFETIME_MS) {
    throw badResponse(`The server's ${what} response has an invalid "${key}" (${JSON.stringify(v)?.slice(0, 40)}).`);
  }
  return v * scale;
}

export function optionalBoolean(body: Json, key: string, what: string): boolean | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw badResponse(`The server's ${what} response has an invalid "${key}".`);
  return v;
}
