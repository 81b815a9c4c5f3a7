import { Agent, request } from 'undici';
import type { DownstreamTarget, UserEvent } from '@connect/shared';
import { signNablaConnect } from './sign-nabla-connect.ts';
import { signStandardWebhooks } from './sign-standard-webhooks.ts';

/** docs/contract.md, Events: the callback body, exactly these keys. */
export interface CallbackBody {
  request_uuid: string;
  type: UserEvent['type'];
  occurred_at: string;
  data: { organization_id: string; version: number; user: UserEvent['data'] };
}

export function callbackBodyOf(event: UserEvent): CallbackBody {
  return {
    request_uuid: event.id,
    type: event.type,
    occurred_at: event.occurred_at,
    data: { organization_id: event.organization_id, version: event.version, user: event.data },
  };
}

/**
 * What one POST came to. `error` is safe to store and log: a status line or an
 * error code, never the response body nor anything of the request (emails).
 */
export type CallbackOutcome =
  | { kind: 'success'; status: number; durationMs: number }
  | { kind: 'retryable'; status: number | null; error: string; retryAfterMs: number | null; durationMs: number }
  | { kind: 'permanent'; status: number; error: string; durationMs: number };

/** docs/contract.md, Events: these statuses are worth another try; every other non-2xx is the receiver saying no. */
const RETRYABLE_STATUSES = new Set([408, 425, 429]);

const DAY = '(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)';
const MONTH = '(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)';
const TIME = '\\d{2}:\\d{2}:\\d{2}';
/** RFC 9110 §5.6.7's three forms: IMF-fixdate, and the obsolete RFC 850 and asctime ones (asctime's is GMT too). */
const IMF_FIXDATE = new RegExp(`^${DAY}, \\d{2} ${MONTH} \\d{4} ${TIME} GMT$`);
const RFC_850_DATE = new RegExp(`^(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), \\d{2}-${MONTH}-\\d{2} ${TIME} GMT$`);
const ASCTIME_DATE = new RegExp(`^${DAY} ${MONTH} [ \\d]\\d ${TIME} \\d{4}$`);

/**
 * `Retry-After` is either delta-seconds or an HTTP date (RFC 9110 §10.2.3); anything else is
 * ignored. Dates are matched to the RFC's forms first: V8's Date.parse takes almost anything
 * (`wait 3000` read as the year 3000 held a target for the 10-hour cap).
 */
export function parseRetryAfter(value: string | null, now: Date): number | null {
  if (value === null) return null;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const at = IMF_FIXDATE.test(v) || RFC_850_DATE.test(v) ? Date.parse(v) : ASCTIME_DATE.test(v) ? Date.parse(`${v} GMT`) : NaN;
  if (Number.isNaN(at)) return null;
  return Math.max(at - now.getTime(), 0);
}

export interface DeliverCallbackOptions {
  now?: () => Date;
  userAgent?: string;
}

function networkError(err: unknown, timeoutMs: number): string {
  const e = err as { name?: string; cause?: { code?: string; name?: string }; code?: string };
  if (e?.name === 'TimeoutError' || e?.cause?.name === 'TimeoutError') return `timeout after ${timeoutMs} ms`;
  if (e?.name === 'AbortError') return 'aborted';
  const code = e?.cause?.code ?? e?.code;
  if (code) return `network error: ${code}`;
  // undici's parser error has no code: an answer that is not HTTP at all (its bytes are not quoted).
  if (e?.name === 'HTTPParserError') return 'network error: the answer is not HTTP/1.1 (HTTPParserError)';
  return 'network error';
}

/**
 * One connection pool per target: keep-alive, redirects never followed (undici's
 * request does not follow them unless told to), no cap of its own (a target has at
 * most its WORKER_CONCURRENCY requests in flight per process). Per target, not per
 * process: undici pools by host and port, and targets behind one gateway shared one
 * pool of 128 connections, so two unanswering targets of 64 slots each took them all
 * and a healthy target there waited, its timeout running (docs/delivery.md, "One
 * target never delays another"). undici's `request` rather than `fetch`: the same
 * client underneath without the WHATWG streams and Response objects, which were a
 * tenth of the worker's CPU per delivery.
 */
const dispatchers = new Map<string, Agent>();

function dispatcherOf(target: DownstreamTarget): Agent {
  let dispatcher = dispatchers.get(target.name);
  if (!dispatcher) {
    dispatcher = new Agent({ keepAliveTimeout: 30_000 });
    dispatchers.set(target.name, dispatcher);
  }
  return dispatcher;
}

/** How much of a receiver's answer is read (and thrown away) so the connection can be reused. */
const MAX_DRAINED_BODY = 64 * 1024;

/**
 * POSTs one event to one target, signed per the target's scheme, within its
 * `timeout_ms`, and classifies the answer. Redirects are never followed: a
 * redirect would carry a signed body, emails included, to a host nobody
 * configured; a 3xx counts as a permanent refusal that an operator must look at.
 */
export async function deliverCallback(target: DownstreamTarget, event: UserEvent, options: DeliverCallbackOptions = {}): Promise<CallbackOutcome> {
  const now = options.now ?? (() => new Date());
  const rawBody = JSON.stringify(callbackBodyOf(event));
  const signedAt = now();
  const signature =
    target.scheme === 'standard-webhooks'
      ? signStandardWebhooks(event.id, rawBody, target.secrets, signedAt)
      : signNablaConnect(rawBody, target.secrets, signedAt);
  const started = Date.now();
  let status: number;
  let retryAfter: string | null = null;
  let receiverDate: string | null = null;
  try {
    const res = await request(target.url, {
      method: 'POST',
      dispatcher: dispatcherOf(target),
      signal: AbortSignal.timeout(target.timeout_ms),
      headers: {
        'content-type': 'application/json',
        'user-agent': options.userAgent ?? 'connect-provisioning-callbacks/1',
        ...signature,
      },
      body: rawBody,
    });
    status = res.statusCode;
    const header = res.headers['retry-after'];
    retryAfter = (Array.isArray(header) ? header[0] : header) ?? null;
    const date = res.headers['date'];
    receiverDate = (Array.isArray(date) ? date[0] : date) ?? null;
    // The body is never read into a log or a row; a bounded drain lets the connection be reused.
    await res.body.dump({ limit: MAX_DRAINED_BODY }).catch(() => undefined);
  } catch (err) {
    return { kind: 'retryable', status: null, error: networkError(err, target.timeout_ms), retryAfterMs: null, durationMs: Date.now() - started };
  }
  const durationMs = Date.now() - started;
  if (status >= 200 && status < 300) return { kind: 'success', status, durationMs };
  if ((status >= 500 && status < 600) || RETRYABLE_STATUSES.has(status)) {
    return { kind: 'retryable', status, error: `HTTP ${status}`, retryAfterMs: parseRetryAfter(retryAfter, now()), durationMs };
  }
  return { kind: 'permanent', status, error: `HTTP ${status}${permanentNote(status)}${clockNote(status, receiverDate, signedAt.getTime() + durationMs)}`, durationMs };
}

/** Clocks further apart than this are named in a refusal's error (a Date header is to the second). */
const CLOCKS_APART_MS = 30_000;

/**
 * A refusal (4xx) from a receiver whose clock, by its `Date` header, is far from the one that
 * dated the signature: receivers refuse a signature timestamp too far from their own clock
 * (`@connect/receiver`: 60 s for nabla-connect, 5 minutes for Standard Webhooks), and the 401 alone
 * said nothing of it (a clock audit dead-lettered every callback so, with only "HTTP 401" to go by).
 */
export function clockNote(status: number, receiverDate: string | null, answeredAt: number): string {
  if (status < 400 || status >= 500 || receiverDate === null) return '';
  const theirs = Date.parse(receiverDate);
  if (!Number.isFinite(theirs) || Math.abs(theirs - answeredAt) <= CLOCKS_APART_MS) return '';
  const apart = Math.round(Math.abs(theirs - answeredAt) / 1000);
  return ` (the receiver's clock is ${apart} s ${theirs < answeredAt ? 'behind' : 'ahead of'} the worker's, by its Date header: a signature timestamp that far from its clock is refused; set the clocks right (NTP), then replay)`;
}

/** Answers that point elsewhere: a signed body is never carried to a host nobody configured (above). */
const REDIRECT_STATUSES = new Set([300, 301, 302, 303, 307, 308]);

/** Why a 3xx fails: a redirect is not followed; any other (304 Not Modified, say) is simply not a 2xx. */
function permanentNote(status: number): string {
  if (REDIRECT_STATUSES.has(status)) return ' (redirects are not followed)';
  return status >= 300 && status < 400 ? ' (not a 2xx: only a 2xx answer delivers)' : '';
}
