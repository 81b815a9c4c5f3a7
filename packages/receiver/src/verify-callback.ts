import { createHmac, timingSafeEqual } from 'node:crypto';
import { Webhook } from 'standardwebhooks';
import { callbackEventSchema, type CallbackEvent } from './contract.ts';

export type CallbackScheme = 'nabla-connect' | 'standard-webhooks';
export type VerificationFailure = 'missing_header' | 'timestamp_out_of_window' | 'bad_signature' | 'malformed_body';

export class CallbackVerificationError extends Error {
  constructor(
    readonly reason: VerificationFailure,
    message: string,
  ) {
    super(message);
    this.name = 'CallbackVerificationError';
  }
}

/** Headers as node:http, Fastify, Express or the fetch API hand them over (any object with `get(name)` is read through it). */
export type IncomingHeaders = Headers | { get(name: string): string | null | undefined } | Record<string, string | string[] | undefined>;

export interface VerifyCallbackInput {
  headers: IncomingHeaders;
  /** The body exactly as received: re-serialized JSON does not verify. */
  rawBody: string | Buffer | Uint8Array;
  /** Every secret currently valid for this sender (old and new during a rotation). */
  secrets: string | readonly string[];
  scheme?: CallbackScheme;
  /** How old (or how far in the future) a signature may be; 60 s for nabla-connect, 300 s for standard-webhooks. */
  toleranceSeconds?: number;
  /** The clock, for tests. */
  now?: () => number;
}

export const NABLA_TIMESTAMP_HEADER = 'x-nabla-connect-timestamp';
export const NABLA_SIGNATURE_HEADER = 'x-nabla-connect-signature';
const DEFAULT_TOLERANCE: Record<CallbackScheme, number> = { 'nabla-connect': 60, 'standard-webhooks': 300 };

/**
 * One header's value, trimmed; undefined when absent or blank. A header given as several values
 * (node:http's `headersDistinct`, a Map of arrays) is joined with `separator`, the one its own
 * list syntax uses. Names are matched case-insensitively: through `get` (a `Headers` does so
 * itself; a Map's keys are then searched), or among a plain object's keys.
 */
function header(headers: IncomingHeaders, name: string, separator = ','): string | undefined {
  const text = (value: unknown): string | undefined => {
    const joined = Array.isArray(value) ? value.filter((v) => typeof v === 'string').join(separator) : value;
    return typeof joined === 'string' && joined.trim() ? joined.trim() : undefined;
  };
  // Not `instanceof Headers`: undici's or node-fetch's Headers, or one from another realm, are not this one.
  const get = (headers as { get?: unknown }).get;
  if (typeof get === 'function') {
    const value: unknown = get.call(headers, name);
    if (value !== undefined && value !== null) return text(value);
    // A Map keyed as the sender wrote the names (`Webhook-Id`): its get is case-sensitive.
    if (headers instanceof Map) {
      for (const [key, v] of headers as Map<unknown, unknown>) if (typeof key === 'string' && key.toLowerCase() === name) return text(v);
    }
    return undefined;
  }
  const record = headers as Record<string, string | string[] | undefined>;
  let value = record[name];
  if (value === undefined) {
    const key = Object.keys(record).find((k) => k.toLowerCase() === name);
    value = key === undefined ? undefined : record[key];
  }
  return text(value);
}

/** The body's bytes; anything but bytes or text is a mistake of the caller's (a parsed body), said as such. */
function rawBytes(rawBody: unknown): Buffer {
  if (Buffer.isBuffer(rawBody)) return rawBody;
  if (typeof rawBody === 'string' || rawBody instanceof Uint8Array) return Buffer.from(rawBody);
  const what = rawBody === null ? 'null' : Array.isArray(rawBody) ? 'an array' : typeof rawBody === 'object' ? 'an object (a parsed body?)' : typeof rawBody;
  throw new TypeError(`verifyCallback: rawBody must be the request body exactly as received (a Buffer, Uint8Array or string), not ${what}: the signature covers the bytes, which parsing loses`);
}

/**
 * Checks a callback's signature and shape and answers the typed event, or throws
 * CallbackVerificationError. The signature is checked before the body is even
 * parsed: nothing an unauthenticated sender writes reaches JSON.parse or the schema.
 */
export function verifyCallback(input: VerifyCallbackInput): CallbackEvent {
  const scheme = input.scheme ?? 'nabla-connect';
  const secrets = usableSecrets(input.secrets, scheme, 'verifyCallback');
  const raw = rawBytes(input.rawBody);
  const tolerance = usableTolerance(input.toleranceSeconds, 'verifyCallback') ?? DEFAULT_TOLERANCE[scheme];
  const now = (input.now ?? Date.now)();

  if (scheme === 'nabla-connect') verifyNablaConnect(input.headers, raw, secrets, tolerance, now);
  else verifyStandardWebhooks(input.headers, raw, secrets, tolerance, now);

  let body: unknown;
  try {
    body = JSON.parse(raw.toString('utf8'));
  } catch {
    throw new CallbackVerificationError('malformed_body', 'the body is not JSON');
  }
  const parsed = callbackEventSchema.safeParse(body);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new CallbackVerificationError('malformed_body', `${issue.path.join('.') || '(body)'}: ${issue.message}`);
  }
  return parsed.data;
}

function checkWindow(signedAtMs: number, tolerance: number, now: number): void {
  if (Number.isNaN(signedAtMs)) throw new CallbackVerificationError('timestamp_out_of_window', 'the timestamp is not a time');
  if (Math.abs(now - signedAtMs) > tolerance * 1000) throw new CallbackVerificationError('timestamp_out_of_window', `signed more than ${tolerance} s away from now`);
}

/**
 * `nabla-connect`: hex HMAC-SHA256(secret, timestamp immediately followed by the raw
 * body); the header lists one signature per sender secret, comma-separated, each
 * optionally prefixed `sha256=` (as Nabla's sample receiver accepts). Any of our
 * secrets matching any listed signature is enough; every compare is constant-time
 * on equal-length digests, so timing tells an attacker nothing about a near miss.
 */
function verifyNablaConnect(headers: IncomingHeaders, raw: Buffer, secrets: readonly string[], tolerance: number, now: number): void {
  const timestamp = header(headers, NABLA_TIMESTAMP_HEADER);
  const signatureList = header(headers, NABLA_SIGNATURE_HEADER);
  if (!timestamp || !signatureList) {
    throw new CallbackVerificationError('missing_header', `${NABLA_TIMESTAMP_HEADER} and ${NABLA_SIGNATURE_HEADER} are required`);
  }
  // ISO 8601 as the sender writes it; unix seconds accepted too.
  checkWindow(/^\d+$/.test(timestamp) ? Number(timestamp) * 1000 : Date.parse(timestamp), tolerance, now);
  const given = signatureList
    .split(',')
    .map((s) => s.trim().replace(/^sha256=/i, ''))
    .filter((s) => /^[0-9a-f]{64}$/i.test(s))
    .map((s) => Buffer.from(s, 'hex'));
  const ok = secrets.some((secret) => {
    const expected = createHmac('sha256', secret).update(timestamp, 'utf8').update(raw).digest();
    return given.some((g) => g.length === expected.length && timingSafeEqual(g, expected));
  });
  if (!ok) throw new CallbackVerificationError('bad_signature', 'no signature matches any secret');
}

/**
 * `toleranceSeconds`, checked like the secrets: NaN (an unset variable through Number()) or a
 * negative value would otherwise turn the replay window off, failing open.
 */
export function usableTolerance(given: number | undefined, who: string): number | undefined {
  if (given === undefined) return undefined;
  if (typeof given !== 'number' || !Number.isFinite(given) || given < 0) throw new TypeError(`${who}: toleranceSeconds must be a finite number of seconds, 0 or more, got ${String(given)}`);
  return given;
}

/**
 * The secrets, checked as a programming or configuration error (TypeError) rather
 * than a failed verification: none given, an unknown scheme, or a standard-webhooks
 * secret that is not in its `whsec_` + base64 form. The adapters call it when they
 * are created, so a bad secret stops the receiver at start instead of answering
 * every callback 500.
 */
export function usableSecrets(given: string | readonly string[], scheme: CallbackScheme, who: string): string[] {
  if (typeof given !== 'string' && !Array.isArray(given)) throw new TypeError(`${who}: secrets must be a string or an array of strings`);
  const secrets = (typeof given === 'string' ? [given] : given).filter((s) => typeof s === 'string' && s.length > 0);
  if (secrets.length === 0) throw new TypeError(`${who}: at least one secret is needed`);
  if (scheme !== 'nabla-connect' && scheme !== 'standard-webhooks') throw new TypeError(`${who}: unknown scheme ${String(scheme)} (nabla-connect or standard-webhooks)`);
  if (scheme === 'standard-webhooks') {
    secrets.forEach((secret, i) => {
      try {
        // The library takes a bare base64 key too (a hex secret decodes as base64): the sender's are always whsec_.
        if (!secret.startsWith('whsec_')) throw new Error('no whsec_ prefix');
        new Webhook(secret);
      } catch {
        throw new TypeError(`${who}: secret ${i + 1} is not a standard-webhooks secret: they are "whsec_" followed by base64, as the sender's target configuration has them`);
      }
    });
  }
  return secrets;
}

/**
 * Standard Webhooks: `whsec_` secrets, `v1,<base64>` signatures over
 * `id.timestamp.body`, space-separated. The reference library decodes the secret
 * and computes the signature; the window and the comparison are ours, because
 * its `verify` refuses past its own fixed 5 minutes (and reads the real clock),
 * which would silently cap `toleranceSeconds`.
 */
function verifyStandardWebhooks(headers: IncomingHeaders, raw: Buffer, secrets: readonly string[], tolerance: number, now: number): void {
  const id = header(headers, 'webhook-id');
  const timestamp = header(headers, 'webhook-timestamp');
  // Space-delimited; several values (an array, or two header lines node:http joined with ", ") are one list.
  const signature = header(headers, 'webhook-signature', ' ');
  if (!id || !timestamp || !signature) throw new CallbackVerificationError('missing_header', 'webhook-id, webhook-timestamp and webhook-signature are required');
  const signedAtMs = /^\d+$/.test(timestamp) ? Number(timestamp) * 1000 : Number.NaN;
  checkWindow(signedAtMs, tolerance, now);
  const given = signature
    .split(/\s+/)
    .map((s) => s.replace(/,$/, ''))
    .filter((s) => s.startsWith('v1,'))
    .map((s) => Buffer.from(s.slice(3), 'utf8'));
  const ok = secrets.some((secret) => {
    const expected = Buffer.from(new Webhook(secret).sign(id, new Date(signedAtMs), raw).slice(3), 'utf8');
    return given.some((g) => g.length === expected.length && timingSafeEqual(g, expected));
  });
  if (!ok) throw new CallbackVerificationError('bad_signature', 'no signature matches any secret');
}
