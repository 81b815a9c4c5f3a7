import { Queue, type JobsOptions } from 'bullmq';
import { DELIVERIES_QUEUE, type RedisClient, type UserEvent } from '@connect/shared';

/** One delivery: a user's event for one target. The creation event rides along (SPEC §2 order). */
export interface DeliveryJob {
  user_id: string;
  target: string;
  event: UserEvent;
  created: UserEvent;
  /** `targets resync --force`: send the newest event even if the target answered 2xx to it already. */
  force?: boolean;
}

export const DEFAULT_DELIVERY_ATTEMPTS = 8;
/** The custom backoff type; the worker's `settings.backoffStrategy` computes it. */
export const DELIVERY_BACKOFF_TYPE = 'delivery';

export function createDeliveriesQueue(connection: RedisClient, prefix: string, attempts = DEFAULT_DELIVERY_ATTEMPTS): Queue<DeliveryJob> {
  return new Queue<DeliveryJob>(DELIVERIES_QUEUE, {
    connection,
    prefix,
    defaultJobOptions: {
      attempts,
      backoff: { type: DELIVERY_BACKOFF_TYPE },
      removeOnComplete: { age: 24 * 3600, count: 100_000 },
      // Dead letters live in MongoDB (Delivery rows); BullMQ keeps the failed job a week for the dashboard.
      removeOnFail: { age: 7 * 24 * 3600, count: 100_000 },
    },
  });
}

/** The id of a Delivery row, and of the delivery job for an event (BullMQ job ids may not contain ':'). */
export function deliveryIdOf(eventId: string, target: string): string {
  return `${eventId}.${target}`;
}

/**
 * Adds a delivery, deduplicated per (user, target): BullMQ keeps at most one
 * active and one waiting job per key (`keepLastIfActive`), the waiting one
 * carrying the newest data, and `replace` swaps a job that waits out a retry
 * delay for the new one. So two deliveries for one user and target never run at
 * the same time, which is what keeps a target from seeing versions out of order
 * when several workers run.
 *
 * A job waiting (not delayed) swallows the newer one; that is safe because the
 * delivery processor sends the user's newest event from MongoDB, not the event
 * the job was created for.
 */
export async function enqueueDelivery(queue: Queue<DeliveryJob>, job: DeliveryJob, jobId: string = deliveryIdOf(job.event.id, job.target)): Promise<void> {
  await queue.add(job.event.type, job, deliveryJobOptions(job, jobId));
}

/** Several at once, in one round trip; each job deduplicated exactly as `enqueueDelivery` does. */
export async function enqueueDeliveries(queue: Queue<DeliveryJob>, jobs: readonly DeliveryJob[]): Promise<void> {
  await queue.addBulk(jobs.map((job) => ({ name: job.event.type, data: job, opts: deliveryJobOptions(job, deliveryIdOf(job.event.id, job.target)) })));
}

/** Several at once with their own job ids and extra options (resync: a priority below live deliveries). */
export async function enqueueDeliveriesWith(queue: Queue<DeliveryJob>, jobs: readonly { job: DeliveryJob; jobId: string }[], extra: JobsOptions): Promise<void> {
  await queue.addBulk(jobs.map(({ job, jobId }) => ({ name: job.event.type, data: job, opts: { ...deliveryJobOptions(job, jobId), ...extra } })));
}

function deliveryJobOptions(job: DeliveryJob, jobId: string): JobsOptions {
  return { jobId, deduplication: { id: `${job.user_id}:${job.target}`, keepLastIfActive: true, replace: true } };
}
