import { describe, expect, it } from 'vitest';
import { ConfigError } from '../config.ts';
import {
  KEEP_COMPLETED_JOBS,
  DEFAULT_DELIVERY_POLICY,
  attemptsOf,
  deliveryJobOptions,
  deliveryPolicyFromEnv,
  internalRetryDelayMs,
  longestRetryWindowMs,
  maxRetryAfterMs,
  retryDelayMs,
  type DeliveryPolicy,
} from './delivery-policy.ts';

const ageMs = (o: unknown) => ((o as { age: number }).age ?? 0) * 1000;

describe('retry schedule', () => {
  it('defaults to 5s,1m,5m,30m,2h,5h,10h,10h: 9 attempts over about 28 hours', () => {
    expect(DEFAULT_DELIVERY_POLICY.retryScheduleMs).toEqual([5_000, 60_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000]);
    expect(attemptsOf(DEFAULT_DELIVERY_POLICY)).toBe(9);
    const hours = DEFAULT_DELIVERY_POLICY.retryScheduleMs.reduce((a, b) => a + b, 0) / 3_600_000;
    expect(hours).toBeGreaterThan(27);
    expect(hours).toBeLessThan(29);
  });

  it('each wait is its step ±20 %, Retry-After a floor capped at the larger of the largest step and an hour', () => {
    const p = { retryScheduleMs: [1000, 2000, 4000] };
    expect(retryDelayMs(p, 1, null, () => 0)).toBe(800);
    expect(retryDelayMs(p, 1, null, () => 1)).toBe(1200);
    expect(retryDelayMs(p, 2, null, () => 0.5)).toBe(2000);
    expect(retryDelayMs(p, 3, null, () => 0.5)).toBe(4000);
    expect(retryDelayMs(p, 1, 3000, () => 0.5)).toBe(3000);
    expect(retryDelayMs(p, 1, 500, () => 0.5)).toBe(1000);
    // Honoured in full up to an hour, even when the schedule's steps are seconds.
    expect(retryDelayMs(p, 1, 3_600_000, () => 0.5)).toBe(3_600_000);
    expect(retryDelayMs(p, 1, 365 * 86_400_000, () => 0.5)).toBe(3_600_000);
    // A schedule with longer steps caps it at its largest.
    const long = { retryScheduleMs: [5000, 36_000_000] };
    expect(retryDelayMs(long, 1, 20 * 3_600_000, () => 0.5)).toBe(36_000_000);
    expect(retryDelayMs(long, 1, 5 * 3_600_000, () => 0.5)).toBe(5 * 3_600_000);
  });
});

describe('the wait after a failure of our own (MongoDB down)', () => {
  it('is 1 s, doubling with each such failure in a row up to the park time, ±20 % jitter, whatever the target\'s schedule', () => {
    const middle = () => 0.5;
    expect([1, 2, 3, 4, 5, 6, 7, 8, 100].map((n) => internalRetryDelayMs(n, 60_000, middle))).toEqual([1000, 2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000, 60_000]);
    expect(internalRetryDelayMs(1, 60_000, () => 0)).toBe(800);
    expect(internalRetryDelayMs(1, 60_000, () => 1)).toBe(1200);
    // A park shorter than a second (tests) caps the first wait too.
    expect(internalRetryDelayMs(1, 500, middle)).toBe(500);
  });
});

describe('the settings the no-loss promise depends on stay consistent', () => {
  const policies: DeliveryPolicy[] = [
    DEFAULT_DELIVERY_POLICY,
    { ...DEFAULT_DELIVERY_POLICY, retryScheduleMs: [1000, 1000] },
    { ...DEFAULT_DELIVERY_POLICY, retryScheduleMs: Array.from({ length: 20 }, () => 86_400_000), disableAfterMs: 30 * 86_400_000 },
  ];
  it.each(policies.map((p, i) => [i, p] as const))('policy %i: attempts match the schedule; a failed job outlives every live delivery', (_i, policy) => {
    const opts = deliveryJobOptions(policy);
    expect(opts.attempts).toBe(policy.retryScheduleMs.length + 1);
    expect(opts.backoff).toMatchObject({ type: 'delivery' });
    // A delivery can be alive for its whole retry window plus the time its target may stay
    // failing before it is disabled; its failed job must not be trimmed before that.
    expect(ageMs(opts.removeOnFail)).toBeGreaterThanOrEqual(longestRetryWindowMs(policy) + policy.disableAfterMs);
    // Completed jobs are history only (trimming them is safe: test/ops-data/outbox-trimming.test.ts), kept bounded.
    expect(opts.removeOnComplete).toEqual(KEEP_COMPLETED_JOBS);
    expect(maxRetryAfterMs(policy)).toBe(Math.max(3_600_000, ...policy.retryScheduleMs));
    expect(policy.probeMaxIntervalMs).toBeGreaterThanOrEqual(policy.probeIntervalMs);
  });
});

describe('from the environment', () => {
  it('reads every variable', () => {
    expect(
      deliveryPolicyFromEnv({ WORKER_RETRY_SCHEDULE: '1s,2s,4s', TARGET_FAILURE_THRESHOLD: '3', TARGET_PROBE_INTERVAL: '500ms', TARGET_PROBE_MAX_INTERVAL: '2s', TARGET_DISABLE_AFTER: '1h' }),
    ).toEqual({ retryScheduleMs: [1000, 2000, 4000], failureThreshold: 3, probeIntervalMs: 500, probeMaxIntervalMs: 2000, disableAfterMs: 3_600_000 });
  });
  it.each([
    ['WORKER_RETRY_SCHEDULE', '5s,,1m'],
    ['WORKER_RETRY_SCHEDULE', '5'],
    ['TARGET_FAILURE_THRESHOLD', '0'],
    ['TARGET_PROBE_INTERVAL', 'soon'],
    ['TARGET_DISABLE_AFTER', '5 days'],
  ])('a bad %s (%s) is a ConfigError naming it', (name, value) => {
    expect(() => deliveryPolicyFromEnv({ [name]: value })).toThrow(ConfigError);
    expect(() => deliveryPolicyFromEnv({ [name]: value })).toThrow(new RegExp(`^${name}: `));
  });
});
