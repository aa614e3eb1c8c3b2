/**
 * The responses the sidecar answers itself on a user-access port: redirects to and from the provider,
 * the 401 for programs, and short HTML pages for people (refused, sign-in failed, signed out). Every
 * answer closes the connection: an unread request body never has to be drained to find the next one.
 */

const STATUS_TEXT: Record<number, string> = {
  200: "OK",
  302: "Found",
  307: "Temporary Redirect",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  502: "Bad Gateway",
};

export interface Answer {
  readonly status: number;
  readonly raw: string;
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function response(
  status: number,
  headers: readonly (readonly [string, string])[],
  body: string,
  type: string,
): Answer {
  let head = `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? ""}\r\n`;
  for (const [name, value] of headers) head += `${name}: ${value}\r\n`;
  head +=
    `content-type: ${type}\r\ncontent-length: ${Buffer.byteLength(body)}\r\n` +
    "cache-control: no-store\r\nconnection: close\r\n\r\n";
  return { status, raw: head + body };
}

export function redirect(status: 302 | 307, location: string, cookies: readonly string[]): Answer {
  return response(
    status,
    [["location", location], ...cookies.map((c) => ["set-cookie", c] as const)],
    "",
    "text/plain",
  );
}

/** A page for a person: a heading, one sentence, and links (already safe paths or provider URLs). */
export function page(
  status: 200 | 400 | 403 | 502,
  title: string,
  detail: string,
  cookies: readonly string[] = [],
  link?: { readonly href: string; readonly text: string },
): Answer {
  const a =
    link === undefined ? "" : `<p><a href="${escapeHtml(link.href)}">${escapeHtml(link.text)}</a></p>`;
  const body =
    `<!doctype html><html><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>` +
    `<body><h1>${escapeHtml(title)}</h1><p>${escapeHtml(detail)}</p>${a}</body></html>`;
  return response(
    status,
    cookies.map((c) => ["set-cookie", c] as const),
    body,
    "text/html; charset=utf-8",
  );
}

/** For a program without credentials, or (`invalid`) with a token that failed: RFC 6750 challenge. */
export function unauthorized(reason: string, invalid: boolean): Answer {
  const challenge = invalid ? `Bearer realm="sigil", error="invalid_token"` : `Bearer realm="sigil"`;
  return response(
    401,
    [["www-authenticate", challenge]],
    JSON.stringify({ error: "unauthorized", reason }),
    "application/json",
  );
}
