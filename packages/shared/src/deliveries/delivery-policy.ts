import type { JobsOptions } from 'bullmq';
import { z } from 'zod';
import { envDuration, envDurationList, envInteger, parseEnv } from '../config.ts';
import { parseDurationList } from '../duration.ts';

/**
 * Everything the "no delivery is lost" promise depends on, in one place
 * (docs/delivery.md): how often and how long a delivery is retried, when a
 * target counts as failing or disabled, and how long BullMQ keeps a job. They
 * are derived from each other here so that changing one cannot silently break
 * another (delivery-policy.test.ts fails if they drift apart).
 */
export interface DeliveryPolicy {
  /** Waits between attempts (`WORKER_RETRY_SCHEDULE`): attempts = schedule.length + 1. */
  retryScheduleMs: readonly number[];
  /** Consecutive retryable failures that make a target `failing` (`TARGET_FAILURE_THRESHOLD`). */
  failureThreshold: number;
  /** First wait between probes of a failing target (`TARGET_PROBE_INTERVAL`); doubles each failed probe. */
  probeIntervalMs: number;
  /** The doubling stops here (`TARGET_PROBE_MAX_INTERVAL`, 10 min). */
  probeMaxIntervalMs: number;
  /** A target failing this long is `disabled` (`TARGET_DISABLE_AFTER`). */
  disableAfterMs: number;
}

export const DEFAULT_RETRY_SCHEDULE = '5s,1m,5m,30m,2h,5h,10h,10h';

export const DEFAULT_DELIVERY_POLICY: Readonly<DeliveryPolicy> = Object.freeze({
  retryScheduleMs: Object.freeze(parseDurationList(DEFAULT_RETRY_SCHEDULE)),
  failureThreshold: 5,
  probeIntervalMs: 30_000,
  probeMaxIntervalMs: 10 * 60_000,
  disableAfterMs: 5 * 86_400_000,
});

/** ±20 % on each wait, so deliveries that failed together do not all come back at the same instant. */
export const RETRY_JITTER = 0.2;

/** BullMQ's attempts for a delivery job: the first one plus one per wait. */
export function attemptsOf(policy: Pick<DeliveryPolicy, 'retryScheduleMs'>): number {
  return policy.retryScheduleMs.length + 1;
}

/** The longest a delivery can spend retrying while its target stays healthy (jitter at its maximum). */
export function longestRetryWindowMs(policy: Pick<DeliveryPolicy, 'retryScheduleMs'>): number {
  return Math.ceil(policy.retryScheduleMs.reduce((a, b) => a + b, 0) * (1 + RETRY_JITTER));
}

/** `Retry-After` is honoured up to at least this, whatever the schedule (a short test schedule included). */
const RETRY_AFTER_MIN_CAP_MS = 3_600_000;

/**
 * `Retry-After` is a floor on the next wait (and holds the whole target on a 429/503), capped at the
 * larger of the schedule's largest step and an hour, so a broken header cannot park a delivery for a
 * year while a receiver's honest request (seconds to hours) is met in full.
 */
export function maxRetryAfterMs(policy: Pick<DeliveryPolicy, 'retryScheduleMs'>): number {
  return Math.max(RETRY_AFTER_MIN_CAP_MS, ...policy.retryScheduleMs);
}

/**
 * The wait before attempt `attemptsMade + 1` (BullMQ passes attempts made so
 * far, ≥ 1): the schedule's step with ±20 % jitter; a receiver's Retry-After
 * wins when longer (capped).
 */
export function retryDelayMs(policy: Pick<DeliveryPolicy, 'retryScheduleMs'>, attemptsMade: number, retryAfterMs: number | null, random: () => number = Math.random): number {
  const schedule = policy.retryScheduleMs;
  const step = schedule[Math.min(Math.max(attemptsMade - 1, 0), schedule.length - 1)]!;
  const jittered = Math.round(step * (1 - RETRY_JITTER + random() * 2 * RETRY_JITTER));
  return retryAfterMs === null ? jittered : Math.max(Math.min(retryAfterMs, maxRetryAfterMs(policy)), jittered);
}

/**
 * The wait before a delivery that failed on our side (MongoDB down, most often) runs again: 1 s,
 * doubling with each such failure in a row, at most `capMs`, ±20 % jitter. It spends none of the
 * target's retry schedule: an outage of ours neither shortens the target's 28 hours nor pushes the
 * delivery's next try hours out (docs/delivery.md, Retries).
 */
export function internalRetryDelayMs(failuresInARow: number, capMs: number, random: () => number = Math.random): number {
  const step = Math.min(capMs, 1000 * 2 ** Math.min(Math.max(failuresInARow - 1, 0), 30));
  return Math.round(step * (1 - RETRY_JITTER + random() * 2 * RETRY_JITTER));
}

const DAY_S = 86_400;

/**
 * Finished jobs Redis keeps, per queue. Nothing depends on a finished job being
 * there (docs/operations.md, "Why trimming finished jobs loses no event and
 * publishes none twice"), so they are kept only as a dashboard's recent history:
 * completed jobs an hour and at most 1,000; failed ones at most 10,000. A soak
 * with the earlier day/100,000 limits grew Redis by about 6.7 MiB a minute.
 */
export const KEEP_COMPLETED_JOBS = { age: 3600, count: 1_000 } as const;
export const KEEP_FAILED_JOBS_COUNT = 10_000;

/**
 * BullMQ job options of every delivery job. Why the retention numbers:
 * - A failed job is only the dashboard's copy (the dead letter is the Delivery
 *   row in the database), but it is kept at least as long as a delivery can be
 *   alive (retry window + disable-after), and a week at least, so an operator
 *   looking at a recent dead letter still finds its job.
 * - A completed job is history only: a re-published event whose delivery job
 *   is gone is dropped by the processor's per-target version check.
 * - Held deliveries (target failing, paused, disabled) sit in wait/paused,
 *   which BullMQ never trims: nothing held is ever removed by retention.
 * - Both are capped by count as well, so Redis holds a bounded number of
 *   finished jobs whatever the traffic; trimming one loses nothing (the row is
 *   the record) and sends nothing twice (the version check).
 */
export function deliveryJobOptions(policy: DeliveryPolicy): JobsOptions {
  const aliveS = Math.ceil((longestRetryWindowMs(policy) + policy.disableAfterMs) / 1000);
  return {
    attempts: attemptsOf(policy),
    backoff: { type: DELIVERY_BACKOFF_TYPE },
    removeOnComplete: KEEP_COMPLETED_JOBS,
    removeOnFail: { age: Math.max(7 * DAY_S, aliveS), count: KEEP_FAILED_JOBS_COUNT },
    // BullMQ keeps a stack per failed attempt by default (9 here), each of our own code, in every
    // failed job it keeps: the last one tells as much, at a ninth of the size.
    stackTraceLimit: 1,
  };
}

/** The custom backoff type; the worker's `settings.backoffStrategy` computes it with `retryDelayMs`. */
export const DELIVERY_BACKOFF_TYPE = 'delivery';

type Env = Record<string, string | undefined>;

/** The delivery variables, for a process's schema (the worker's composes them with its own). */
export const deliveryPolicyEnvShape = {
  WORKER_RETRY_SCHEDULE: envDurationList(50),
  TARGET_FAILURE_THRESHOLD: envInteger(1, 10_000, DEFAULT_DELIVERY_POLICY.failureThreshold),
  TARGET_PROBE_INTERVAL: envDuration(),
  TARGET_PROBE_MAX_INTERVAL: envDuration(),
  TARGET_DISABLE_AFTER: envDuration(),
};

type DeliveryPolicyEnv = z.output<z.ZodObject<typeof deliveryPolicyEnvShape>>;

/**
 * The check across the delivery variables (probes never back off below their
 * first interval); attached with `when` so it runs even when another variable
 * is bad, hence the defensive reading of the raw values.
 */
export function checkDeliveryPolicyEnv(env: Record<string, unknown>, ctx: z.RefinementCtx): void {
  // Only a maximum that was set can be too short: an unset one follows the interval (deliveryPolicyOf).
  const probe = typeof env.TARGET_PROBE_INTERVAL === 'number' ? env.TARGET_PROBE_INTERVAL : DEFAULT_DELIVERY_POLICY.probeIntervalMs;
  const max = typeof env.TARGET_PROBE_MAX_INTERVAL === 'number' ? env.TARGET_PROBE_MAX_INTERVAL : undefined;
  if (max !== undefined && max < probe) {
    const of = typeof env.TARGET_PROBE_INTERVAL === 'number' ? 'TARGET_PROBE_INTERVAL' : `TARGET_PROBE_INTERVAL (unset: ${probe / 1000}s)`;
    ctx.addIssue({ code: 'custom', path: ['TARGET_PROBE_MAX_INTERVAL'], message: `must not be shorter than ${of}` });
  }
}

/** The parsed delivery variables as a policy; an unset probe maximum is never below the probe interval. */
export function deliveryPolicyOf(env: DeliveryPolicyEnv): DeliveryPolicy {
  const probeIntervalMs = env.TARGET_PROBE_INTERVAL ?? DEFAULT_DELIVERY_POLICY.probeIntervalMs;
  return {
    retryScheduleMs: env.WORKER_RETRY_SCHEDULE ?? DEFAULT_DELIVERY_POLICY.retryScheduleMs,
    failureThreshold: env.TARGET_FAILURE_THRESHOLD,
    probeIntervalMs,
    probeMaxIntervalMs: env.TARGET_PROBE_MAX_INTERVAL ?? Math.max(DEFAULT_DELIVERY_POLICY.probeMaxIntervalMs, probeIntervalMs),
    disableAfterMs: env.TARGET_DISABLE_AFTER ?? DEFAULT_DELIVERY_POLICY.disableAfterMs,
  };
}

const deliveryPolicySchema = z
  .object(deliveryPolicyEnvShape)
  .superRefine((env, ctx) => checkDeliveryPolicyEnv(env, ctx), { when: () => true })
  .transform(deliveryPolicyOf);

/**
 * The delivery settings from the environment; bad values throw one ConfigError
 * naming every bad variable (the worker prints one line each and stops).
 */
export function deliveryPolicyFromEnv(env: Env = process.env): DeliveryPolicy {
  return parseEnv(deliveryPolicySchema, env);
}
