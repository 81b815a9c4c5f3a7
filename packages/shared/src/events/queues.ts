import { Queue } from 'bullmq';
import type { RedisClient } from './redis-connection.ts';
import type { UserEventJob } from './user-event.ts';

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
      // Completed ids are kept a day so a re-published event id is still deduped by BullMQ;
      // past that the worker's per-target version check drops the duplicate.
      removeOnComplete: { age: 24 * 3600, count: 100_000 },
      removeOnFail: { age: 7 * 24 * 3600 },
    },
  });
}
