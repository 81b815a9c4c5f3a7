import type { JobsOptions } from 'bullmq';
import { ConfigError } from '../config.ts';
import { parseDuration, parseDurationList } from '../duration.ts';

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

/** `Retry-After` is a floor on the next wait, capped at the largest step so a broken header cannot park a delivery for a year. */
export function maxRetryAfterMs(policy: Pick<DeliveryPolicy, 'retryScheduleMs'>): number {
  return Math.max(...policy.retryScheduleMs);
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

const DAY_S = 86_400;

/**
 * BullMQ job options of every delivery job. Why the retention numbers:
 * - A failed job is only the dashboard's copy (the dead letter is the Delivery
 *   row in the database), but it is kept at least as long as a delivery can be
 *   alive (retry window + disable-after), and a week at least, so an operator
 *   looking at a dead letter still finds its job.
 * - A completed job id is kept a day so a re-published event id is deduped by
 *   BullMQ; past that the processor's per-target version check drops it.
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
    removeOnComplete: { age: DAY_S, count: 100_000 },
    removeOnFail: { age: Math.max(7 * DAY_S, aliveS), count: 100_000 },
  };
}

/** The custom backoff type; the worker's `settings.backoffStrategy` computes it with `retryDelayMs`. */
export const DELIVERY_BACKOFF_TYPE = 'delivery';

type Env = Record<string, string | undefined>;

function duration(env: Env, name: string, fallback: number): number {
  const raw = env[name]?.trim();
  if (!raw) return fallback;
  try {
    return parseDuration(raw);
  } catch (err) {
    throw new ConfigError(name, (err as Error).message);
  }
}

/**
 * The delivery settings from the environment; a bad value throws a ConfigError
 * naming the variable (the worker prints it as one line and stops).
 */
export function deliveryPolicyFromEnv(env: Env = process.env): DeliveryPolicy {
  const policy: DeliveryPolicy = { ...DEFAULT_DELIVERY_POLICY };
  const schedule = env.WORKER_RETRY_SCHEDULE?.trim();
  if (schedule) {
    try {
      policy.retryScheduleMs = parseDurationList(schedule);
    } catch (err) {
      throw new ConfigError('WORKER_RETRY_SCHEDULE', (err as Error).message);
    }
    if (policy.retryScheduleMs.length > 50) throw new ConfigError('WORKER_RETRY_SCHEDULE', 'at most 50 waits');
  }
  const threshold = env.TARGET_FAILURE_THRESHOLD?.trim();
  if (threshold) {
    if (!/^\d+$/.test(threshold) || Number(threshold) < 1 || Number(threshold) > 10_000) {
      throw new ConfigError('TARGET_FAILURE_THRESHOLD', `must be a whole number from 1 to 10000, got "${threshold}"`);
    }
    policy.failureThreshold = Number(threshold);
  }
  policy.probeIntervalMs = duration(env, 'TARGET_PROBE_INTERVAL', policy.probeIntervalMs);
  policy.probeMaxIntervalMs = duration(env, 'TARGET_PROBE_MAX_INTERVAL', Math.max(policy.probeMaxIntervalMs, policy.probeIntervalMs));
  if (policy.probeMaxIntervalMs < policy.probeIntervalMs) throw new ConfigError('TARGET_PROBE_MAX_INTERVAL', 'must not be shorter than TARGET_PROBE_INTERVAL');
  policy.disableAfterMs = duration(env, 'TARGET_DISABLE_AFTER', policy.disableAfterMs);
  return policy;
}
