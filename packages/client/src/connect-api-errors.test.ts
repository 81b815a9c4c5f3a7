import { describe, expect, it } from 'vitest';
import { AuthenticationError, ConnectApiError, EmailConflictError, EmailMismatchError, errorFromProblem, NotFoundError, problemFrom, RateLimitedError, ValidationError } from './connect-api-errors.ts';
import { backoffMs, retryAfterMs } from './retry-policy.ts';

const base = 'https://connect-provisioning.dev/problems/';

describe('errorFromProblem', () => {
  it.each([
    [409, 'email-mismatch', EmailMismatchError],
    [409, 'email-conflict', EmailConflictError],
    [400, 'validation', ValidationError],
    [401, 'unauthorized', AuthenticationError],
    [404, 'not-found', NotFoundError],
    [429, 'rate-limited', RateLimitedError],
    [500, 'internal', ConnectApiError],
  ])('%i %s → %o', (status, slug, cls) => {
    const error = errorFromProblem(status, { type: base + slug, status, detail: 'd', errors: slug === 'validation' ? [{ path: 'a', message: 'b' }] : undefined });
    expect(error).toBeInstanceOf(cls);
    expect(error).toBeInstanceOf(ConnectApiError);
    expect(error.status).toBe(status);
    expect(error.message).toBe('d');
  });

  // A 503 (shutting down, a datastore down) asks for a wait as a 429 does: the caller needs it on the error.
  it.each([429, 503, 502, 504, 500, 401, 400])('%i with a Retry-After: the error carries retryAfterSeconds, whatever its class', (status) => {
    expect(errorFromProblem(status, { type: base + 'x', status, errors: [] }, 120).retryAfterSeconds).toBe(120);
    expect(errorFromProblem(status, { type: base + 'x', status, errors: [] }).retryAfterSeconds).toBeUndefined();
  });

  it('reads an RFC 6749 token error and a non-JSON body as problems', () => {
    expect(problemFrom(401, 'Unauthorized', '{"error":"invalid_client","error_description":"no"}')).toMatchObject({ title: 'invalid_client', detail: 'no', status: 401 });
    expect(problemFrom(502, 'Bad Gateway', '<html>')).toMatchObject({ type: 'about:blank', title: 'HTTP 502 Bad Gateway', status: 502, detail: undefined });
  });

  it('a body that is no problem document is quoted without the addresses in it (a proxy echoing the request put the email in the message)', () => {
    const echoed = 'echo body={"provider_email":"sdk.person\'x@example.co.uk","external_provider_id":"x"} to jane@hospital.a1.';
    expect(problemFrom(500, 'Internal Server Error', echoed).detail).toBe('HTTP 500 Internal Server Error: echo body={"provider_email":"[email]","external_provider_id":"x"} to [email].');
  });
});

describe('retry policy', () => {
  it('Retry-After as seconds or an HTTP date', () => {
    expect(retryAfterMs('1')).toBe(1000);
    expect(retryAfterMs(new Date(10_000).toUTCString(), 4_000)).toBe(6_000);
    expect(retryAfterMs(null)).toBeUndefined();
    expect(retryAfterMs('soon')).toBeUndefined();
    // Not delay-seconds (whole numbers only) and not an HTTP date: unreadable, so the backoff applies
    // (Date.parse would read "1.5" as a day in 2001: a wait of 0, an immediate retry).
    expect(retryAfterMs('1.5')).toBeUndefined();
    expect(retryAfterMs('-3')).toBeUndefined();
  });

  it('backoff grows exponentially with full jitter, capped at 30 s', () => {
    expect(backoffMs(0, () => 0.999)).toBeLessThan(500);
    expect(backoffMs(3, () => 0.999)).toBeLessThan(4000);
    expect(backoffMs(3, () => 0.999)).toBeGreaterThan(3900);
    expect(backoffMs(20, () => 0.999)).toBeLessThan(30_000);
    expect(backoffMs(5, () => 0)).toBe(0);
  });
});
