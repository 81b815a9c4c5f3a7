import { ConfigError, DEFAULT_DELIVERY_POLICY, deliveryPolicyFromEnv, type DeliveryPolicy } from '@connect/shared';

/** Tunables of the worker process. Defaults suit production; tests shorten the delays. */
export interface WorkerOptions {
  /**
   * Deliveries run at once per target and per process (each target has its own
   * queue and worker): a slow target holds at most this many slots, its own.
   */
  concurrency: number;
  fanOutConcurrency: number;
  /** Retry schedule, failure threshold, probe and disable timings (docs/delivery.md). */
  policy: DeliveryPolicy;
  sweepIntervalMs: number;
  sweepBatchSize: number;
  /**
   * A job whose worker died is retried once its lock expires (`lockDurationMs`)
   * and a stalled check runs (`stalledIntervalMs`). `maxStalledCount` is raised
   * from BullMQ's 1: a delivery must survive several crashed workers, not fail.
   */
  lockDurationMs: number;
  stalledIntervalMs: number;
  maxStalledCount: number;
  shutdownGraceMs: number;
  /** How long a fan-out that used up its attempts waits before it tries again (it never gives up). */
  fanOutParkMs: number;
  /** How often each process looks whether a held target was released by another process. */
  healthPollMs: number;
  /** Port of the worker's GET /metrics listener; 0: none. */
  metricsPort: number;
  /** DELIVERY_RETENTION_DAYS (default 30), in ms: finished deliveries older than this are purged. */
  deliveryRetentionMs: number;
  /** WORKER_PURGE_INTERVAL_MS: how often one worker (across all) runs the retention purge. */
  purgeIntervalMs: number;
}

export const DEFAULT_WORKER_OPTIONS: Readonly<WorkerOptions> = Object.freeze({
  concurrency: 32,
  fanOutConcurrency: 8,
  policy: DEFAULT_DELIVERY_POLICY,
  sweepIntervalMs: 5000,
  sweepBatchSize: 500,
  lockDurationMs: 30_000,
  stalledIntervalMs: 30_000,
  maxStalledCount: 5,
  shutdownGraceMs: 30_000,
  fanOutParkMs: 60_000,
  healthPollMs: 1000,
  metricsPort: 0,
  deliveryRetentionMs: 30 * 86_400_000,
  purgeIntervalMs: 10 * 60_000,
});

type NumericOption = { [K in keyof WorkerOptions]: WorkerOptions[K] extends number ? K : never }[keyof WorkerOptions];

const ENV: Record<string, NumericOption> = {
  WORKER_CONCURRENCY: 'concurrency',
  WORKER_SWEEP_INTERVAL_MS: 'sweepIntervalMs',
  WORKER_LOCK_DURATION_MS: 'lockDurationMs',
  WORKER_STALLED_INTERVAL_MS: 'stalledIntervalMs',
  WORKER_SHUTDOWN_GRACE_MS: 'shutdownGraceMs',
  WORKER_METRICS_PORT: 'metricsPort',
  WORKER_PURGE_INTERVAL_MS: 'purgeIntervalMs',
};

/** Variables that no longer do anything (the retry schedule replaced them); the worker warns when it sees one. */
export const REMOVED_WORKER_VARIABLES = ['WORKER_DELIVERY_ATTEMPTS', 'WORKER_BACKOFF_BASE_MS', 'WORKER_BACKOFF_MAX_MS'] as const;

/** Optional WORKER_* and TARGET_* variables; a bad one throws a ConfigError naming it. */
export function workerOptionsFromEnv(env: Record<string, string | undefined> = process.env): WorkerOptions {
  const options: WorkerOptions = { ...DEFAULT_WORKER_OPTIONS, policy: deliveryPolicyFromEnv(env) };
  for (const [name, key] of Object.entries(ENV)) {
    const raw = env[name]?.trim();
    if (!raw) continue;
    if (!/^\d+$/.test(raw) || Number(raw) < 1 || Number(raw) > 86_400_000) throw new ConfigError(name, `must be a whole number from 1 to 86400000, got "${raw}"`);
    options[key] = Number(raw);
  }
  // Days, decimals allowed (a soak or a test shortens it to minutes: 0.01 is about 14 min).
  const retention = env.DELIVERY_RETENTION_DAYS?.trim();
  if (retention) {
    if (!/^\d+(\.\d+)?$/.test(retention) || Number(retention) <= 0 || Number(retention) > 3650) {
      throw new ConfigError('DELIVERY_RETENTION_DAYS', `must be a number of days above 0, at most 3650, got "${retention}"`);
    }
    options.deliveryRetentionMs = Math.round(Number(retention) * 86_400_000);
  }
  return options;
}
