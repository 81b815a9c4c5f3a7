import { describe, expect, it } from 'vitest';
import { ConfigError } from '@connect/shared';
import { DEFAULT_WORKER_OPTIONS, workerOptionsFromEnv } from './worker-options.ts';

describe('workerOptionsFromEnv', () => {
  it('keeps the defaults when nothing is set', () => {
    expect(workerOptionsFromEnv({})).toEqual(DEFAULT_WORKER_OPTIONS);
    expect(DEFAULT_WORKER_OPTIONS.maxStalledCount).toBeGreaterThan(1);
  });

  it('from an empty environment the delivery policy is SPEC §2\'s, written out: threshold 5, probes every 30 s doubling to 10 min, disabled after 5 d, retries 5s,1m,5m,30m,2h,5h,10h,10h', () => {
    const { policy } = workerOptionsFromEnv({});
    expect(policy.failureThreshold).toBe(5);
    expect(policy.probeIntervalMs).toBe(30_000);
    expect(policy.probeMaxIntervalMs).toBe(600_000);
    expect(policy.disableAfterMs).toBe(432_000_000);
    expect(policy.retryScheduleMs).toEqual([5_000, 60_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000]);
  });

  it('the default shutdown grace, with up to 2 s of log after it, fits Kubernetes\' default 30 s before its SIGKILL', () => {
    expect(DEFAULT_WORKER_OPTIONS.shutdownGraceMs).toBe(25_000);
    expect(DEFAULT_WORKER_OPTIONS.shutdownGraceMs + 2_000).toBeLessThan(30_000);
  });

  it('reads the WORKER_* and TARGET_* variables', () => {
    const o = workerOptionsFromEnv({ WORKER_CONCURRENCY: '4', WORKER_LOCK_DURATION_MS: '2000', WORKER_STALLED_INTERVAL_MS: '1000', WORKER_RETRY_SCHEDULE: '1s,2s', TARGET_FAILURE_THRESHOLD: '3' });
    expect(o).toMatchObject({ concurrency: 4, lockDurationMs: 2000, stalledIntervalMs: 1000 });
    expect(o.healthPort).toBeUndefined();
    expect(workerOptionsFromEnv({ WORKER_HEALTH_PORT: '8081' }).healthPort).toBe(8081);
    expect(o.policy).toMatchObject({ retryScheduleMs: [1000, 2000], failureThreshold: 3, probeIntervalMs: 30_000, disableAfterMs: 5 * 86_400_000 });
  });

  it.each(['abc', '0', '-1', '1.5'])('refuses %s with an error naming the variable', (v) => {
    expect(() => workerOptionsFromEnv({ WORKER_CONCURRENCY: v })).toThrow(ConfigError);
    expect(() => workerOptionsFromEnv({ WORKER_CONCURRENCY: v })).toThrow(/^WORKER_CONCURRENCY: /);
  });

  it('WORKER_CONCURRENCY is from 1 to 1000 (it took the millisecond bound, 86400000), and the error says so', () => {
    expect(workerOptionsFromEnv({ WORKER_CONCURRENCY: '1000' }).concurrency).toBe(1000);
    for (const bad of ['1001', '86400000']) expect(() => workerOptionsFromEnv({ WORKER_CONCURRENCY: bad })).toThrow(`WORKER_CONCURRENCY: must be a whole number from 1 to 1000, got ${bad}`);
  });

  it('WORKER_METRICS_PORT is a port (1 to 65535), refused before anything starts', () => {
    expect(workerOptionsFromEnv({ WORKER_METRICS_PORT: '9465' }).metricsPort).toBe(9465);
    for (const bad of ['0', '70000', 'nine']) expect(() => workerOptionsFromEnv({ WORKER_METRICS_PORT: bad })).toThrow(/^WORKER_METRICS_PORT: must be a whole number from 1 to 65535/);
  });

  it('TARGET_PROBE_MAX_INTERVAL below the interval is refused, the default interval (30 s) included', () => {
    expect(() => workerOptionsFromEnv({ TARGET_PROBE_MAX_INTERVAL: '1s' })).toThrow(/^TARGET_PROBE_MAX_INTERVAL: must not be shorter than TARGET_PROBE_INTERVAL \(unset: 30s\)/);
    expect(workerOptionsFromEnv({ TARGET_PROBE_MAX_INTERVAL: '1m' }).policy.probeMaxIntervalMs).toBe(60_000);
    // An unset maximum follows a longer interval instead of being refused.
    expect(workerOptionsFromEnv({ TARGET_PROBE_INTERVAL: '20m' }).policy.probeMaxIntervalMs).toBe(1_200_000);
  });

  it('a bad WORKER_RETRY_SCHEDULE names the variable', () => {
    expect(() => workerOptionsFromEnv({ WORKER_RETRY_SCHEDULE: '5s,soon' })).toThrow(/^WORKER_RETRY_SCHEDULE: /);
  });

  it('reads DELIVERY_RETENTION_DAYS (default 30) in days, decimals allowed, and refuses nonsense naming it', () => {
    expect(workerOptionsFromEnv({}).deliveryRetentionMs).toBe(30 * 86_400_000);
    expect(workerOptionsFromEnv({ DELIVERY_RETENTION_DAYS: '7' }).deliveryRetentionMs).toBe(7 * 86_400_000);
    expect(workerOptionsFromEnv({ DELIVERY_RETENTION_DAYS: '0.5' }).deliveryRetentionMs).toBe(43_200_000);
    for (const bad of ['0', '-3', 'a week', '4000']) {
      expect(() => workerOptionsFromEnv({ DELIVERY_RETENTION_DAYS: bad })).toThrow(/^DELIVERY_RETENTION_DAYS: /);
    }
    // "Above 0" once in ms too: these became 0 ms and 864 ms, a purge of rows as fast as they were written.
    for (const tiny of ['0.000000001', '0.00001']) {
      expect(() => workerOptionsFromEnv({ DELIVERY_RETENTION_DAYS: tiny })).toThrow(/^DELIVERY_RETENTION_DAYS: must be at least 0.0000116 days \(one second\)/);
    }
    expect(workerOptionsFromEnv({ DELIVERY_RETENTION_DAYS: '0.0000116' }).deliveryRetentionMs).toBe(1002);
  });

  it('WORKER_PURGE_INTERVAL_MS is at least a second (1 ms ran the purge back to back)', () => {
    expect(() => workerOptionsFromEnv({ WORKER_PURGE_INTERVAL_MS: '1' })).toThrow(/^WORKER_PURGE_INTERVAL_MS: /);
    expect(workerOptionsFromEnv({ WORKER_PURGE_INTERVAL_MS: '1000' }).purgeIntervalMs).toBe(1000);
  });

  it('lists every bad variable at once, one problem each, the cross check included', () => {
    let error: unknown;
    try {
      workerOptionsFromEnv({ WORKER_CONCURRENCY: '0', WORKER_RETRY_SCHEDULE: 'soon', DELIVERY_RETENTION_DAYS: '-1', TARGET_PROBE_INTERVAL: '1m', TARGET_PROBE_MAX_INTERVAL: '10s', WORKER_HEALTH_PORT: 'eighty' });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).problems.map((p) => p.variable).sort()).toEqual(['DELIVERY_RETENTION_DAYS', 'TARGET_PROBE_MAX_INTERVAL', 'WORKER_CONCURRENCY', 'WORKER_HEALTH_PORT', 'WORKER_RETRY_SCHEDULE']);
  });
});
