import pino, { type Logger, type LoggerOptions } from 'pino';
import { withoutCredentials } from './input-rules.ts';

export { withoutCredentials };

/** `jane.doe@example.com` → `j***@e***.com`: enough to tell users apart in a log, not to read. */
export function maskEmail(email: string): string {
  const at = email.lastIndexOf('@');
  if (at < 1) return '***';
  const local = email.slice(0, at);
  const domain = email.slice(at + 1);
  const dot = domain.lastIndexOf('.');
  const host = dot > 0 ? domain.slice(0, dot) : domain;
  const tld = dot > 0 ? domain.slice(dot) : '';
  return `${local[0]}***@${host[0] ?? ''}***${tld}`;
}

const EMAIL_IN_TEXT = /[^\s"'<>@,;:]+@[^\s"'<>@,;:]+\.[A-Za-z]{2,}/g;

/** Masks every email address inside free text (error messages can quote input). */
export function maskEmailsIn(text: string): string {
  return text.replace(EMAIL_IN_TEXT, (m) => maskEmail(m));
}

/**
 * A request URL as it may be logged: no query string (RFC 6750 allows an
 * `access_token` there) and emails in the path masked (an external id can be one).
 */
export function loggableUrl(url: string | undefined): string {
  const path = (url ?? '').split('?')[0]!;
  let decoded = path;
  try {
    decoded = decodeURIComponent(path);
  } catch {
    /* keep it encoded */
  }
  return maskEmailsIn(decoded).slice(0, 512);
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
      // Method, path and who asked; never headers, query strings or bodies.
      req: (req: { method?: string; url?: string; ip?: string; socket?: { remoteAddress?: string } }) => ({
        method: req.method,
        url: loggableUrl(req.url),
        remoteAddress: req.ip ?? req.socket?.remoteAddress,
      }),
    },
    formatters: {
      log(obj) {
        for (const key of ['provider_email', 'email']) {
          const v = obj[key];
          if (typeof v === 'string') obj[key] = maskEmail(v);
        }
        for (const key of ['err', 'msg', 'error']) {
          const v = obj[key];
          if (typeof v === 'string') obj[key] = maskEmailsIn(v);
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
