import { describe, expect, it } from 'vitest';
import { deliveryBackoff, RetryableDeliveryError } from './delivery-backoff.ts';
import { parseRetryAfter } from './deliver-callback.ts';

const settings = { baseMs: 1000, maxMs: 60_000, maxRetryAfterMs: 300_000 };

describe('deliveryBackoff', () => {
  it('doubles per attempt, with jitter between half and all of the step', () => {
    const low = deliveryBackoff(settings, () => 0);
    const high = deliveryBackoff(settings, () => 1);
    expect([1, 2, 3, 4].map((n) => low(n))).toEqual([500, 1000, 2000, 4000]);
    expect([1, 2, 3, 4].map((n) => high(n))).toEqual([1000, 2000, 4000, 8000]);
  });

  it('never exceeds the cap', () => {
    expect(deliveryBackoff(settings, () => 1)(30)).toBe(60_000);
  });

  it('waits for the receiver’s Retry-After when it is longer than the backoff, capped', () => {
    const b = deliveryBackoff(settings, () => 0);
    expect(b(1, 'delivery', new RetryableDeliveryError('HTTP 429', 2000))).toBe(2000);
    expect(b(1, 'delivery', new RetryableDeliveryError('HTTP 503', 10_000_000))).toBe(300_000);
    expect(b(3, 'delivery', new RetryableDeliveryError('HTTP 503', null))).toBe(2000);
    expect(b(5, 'delivery', new RetryableDeliveryError('HTTP 429', 1000))).toBe(8000); // backoff is longer
  });
});

describe('parseRetryAfter', () => {
  const now = new Date('2026-03-01T10:00:00Z');
  it('reads delta-seconds and HTTP dates', () => {
    expect(parseRetryAfter('2', now)).toBe(2000);
    expect(parseRetryAfter(' 120 ', now)).toBe(120_000);
    expect(parseRetryAfter('Sun, 01 Mar 2026 10:00:30 GMT', now)).toBe(30_000);
    expect(parseRetryAfter('Sun, 01 Mar 2026 09:00:00 GMT', now)).toBe(0);
  });
  it('ignores absent or malformed values', () => {
    expect(parseRetryAfter(null, now)).toBeNull();
    expect(parseRetryAfter('-5', now)).toBeNull();
    expect(parseRetryAfter('soon', now)).toBeNull();
    expect(parseRetryAfter('1.5', now)).toBeNull();
  });
});
