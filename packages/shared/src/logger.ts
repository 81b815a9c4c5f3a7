import { format } from 'node:util';
import pino, { type Logger, type LoggerOptions } from 'pino';
import { maskEmail, maskEmailsIn, withoutCredentials } from './input-rules.ts';

export { maskEmail, maskEmailsIn, withoutCredentials };

/** A query string (`?a=b&c=d`) inside text: RFC 6750 lets an `access_token` travel there. */
const QUERY_IN_TEXT = /\?[^\s"'?]*=[^\s"']*/g;

/**
 * A JWT (an access token, a client assertion) inside text: three base64url parts, the first a JSON
 * object's ("eyJ"). Not preceded by a base64url character, so a long run of them is tried once,
 * not from each of its positions (linear, whatever the text).
 */
const JWT_IN_TEXT = /(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{1,8192}\.[A-Za-z0-9_-]{1,65536}\.[A-Za-z0-9_-]{0,8192}/g;

/**
 * Free text (an error's message or stack, which can quote a URL or the input) as it may be
 * logged: credentials in URLs, query strings, JWTs and email addresses taken out.
 */
export function scrubText(text: string): string {
  return maskEmailsIn(withoutCredentials(text).replace(QUERY_IN_TEXT, '?…').replace(JWT_IN_TEXT, '[jwt]'));
}

/**
 * An error as it may be logged. pino's default would write every own property (a driver
 * error's `keyValue` quotes the duplicate email, a topology dump, a Fastify message the raw
 * URL); this keeps the type, the code and the message and stack, scrubbed.
 */
export function serializeError(err: unknown, depth = 0): unknown {
  if (!(err instanceof Error)) return typeof err === 'string' ? scrubText(err) : err;
  const code = (err as { code?: unknown }).code;
  // What explains the error often sits in its cause (fetch's "fetch failed") or, for an
  // AggregateError (a refused connection to every address), in its errors: kept, scrubbed alike.
  const inner = depth < 3 ? err : undefined;
  return {
    type: err.constructor?.name ?? err.name,
    message: scrubText(err.message),
    ...(typeof code === 'string' || typeof code === 'number' ? { code } : {}),
    ...(err.stack ? { stack: scrubText(err.stack) } : {}),
    ...(inner?.cause !== undefined ? { cause: serializeError(inner.cause, depth + 1) } : {}),
    ...(inner instanceof AggregateError ? { errors: inner.errors.slice(0, 5).map((e) => serializeError(e, depth + 1)) } : {}),
  };
}

const ESCAPES = /(?:%[0-9A-Fa-f]{2})+/g;

/**
 * A run of percent-escapes decoded; one that is not UTF-8 (bytes cut off by the length cap, or
 * sent so) keeps its other escapes but has its ASCII ones decoded, so an encoded "@" never hides
 * an email from the mask (a path that failed to decode as a whole was logged as sent).
 */
function decodeTolerantly(run: string): string {
  try {
    return decodeURIComponent(run);
  } catch {
    return run.replace(/%[0-7][0-9A-Fa-f]/g, (e) => String.fromCharCode(parseInt(e.slice(1), 16)));
  }
}

/**
 * A request target's path: without the query, and without the scheme and authority of the
 * absolute form (`GET http://user:password@host/path HTTP/1.1`, which Node passes on as the URL),
 * whose credentials are the sender's secret and its host nothing of ours.
 */
export function requestPath(url: string): string {
  return url.replace(/^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^/?#]*/, '').split(/[?#]/, 1)[0]!;
}

/** How much of a request path a log line shows. */
const LOGGED_PATH_CHARS = 512;

/**
 * A request URL as it may be logged: no query string (RFC 6750 allows an `access_token` there),
 * emails in the path masked (an external id can be one) and a JWT in it (a token sent in the path
 * by mistake) replaced. Decoded until stable, at most three times: `%2540` is an "@" encoded twice.
 * Masked before it is cut, so an email across the cut is masked whole, never shown up to the cut;
 * masking is linear, and the twice as long a prefix it reads holds any email that starts in what is shown.
 */
export function loggableUrl(url: string | undefined): string {
  let path = requestPath(url ?? '').slice(0, 6 * LOGGED_PATH_CHARS);
  for (let i = 0; i < 3 && path.includes('%'); i++) {
    const decoded = path.replace(ESCAPES, decodeTolerantly);
    if (decoded === path) break;
    path = decoded;
  }
  return maskEmailsIn(path.slice(0, 2 * LOGGED_PATH_CHARS).replace(JWT_IN_TEXT, '[jwt]')).slice(0, LOGGED_PATH_CHARS);
}

export const REDACT_PATHS = [
  'authorization',
  '*.authorization',
  'req.headers.authorization',
  'headers.authorization',
  'client_assertion',
  '*.client_assertion',
  'access_token',
  '*.access_token',
  'token',
  '*.token',
  'secret',
  'secrets',
  '*.secret',
  '*.secrets',
  'private_key_pem',
  '*.private_key_pem',
  'password',
  '*.password',
];

/**
 * pino with the project's redaction: credentials are removed wherever they sit in
 * a logged object, and emails are masked. Request logging serializers (apps/api)
 * log only method, route and a request id, never headers or bodies.
 */
export function loggerOptions(level: string, name: string): LoggerOptions {
  return {
    name,
    level,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    serializers: {
      err: serializeError,
      // Method, path and who asked; never headers, query strings or bodies.
      req: (req: { method?: string; url?: string; ip?: string; socket?: { remoteAddress?: string } }) => ({
        method: req.method,
        url: loggableUrl(req.url),
        remoteAddress: req.ip ?? req.socket?.remoteAddress,
      }),
    },
    hooks: {
      // The message itself: an error logged without one (alone, or as `{ err }`) lends it its
      // unscrubbed message, and a message can quote input through interpolation.
      logMethod(args, method) {
        const first = args[0] as unknown;
        const lent = args.length === 1 ? (first instanceof Error ? first : (first as { err?: unknown } | null)?.err) : undefined;
        if (lent instanceof Error) return method.apply(this, [first, scrubText(lent.message)] as Parameters<typeof method>);
        // The message is scrubbed once interpolated: a placeholder's value can quote input, and
        // scrubbing the format string first would eat the placeholders after a "?".
        const at = typeof first === 'string' ? 0 : typeof args[1] === 'string' ? 1 : -1;
        if (at < 0) return method.apply(this, args);
        const message = scrubText(format(args[at] as string, ...args.slice(at + 1)));
        return method.apply(this, [...args.slice(0, at), message] as unknown as Parameters<typeof method>);
      },
    },
    formatters: {
      log(obj) {
        for (const key of ['provider_email', 'email']) {
          const v = obj[key];
          if (typeof v === 'string') obj[key] = maskEmail(v);
        }
        for (const key of ['err', 'msg', 'error']) {
          const v = obj[key];
          if (typeof v === 'string') obj[key] = scrubText(v);
        }
        return obj;
      },
    },
  };
}

export function createLogger(level: string, name: string, destination?: pino.DestinationStream): Logger {
  return destination ? pino(loggerOptions(level, name), destination) : pino(loggerOptions(level, name));
}

/**
 * Resolves once everything the logger was given has been written (at most `ms`),
 * and ends its stream: for a process about to exit. pino writes stdout
 * asynchronously, and a `process.exit()` with a write still in flight lets
 * pino's own exit-time flush (synchronous) write the lines queued behind it
 * first, so a process's last lines could come out of order, or the in-flight
 * ones not at all. A destination without `end` and `once` (not a stream) resolves at once.
 */
export async function endLogs(log: Logger, ms = 2000): Promise<void> {
  const stream = (log as unknown as Record<symbol, unknown>)[pino.symbols.streamSym] as
    | { end?: () => void; once?: (event: string, cb: () => void) => void; destroyed?: boolean; write?: (line: string) => boolean }
    | undefined;
  if (!stream || typeof stream.end !== 'function' || typeof stream.once !== 'function' || stream.destroyed) return;
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    stream.once!('close', () => {
      clearTimeout(timer);
      resolve();
    });
    stream.end!();
    // A line logged from now on (a late signal, a connection's error while the process exits)
    // cannot be written; sonic-boom would throw "SonicBoom destroyed", an uncaught exception
    // with a stack trace instead of the exit under way. It is dropped.
    stream.write = () => true;
  });
}

/**
 * A warning that can repeat many times a second (a Redis connection retrying through an
 * outage: one line per retry per connection, about 4 a second from the worker alone) is
 * written once, then at most once per `intervalMs` for the same key, with `repeated`: how
 * many identical warnings were left out since the previous line. An outage of an hour stays
 * a few hundred lines, and its start, persistence and end are all visible.
 */
export function warnAtMostEvery(log: Logger, intervalMs = 10_000, now: () => number = Date.now): (key: string, fields: Record<string, unknown>, msg: string) => void {
  const seen = new Map<string, { at: number; left: number }>();
  return (key, fields, msg) => {
    const t = now();
    const entry = seen.get(key);
    if (entry && t - entry.at < intervalMs) {
      entry.left++;
      return;
    }
    log.warn(entry?.left ? { ...fields, repeated: entry.left } : fields, msg);
    seen.set(key, { at: t, left: 0 });
    // Keys are a handful (connections and queues by name, one per distinct message); forget old ones anyway.
    if (seen.size > 1000) for (const [k, v] of seen) if (t - v.at >= intervalMs) seen.delete(k);
  };
}
