import { z } from 'zod';
import { workerHealthEnvShape } from './health-server.ts';
import { checkDeliveryPolicyEnv, DEFAULT_DELIVERY_POLICY, deliveryPolicyEnvShape, deliveryPolicyOf, envDecimal, envInteger, parseEnv, type DeliveryPolicy, type ReferenceClockOptions } from '@connect/shared';

/** Tunables of the worker process. Defaults suit production; tests shorten the delays. */
export interface WorkerOptions {
  /** The reference clock's measurement (tests skew this machine's clock with `local`). */
  clock?: ReferenceClockOptions;
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
  /** How long a fan-out that used up its attempts, or a delivery whose last attempt failed on our side, waits before it tries again (neither gives up). */
  fanOutParkMs: number;
  /** The longest a held target's workers sleep before they ask Redis whether the hold was lifted (BullMQ's maximumRateLimitDelay). */
  healthPollMs: number;
  /** How often MongoDB and Redis are asked whether they answer, for the log (datastore-watch.ts); as long an ask waits. */
  datastoreWatchMs: number;
  /** Port of the worker's GET /metrics listener; 0: none. */
  metricsPort: number;
  /** DELIVERY_RETENTION_DAYS (default 30), in ms: finished deliveries older than this are purged. */
  deliveryRetentionMs: number;
  /** WORKER_PURGE_INTERVAL_MS: how often one worker (across all) runs the retention purge. */
  purgeIntervalMs: number;
  /** WORKER_HEALTH_PORT: port of GET /healthz; undefined: none. */
  healthPort?: number | undefined;
  /** How long a BullMQ blocking connection may sit accepted but unanswered before it is dropped and made again (blocking-connections.ts). */
  blockingStuckMs: number;
  /** How often this worker renews its fan-out roster entry and decides whether it may fan out (fan-out-roster.ts); undefined: 5 s. */
  rosterIntervalMs?: number;
  /** How long a roster entry outlives its last renewal (a worker killed); undefined: 20 s. */
  rosterTtlMs?: number;
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
  // With the steps after it and up to 2 s of log, the whole stop fits Kubernetes' default
  // terminationGracePeriodSeconds (30 s) before its SIGKILL.
  shutdownGraceMs: 25_000,
  fanOutParkMs: 60_000,
  healthPollMs: 1000,
  datastoreWatchMs: 5000,
  metricsPort: 0,
  deliveryRetentionMs: 30 * 86_400_000,
  purgeIntervalMs: 10 * 60_000,
  blockingStuckMs: 30_000,
});

/** Limit of the WORKER_* millisecond variables (a day). */
const MAX = 86_400_000;
/** Deliveries in flight per target per process: each holds a socket and a database write or two. */
const MAX_CONCURRENCY = 1000;
/** One second, in days: the shortest DELIVERY_RETENTION_DAYS. */
const MIN_RETENTION_DAYS = 0.0000116;

/**
 * The worker's own variables, with the delivery ones (`deliveryPolicyEnvShape`),
 * in one zod schema: a bad configuration lists every bad variable at once.
 */
export const workerEnvShape = {
  ...deliveryPolicyEnvShape,
  ...workerHealthEnvShape,
  WORKER_CONCURRENCY: envInteger(1, MAX_CONCURRENCY, DEFAULT_WORKER_OPTIONS.concurrency),
  WORKER_SWEEP_INTERVAL_MS: envInteger(1, MAX, DEFAULT_WORKER_OPTIONS.sweepIntervalMs),
  WORKER_LOCK_DURATION_MS: envInteger(1, MAX, DEFAULT_WORKER_OPTIONS.lockDurationMs),
  WORKER_STALLED_INTERVAL_MS: envInteger(1, MAX, DEFAULT_WORKER_OPTIONS.stalledIntervalMs),
  WORKER_SHUTDOWN_GRACE_MS: envInteger(1, MAX, DEFAULT_WORKER_OPTIONS.shutdownGraceMs),
  WORKER_METRICS_PORT: envInteger(1, 65535, DEFAULT_WORKER_OPTIONS.metricsPort),
  // At least a second: below, the purge ran back to back, a delete loop on the database.
  WORKER_PURGE_INTERVAL_MS: envInteger(1000, MAX, DEFAULT_WORKER_OPTIONS.purgeIntervalMs),
  // Days, decimals allowed (a soak or a test shortens it to minutes: 0.01 is about 14 min), and at
  // least a second once in ms: 0.000000001 was taken as "above 0" and became 0 ms.
  DELIVERY_RETENTION_DAYS: envDecimal(0, 3650, 'days', DEFAULT_WORKER_OPTIONS.deliveryRetentionMs / 86_400_000).refine((days) => days >= MIN_RETENTION_DAYS, {
    error: (iss) => `must be at least ${MIN_RETENTION_DAYS} days (one second), got ${String(iss.input)}`,
  }),
};

const workerOptionsSchema = z
  .object(workerEnvShape)
  .superRefine((env, ctx) => checkDeliveryPolicyEnv(env, ctx), { when: () => true })
  .transform(
    (env): WorkerOptions => ({
      ...DEFAULT_WORKER_OPTIONS,
      policy: deliveryPolicyOf(env),
      concurrency: env.WORKER_CONCURRENCY,
      sweepIntervalMs: env.WORKER_SWEEP_INTERVAL_MS,
      lockDurationMs: env.WORKER_LOCK_DURATION_MS,
      stalledIntervalMs: env.WORKER_STALLED_INTERVAL_MS,
      shutdownGraceMs: env.WORKER_SHUTDOWN_GRACE_MS,
      metricsPort: env.WORKER_METRICS_PORT,
      purgeIntervalMs: env.WORKER_PURGE_INTERVAL_MS,
      deliveryRetentionMs: Math.round(env.DELIVERY_RETENTION_DAYS * 86_400_000),
      ...(env.WORKER_HEALTH_PORT === undefined ? {} : { healthPort: env.WORKER_HEALTH_PORT }),
    }),
  );

/** Variables that no longer do anything (the retry schedule replaced them); the worker warns when it sees one. */
export const REMOVED_WORKER_VARIABLES = ['WORKER_DELIVERY_ATTEMPTS', 'WORKER_BACKOFF_BASE_MS', 'WORKER_BACKOFF_MAX_MS'] as const;

/** Optional WORKER_* and TARGET_* variables; bad ones throw one ConfigError naming each. */
export function workerOptionsFromEnv(env: Record<string, string | undefined> = process.env): WorkerOptions {
  return parseEnv(workerOptionsSchema, env);
}
