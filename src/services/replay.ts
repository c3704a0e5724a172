// The one 401 → refresh → replay path (contract, Promises): a request the homeserver answers with 401
// M_UNKNOWN_TOKEN while a refresh token is stored is refreshed for once and sent once more. Used by
// every command that sends the token (withAccessToken, so `api` too) and by the proxy (through the
// session keeper).

import { errcodeOf } from '../matrix/http.js';

/** Where the credential a request is sent with comes from: a command's one-shot session, or the session keeper. */
export interface TokenSource<C> {
  /** The credential to send now (refreshed first when the source's rule says it is due). */
  current(): Promise<C>;
  /**
   * The server refused `refused`: the credential to replay with, after at most one refresh (none
   * when another request or process already replaced it); null when there is none to get (no
   * refresh token stored).
   */
  afterRejection(refused: C): Promise<C | null>;
}

/** One send's answer, and whether it is the server refusing the token. */
export interface Sent<T> {
  answer: T;
  refused: boolean;
}

export interface Replayed<T, C> {
  /** The last answer: the replay's when there was one (refused again or not, it is final). */
  answer: T;
  /** The credential that answer was sent with. */
  credential: C;
  refused: boolean;
  replayed: boolean;
}

/**
 * Sends with the source's current credential; a refusal gets one refreshed credential and one replay.
 * A request that cannot be sent again (its body streamed away) hands the refusal on, the refresh done
 * first so that the caller's own retry finds a fresh token.
 */
export async function sendWithReplay<C, T>(source: TokenSource<C>, send: (credential: C) => Promise<Sent<T>>, replayable = true): Promise<Replayed<T, C>> {
  const first = await source.current();
  const sent = await send(first);
  if (!sent.refused) return { answer: sent.answer, credential: first, refused: false, replayed: false };
  if (!replayable) {
    await source.afterRejection(first).catch(() => null);
    return { answer: sent.answer, credential: first, refused: true, replayed: false };
  }
  const again = await source.afterRejection(first);
  if (again === null) return { answer: sent.answer, credential: first, refused: true, replayed: false };
  const second = await send(again);
  return { answer: second.answer, credential: again, refused: second.refused, replayed: true };
}

/** Matrix servers say an access token died with 401 M_UNKNOWN_TOKEN (MAS: "Token is not active"). */
export function isTokenRefusal(status: number | undefined, errcode: string | undefined): boolean {
  return status === 401 && errcode === 'M_UNKNOWN_TOKEN';
}

/** The same, read from an error answer's body (a Matrix error is `{errcode, error}` JSON). */
export function refusesToken(status: number, body: string | Buffer): boolean {
  return isTokenRefusal(status, errcodeOf(body));
}
