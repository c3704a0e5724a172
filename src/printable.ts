// Text that came from a server, a user or a file is shown with its unsafe characters escaped, so that it
// cannot move the cursor, retitle the terminal, clear the screen, reorder what follows it (bidi
// overrides), hide in plain sight (zero-width characters) or start a fake second line.

// C0, DEL, C1, zero-width and bidi formatting characters, line/paragraph separators, BOM, and (with
// the u flag, which pairs surrogates) lone surrogates.
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]|[\ud800-\udfff]/gu;
const UNSAFE_QUOTED = /[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff"\\]|[\ud800-\udfff]/gu;
const NAMED: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t', '"': '\\"', '\\': '\\\\' };

export interface PrintableOptions {
  /** Longer text is cut after this many characters, with `…`. Default: never cut. */
  maxChars?: number;
  /** Also escape `"` and `\`, for text shown inside double quotes. Default false. */
  quoted?: boolean;
}

/**
 * The one escaper for text shown on a terminal: unsafe characters become escapes (`\n`, `\x1b`,
 * `\u202e`); letters, emoji and other printable text are kept as they are.
 */
export function printable(text: string, opts: PrintableOptions = {}): string {
  const { maxChars = Infinity, quoted = false } = opts;
  let shown = text;
  let cut = false;
  if (text.length > maxChars) {
    const chars = Array.from(text);
    cut = chars.length > maxChars;
    if (cut) shown = chars.slice(0, maxChars).join('');
  }
  shown = shown.replace(quoted ? UNSAFE_QUOTED : UNSAFE, escape);
  return cut ? `${shown}…` : shown;
}

function escape(c: string): string {
  const named = NAMED[c];
  if (named !== undefined) return named;
  const code = c.codePointAt(0)!;
  return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
}
