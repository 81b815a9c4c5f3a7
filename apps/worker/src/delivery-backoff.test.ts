import { describe, expect, it } from 'vitest';
import { deliveryBackoff, RetryableDeliveryError } from './delivery-backoff.ts';
import { parseRetryAfter } from './deliver-callback.ts';

const policy = { retryScheduleMs: [1000, 2000, 4000, 8000] };

describe('deliveryBackoff', () => {
  it('follows the schedule, ±20 %', () => {
    const low = deliveryBackoff(policy, () => 0);
    const high = deliveryBackoff(policy, () => 1);
    expect([1, 2, 3, 4].map((n) => low(n))).toEqual([800, 1600, 3200, 6400]);
    expect([1, 2, 3, 4].map((n) => high(n))).toEqual([1200, 2400, 4800, 9600]);
  });

  it('waits for the receiver’s Retry-After when it is longer, capped at the larger of the largest step and an hour', () => {
    const b = deliveryBackoff(policy, () => 0.5);
    expect(b(1, 'delivery', new RetryableDeliveryError('HTTP 429', 2000))).toBe(2000);
    expect(b(1, 'delivery', new RetryableDeliveryError('HTTP 503', 30_000))).toBe(30_000);
    expect(b(1, 'delivery', new RetryableDeliveryError('HTTP 503', 10_000_000))).toBe(3_600_000);
    expect(b(3, 'delivery', new RetryableDeliveryError('HTTP 503', null))).toBe(4000);
    expect(b(4, 'delivery', new RetryableDeliveryError('HTTP 429', 1000))).toBe(8000); // the schedule is longer
  });
});

describe('parseRetryAfter', () => {
  const now = new Date('2026-03-01T10:00:00Z');
  it('reads delta-seconds and HTTP dates', () => {
    expect(parseRetryAfter('2', now)).toBe(2000);
    expect(parseRetryAfter(' 120 ', now)).toBe(120_000);
    expect(parseRetryAfter('Sun, 01 Mar 2026 10:00:30 GMT', now)).toBe(30_000);
    expect(parseRetryAfter('Sun, 01 Mar 2026 09:00:00 GMT', now)).toBe(0);
    // The obsolete forms a recipient must still read (RFC 9110 §5.6.7).
    expect(parseRetryAfter('Sunday, 01-Mar-26 10:00:30 GMT', now)).toBe(30_000);
    expect(parseRetryAfter('Sun Mar  1 10:00:30 2026', now)).toBe(30_000);
  });
  it('ignores absent or malformed values', () => {
    expect(parseRetryAfter(null, now)).toBeNull();
    expect(parseRetryAfter('-5', now)).toBeNull();
    expect(parseRetryAfter('soon', now)).toBeNull();
    expect(parseRetryAfter('1.5', now)).toBeNull();
  });
  it('ignores what Date.parse would take but is no HTTP date (a sick-target audit saw "wait 3000" hold a target for 10 hours)', () => {
    for (const v of ['wait 3000', 'garbage 3000', '2026-03-01T10:00:30Z', 'May 5', 'x 1', 'Sun, 01 Mar 2026 10:00:30 +0100']) expect(parseRetryAfter(v, now), v).toBeNull();
  });
});
