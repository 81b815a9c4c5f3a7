import { describe, expect, it } from 'vitest';
import { httpDateMs, retryAfterMs } from './retry-policy.ts';

const at = Date.UTC(1994, 10, 6, 8, 49, 37); // Sun, 06 Nov 1994 08:49:37 GMT

describe('Retry-After as an HTTP date: the three formats RFC 9110 §5.6.7 says a recipient must accept', () => {
  it.each([
    ['IMF-fixdate', 'Sun, 06 Nov 1994 08:49:37 GMT'],
    ['obsolete RFC 850', 'Sunday, 06-Nov-94 08:49:37 GMT'],
    ['asctime (space-padded day)', 'Sun Nov  6 08:49:37 1994'],
  ])('%s: %j', (_format, value) => {
    expect(retryAfterMs(value, at - 5_000)).toBe(5_000);
    expect(httpDateMs(value, at)).toBe(at);
  });

  it('asctime is read as UTC, whatever the local time zone, and with a two-digit day', () => {
    expect(httpDateMs('Thu Dec 24 23:59:59 2026')).toBe(Date.UTC(2026, 11, 24, 23, 59, 59));
  });

  it('an RFC 850 two-digit year is the most recent year with those digits not over 50 years ahead', () => {
    expect(httpDateMs('Sunday, 06-Nov-94 08:49:37 GMT', Date.UTC(2026, 0, 1))).toBe(at);
    expect(httpDateMs('Friday, 06-Nov-26 08:49:37 GMT', Date.UTC(2026, 0, 1))).toBe(Date.UTC(2026, 10, 6, 8, 49, 37));
  });

  it('still refuses what is neither delay-seconds nor an HTTP date', () => {
    for (const value of ['1.5', '-3', 'soon', 'Sun Nov 6 1994', 'Nov  6 08:49:37 1994']) expect(retryAfterMs(value)).toBeUndefined();
  });
});
