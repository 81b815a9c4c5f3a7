import { describe, expect, it } from 'vitest';
import { ConfigError } from '@connect/shared';
import { DEFAULT_WORKER_OPTIONS, workerOptionsFromEnv } from './worker-options.ts';

describe('workerOptionsFromEnv', () => {
  it('keeps the defaults when nothing is set', () => {
    expect(workerOptionsFromEnv({})).toEqual(DEFAULT_WORKER_OPTIONS);
    expect(DEFAULT_WORKER_OPTIONS.maxStalledCount).toBeGreaterThan(1);
  });

  it('reads the WORKER_* variables', () => {
    const o = workerOptionsFromEnv({ WORKER_CONCURRENCY: '4', WORKER_LOCK_DURATION_MS: '2000', WORKER_STALLED_INTERVAL_MS: '1000', WORKER_DELIVERY_ATTEMPTS: '3' });
    expect(o).toMatchObject({ concurrency: 4, lockDurationMs: 2000, stalledIntervalMs: 1000, attempts: 3, backoffBaseMs: DEFAULT_WORKER_OPTIONS.backoffBaseMs });
  });

  it.each(['abc', '0', '-1', '1.5'])('refuses %s with an error naming the variable', (v) => {
    expect(() => workerOptionsFromEnv({ WORKER_BACKOFF_BASE_MS: v })).toThrow(ConfigError);
    expect(() => workerOptionsFromEnv({ WORKER_BACKOFF_BASE_MS: v })).toThrow(/^WORKER_BACKOFF_BASE_MS: /);
  });
});
