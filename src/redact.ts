// Secrets never reach output, logs or errors: everything printed passes through here.

// `;` separates parameters too: Synapse (Twisted) splits queries on it.
const SECRET_PARAMS = /([?&;](?:access_token|refresh_token|login_token|token|password|code|code_verifier|device_code)=)[^&;#]*/gi;
const TOKEN_SHAPES = /\b(sy[tr]_[A-Za-z0-9_]+|mat_[A-Za-z0-9_]+|mar_[A-Za-z0-9_]+)/g;
// The whole credential after `Bearer`, up to a space or a quote (the quote closes the header it stands in):
// it starts with a token character (RFC 6750 b64token), so a shell reference (`$TOKEN`) is not one.
const BEARER = /(Bearer\s+)[A-Za-z0-9\-._~+/][^\s"'`]*/gi;
export const REDACTED = '[REDACTED]';

export function redactUrl(url: string): string {
  return url.replace(SECRET_PARAMS, `$1${REDACTED}`);
}

/** Masks known secret values and anything shaped like a token or a credential parameter. */
export class Redactor {
  private readonly known = new Set<string>();

  add(...values: (string | null | undefined)[]): void {
    for (const v of values) if (v && v.length >= 4) this.known.add(v);
  }

  redact(text: string): string {
    let out = text;
    for (const v of this.known) out = out.split(v).join(REDACTED);
    return out.replace(BEARER, `$1${REDACTED}`).replace(TOKEN_SHAPES, REDACTED).replace(SECRET_PARAMS, `$1${REDACTED}`);
  }
}
