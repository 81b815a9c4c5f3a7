import { Queue, type Job, type JobsOptions } from 'bullmq';
import { z } from 'zod';
import { DELIVERIES_QUEUE } from '../events/queues.ts';
import type { RedisClient } from '../events/redis-connection.ts';
import { LuaScript } from '../events/lua-script.ts';
import { userEventTypeSchema, type UserEvent, type UserEventJob } from '../events/user-event.ts';
import { deliveryJobOptions, DEFAULT_DELIVERY_POLICY, type DeliveryPolicy } from './delivery-policy.ts';

/**
 * One BullMQ queue per target (`deliveries.<target>`), each with its own
 * worker and concurrency: a slow or failing target fills its own slots, never
 * another's, and BullMQ's queue-wide controls (pause, rate limit) become
 * per-target holds shared by every worker process. See docs/delivery.md.
 */
export function deliveryQueueName(target: string): string {
  return `${DELIVERIES_QUEUE}.${target}`;
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

const userEventSchema = z.object({
  id: z.string().min(1),
  type: userEventTypeSchema,
  occurred_at: z.string(),
  organization_id: z.string(),
  version: z.number().int().min(1),
  // The user as the API shows it: carried through to the callback body untouched, so only the
  // key deliveries are routed and logged by is checked (the API validated the rest when it wrote it).
  data: z.custom<UserEvent['data']>((v) => isRecord(v) && typeof v.external_provider_id === 'string', { message: 'data.external_provider_id must be a string' }),
});

/** One delivery: a user's event for one target. The creation event rides along (user.created first). */
export const deliveryJobSchema = z.object({
  user_id: z.string().regex(/^[0-9a-f]{24}$/),
  target: z.string().min(1),
  event: userEventSchema,
  created: userEventSchema,
  force: z.boolean().optional(),
  force_created_sent: z.boolean().optional(),
  internal_failures: z.number().int().min(0).optional(),
});
export interface DeliveryJob {
  user_id: string;
  target: string;
  event: UserEvent;
  created: UserEvent;
  /** `targets resync --force`: the newest event even if the target answered 2xx to it already. */
  force?: boolean;
  /** A forced job's earlier run got user.created through: its retries send the rest only. */
  force_created_sent?: boolean;
  /** Runs in a row that failed on our side (internalRetryDelayMs). */
  internal_failures?: number;
}

/** The events queue's job (user-events), as the fan-out reads it. */
export const userEventJobSchema = z.object({ user_id: deliveryJobSchema.shape.user_id, event: userEventSchema, created: userEventSchema });
export function parseUserEventJob(data: unknown): UserEventJob {
  return userEventJobSchema.parse(data);
}

/** A job's payload as the worker reads it: validated, so a malformed job fails loudly instead of sending garbage. */
export function parseDeliveryJob(data: unknown): DeliveryJob {
  return deliveryJobSchema.parse(data);
}

/** The id of a Delivery row, and of the delivery job for an event (BullMQ job ids may not contain ':'). */
export function deliveryIdOf(eventId: string, target: string): string {
  return `${eventId}.${target}`;
}

export function createDeliveryQueue(connection: RedisClient, prefix: string, target: string, policy: DeliveryPolicy = DEFAULT_DELIVERY_POLICY): Queue<DeliveryJob> {
  return new Queue<DeliveryJob>(deliveryQueueName(target), { connection, prefix, defaultJobOptions: deliveryJobOptions(policy) });
}

/** The queues of the configured targets, by target name. */
export class DeliveryQueues {
  readonly byTarget: ReadonlyMap<string, Queue<DeliveryJob>>;

  constructor(connection: RedisClient, prefix: string, targets: readonly { name: string }[], policy: DeliveryPolicy = DEFAULT_DELIVERY_POLICY) {
    this.byTarget = new Map(targets.map((t) => [t.name, createDeliveryQueue(connection, prefix, t.name, policy)]));
  }

  get(target: string): Queue<DeliveryJob> | undefined {
    return this.byTarget.get(target);
  }

  all(): Queue<DeliveryJob>[] {
    return [...this.byTarget.values()];
  }

  /**
   * Adds a delivery, deduplicated per (user, target): BullMQ keeps at most one
   * active and one waiting job per key (`keepLastIfActive`), the waiting one
   * carrying the newest data. So two deliveries for one user and target never
   * run at the same time, which is what keeps a target from seeing versions out
   * of order when several workers run. A job waiting, or waiting out a retry
   * delay, swallows the newer one; that is safe because the processor sends the
   * user's newest event from the database, not the event the job was created
   * for. A retry is not brought forward by a newer change (no `replace`): the
   * delivery that failed keeps its schedule, and the newest version goes out
   * right after it (docs/delivery.md, Retries).
   */
  async enqueue(job: DeliveryJob, jobId: string = deliveryIdOf(job.event.id, job.target)): Promise<void> {
    const queue = this.queueOf(job.target);
    const add = { name: job.event.type, data: job, opts: dedupOptions(job, jobId) };
    await liftFoldedIntoResync(queue, await addAgainWhereDangling(queue, [add], [await queue.add(add.name, add.data, add.opts)]));
  }

  /**
   * Several at once, one round trip per target; each job deduplicated as `enqueue` does. Answers,
   * in the jobs' order, whether each went into a job already there for its (user, target): BullMQ
   * then answers that job's id (one waiting took it in, or it is kept for after one running).
   */
  async enqueueMany(jobs: readonly DeliveryJob[], priorities: readonly number[] = []): Promise<boolean[]> {
    const folded = jobs.map(() => false);
    const byTarget = new Map<string, number[]>();
    jobs.forEach((j, i) => byTarget.set(j.target, [...(byTarget.get(j.target) ?? []), i]));
    await Promise.all(
      [...byTarget].map(async ([target, indexes]) => {
        const queue = this.queueOf(target);
        const list = indexes.map((i) => ({ job: jobs[i]!, jobId: deliveryIdOf(jobs[i]!.event.id, target), priority: priorities[i] ?? 0 }));
        // A bulk organization's event keeps its priority here (org-pace.ts): its deliveries go after other organizations'.
        const adds = list.map(({ job, jobId, priority }) => ({ name: job.event.type, data: job, opts: { ...dedupOptions(job, jobId), ...(priority > 0 ? { priority } : {}) } }));
        const added = await addAgainWhereDangling(queue, adds, await queue.addBulk(adds));
        added.forEach((a, k) => (folded[indexes[k]!] = a.id !== list[k]!.jobId));
        await liftFoldedIntoResync(queue, added, adds.map((a) => a.opts.priority ?? 0));
      }),
    );
    return folded;
  }

  /**
   * Resync's jobs: their own ids and extra options (a priority below live deliveries). Deduplicated
   * like the others, except that one never becomes the job kept for after a running delivery
   * (`keepLastIfActive`): BullMQ keeps only the last such add, so it would replace a live change
   * waiting there, which would then go out at the resync's priority, behind its whole backlog. A
   * user whose delivery is running is left to it: that run sends the newest state it read, and a
   * change after that is the live job waiting behind it (a forced run adds again once that run is
   * over: resync-target.ts, forceAgainPastRunning). Answers, in the jobs' order, the id of the
   * job each add went into instead of its own, if it did.
   */
  async enqueueWith(target: string, jobs: readonly { job: DeliveryJob; jobId: string }[], extra: JobsOptions): Promise<(string | undefined)[]> {
    const queue = this.queueOf(target);
    const adds = jobs.map(({ job, jobId }) => ({ name: job.event.type, data: job, opts: { ...dedupOptions(job, jobId, { keepLastIfActive: false }), ...extra } }));
    const added = await addAgainWhereDangling(queue, adds, await queue.addBulk(adds));
    return added.map((a, i) => (a.id !== jobs[i]!.jobId ? a.id : undefined));
  }

  /**
   * Whether the job no longer waits (waiting, held, delayed for a retry), so that a change made
   * now may not be seen by its run: it is running, or done, or gone.
   */
  async noLongerWaits(target: string, jobId: string): Promise<boolean> {
    return !['waiting', 'prioritized', 'delayed', 'paused', 'waiting-children'].includes(await this.queueOf(target).getJobState(jobId));
  }

  /** Whether the job is running now. */
  async isRunning(target: string, jobId: string): Promise<boolean> {
    return (await this.queueOf(target).getJobState(jobId)) === 'active';
  }

  /** Prioritized jobs waiting for the target: a resync's, and a bulk organization's (which a resync then waits behind). */
  async waitingAtLowPriority(target: string): Promise<number> {
    const { prioritized = 0 } = await this.queueOf(target).getJobCounts('prioritized');
    return prioritized;
  }

  /** Jobs not finished yet (waiting, held, delayed, running): what the target still has to receive. */
  async backlog(target: string): Promise<number> {
    const counts = await this.queueOf(target).getJobCounts('wait', 'paused', 'delayed', 'prioritized', 'active', 'waiting-children');
    return Object.values(counts).reduce((a, b) => a + b, 0);
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.all().map((q) => q.close()));
  }

  private queueOf(target: string): Queue<DeliveryJob> {
    const q = this.byTarget.get(target);
    if (!q) throw new Error(`target ${target} is not configured`);
    return q;
  }
}

/**
 * A live delivery that BullMQ folded into a waiting resync job (the add returns that job's id)
 * would wait at the resync's low priority, behind the whole resync backlog. Resync promises
 * live events first, so the job it folded into is lifted to a live job's priority. A job that
 * started meanwhile only gets the field set (BullMQ's changePriority moves only waiting jobs).
 * Costs a read only when an add folded into a resync job.
 */
async function liftFoldedIntoResync(queue: Queue<DeliveryJob>, added: readonly Job<DeliveryJob>[], priorities: readonly number[] = []): Promise<void> {
  // To the priority the live add asked for: none, or a bulk organization's (org-pace.ts), which
  // would otherwise jump ahead of that organization's own changes queued before it.
  const folded = added.map((j, i) => ({ id: j.id, priority: priorities[i] ?? 0 })).filter((j) => j.id?.startsWith(RESYNC_JOB_ID_PREFIX));
  // Best effort: a job that finished or went away meanwhile needs no lift, and the add itself succeeded.
  await Promise.all(
    folded.map((f) =>
      queue
        .getJob(f.id!)
        .then((job) => (job && job.priority > f.priority ? job.changePriority({ priority: f.priority }) : undefined))
        .catch(() => undefined),
    ),
  );
}

/**
 * Adds that went into the job a (user, target)'s deduplication key names, where Redis no longer
 * holds that job: a Redis run with a `maxmemory-policy` other than `noeviction` evicted its hash and
 * kept the key, which has no expiry. The key then took in every later add for the pair, live
 * changes, resyncs and repairs alike, and the target never heard of the user again (a resource
 * audit: 161 of 200 users, with the target healthy). Such a key is removed and the add made again.
 * Costs one read per add that went into another job, nothing for the others.
 */
async function addAgainWhereDangling(queue: Queue<DeliveryJob>, adds: readonly { name: string; data: DeliveryJob; opts: JobsOptions }[], added: Job<DeliveryJob>[]): Promise<Job<DeliveryJob>[]> {
  const folded = adds.map((a, i) => i).filter((i) => added[i]?.id !== adds[i]!.opts.jobId);
  if (folded.length === 0) return added;
  const result = [...added];
  await Promise.all(
    folded.map(async (i) => {
      const add = adds[i]!;
      if (!(await removeDanglingDeduplicationKey(queue, add.opts.deduplication!.id, added[i]!.id!))) return;
      result[i] = await queue.add(add.name, add.data, add.opts);
    }),
  );
  return result;
}

/**
 * KEYS[1] a deduplication key, KEYS[2] the hash of the job ARGV[1]. Deletes the key only while it
 * still names that job and Redis holds no such job: a key that names another job by now (the job
 * finished, its key went, and another add made a new one) is left, or two jobs could run for one
 * (user, target) at once.
 */
const REMOVE_DANGLING = new LuaScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
`);

/** True when the (user, target)'s deduplication key named `jobId`, a job Redis no longer holds, and is gone now (addAgainWhereDangling). */
export async function removeDanglingDeduplicationKey(queue: Queue<DeliveryJob>, deduplicationId: string, jobId: string): Promise<boolean> {
  const client = (await queue.client) as unknown as RedisClient;
  return (await REMOVE_DANGLING.run(client, [`${queue.keys.de}:${deduplicationId}`, queue.toKey(jobId)], [jobId])) === 1;
}

/** What resync job ids start with (resync-target.ts). */
export const RESYNC_JOB_ID_PREFIX = 'resync.';

function dedupOptions(job: DeliveryJob, jobId: string, o: { keepLastIfActive: boolean } = { keepLastIfActive: true }): JobsOptions {
  return { jobId, deduplication: { id: `${job.user_id}:${job.target}`, keepLastIfActive: o.keepLastIfActive } };
}
