import { Queue } from 'bullmq';
import type { RedisClient } from './redis-connection.ts';
import type { UserEventJob } from './user-event.ts';
import { KEEP_COMPLETED_JOBS, KEEP_FAILED_JOBS_COUNT } from '../deliveries/delivery-policy.ts';

export const EVENTS_QUEUE = 'user-events';
/** The stem of the per-target delivery queues (`deliveries.<target>`, see deliveryQueueName). */
export const DELIVERIES_QUEUE = 'deliveries';

export function createEventsQueue(connection: RedisClient, prefix: string): Queue<UserEventJob> {
  return new Queue<UserEventJob>(EVENTS_QUEUE, {
    connection,
    prefix,
    defaultJobOptions: {
      attempts: 10,
      backoff: { type: 'exponential', delay: 1000 },
      // Finished jobs are trimmed by age and count, so Redis holds a bounded number of them.
      // Why that neither loses an event nor publishes one twice: the top of outbox-relay.ts.
      // Completed events jobs: 10 times the delivery queues' count, so the sweep, which asks
      // "published?" for about 30 s of events, finds their jobs even at 300 events a second
      // and rarely falls back to looking up Delivery rows.
      removeOnComplete: { age: KEEP_COMPLETED_JOBS.age, count: KEEP_COMPLETED_JOBS.count * 10 },
      removeOnFail: { age: 7 * 24 * 3600, count: KEEP_FAILED_JOBS_COUNT },
      stackTraceLimit: 1,
    },
  });
}
