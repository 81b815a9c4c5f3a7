import { Queue } from 'bullmq';
import { Redis, type RedisOptions } from 'ioredis';
import type { UserEventJob } from './user-event.ts';

export const EVENTS_QUEUE = 'user-events';
export const DELIVERIES_QUEUE = 'deliveries';

/**
 * A Redis connection for BullMQ. Producers (the API's relay, the CLI) fail fast
 * while Redis is away (`enableOfflineQueue: false`), so a request never waits on
 * Redis: the event stays in MongoDB and the sweep publishes it later. Workers need
 * `maxRetriesPerRequest: null` so blocking commands survive reconnects.
 */
export function createRedis(url: string, role: 'producer' | 'worker', extra: RedisOptions = {}): Redis {
  return new Redis(url, {
    ...(role === 'producer'
      ? { enableOfflineQueue: false, maxRetriesPerRequest: 1, connectTimeout: 2000 }
      : { maxRetriesPerRequest: null }),
    retryStrategy: (times) => Math.min(times * 200, 2000),
    lazyConnect: false,
    ...extra,
  });
}

export function createEventsQueue(connection: Redis, prefix: string): Queue<UserEventJob> {
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
