import { describe, expect, it } from 'vitest';
import { ConfigError } from '@connect/shared';
import { DEFAULT_WORKER_OPTIONS, workerOptionsFromEnv } from './worker-options.ts';

describe('workerOptionsFromEnv', () => {
  it('keeps the defaults when nothing is set', () => {
    expect(workerOptionsFromEnv({})).toEqual(DEFAULT_WORKER_OPTIONS);
    expect(DEFAULT_WORKER_OPTIONS.maxStalledCount).toBeGreaterThan(1);
  });

  it('reads the WORKER_* and TARGET_* variables', () => {
    const o = workerOptionsFromEnv({ WORKER_CONCURRENCY: '4', WORKER_LOCK_DURATION_MS: '2000', WORKER_STALLED_INTERVAL_MS: '1000', WORKER_RETRY_SCHEDULE: '1s,2s', TARGET_FAILURE_THRESHOLD: '3' });
    expect(o).toMatchObject({ concurrency: 4, lockDurationMs: 2000, stalledIntervalMs: 1000 });
    expect(o.policy).toMatchObject({ retryScheduleMs: [1000, 2000], failureThreshold: 3, probeIntervalMs: 30_000, disableAfterMs: 5 * 86_400_000 });
  });

  it.each(['abc', '0', '-1', '1.5'])('refuses %s with an error naming the variable', (v) => {
    expect(() => workerOptionsFromEnv({ WORKER_CONCURRENCY: v })).toThrow(ConfigError);
    expect(() => workerOptionsFromEnv({ WORKER_CONCURRENCY: v })).toThrow(/^WORKER_CONCURRENCY: /);
  });

  it('a bad WORKER_RETRY_SCHEDULE names the variable', () => {
    expect(() => workerOptionsFromEnv({ WORKER_RETRY_SCHEDULE: '5s,soon' })).toThrow(/^WORKER_RETRY_SCHEDULE: /);
  });
});
