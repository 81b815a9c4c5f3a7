import mongoose, { type Connection } from 'mongoose';
import type { Queue } from 'bullmq';
import type { Logger } from 'pino';
import {
  collectionsOf,
  createEventsQueue,
  createModels,
  createRedis,
  DeliveryQueues,
  DeliveryStore,
  ensureIndexes,
  HeldStates,
  mongoConnectionOptions,
  OutboxRelay,
  databaseTime,
  referenceClock,
  watchOpenFiles,
  watchRedisMemory,
  TargetHealth,
  type ReferenceClock,
  type Config,
  type Models,
  type RedisClient,
  type UserEventJob,
  warnAtMostEvery,
} from '@connect/shared';
import { createDeliveryMetrics, type DeliveryMetrics } from './delivery-metrics.ts';
import { DEFAULT_WORKER_OPTIONS, type WorkerOptions } from './worker-options.ts';
import { markSwept } from './redis-loss-recovery.ts';

/** Everything the worker's processors use, passed in so tests build the real thing with their own connections. */
export interface WorkerDeps {
  config: Readonly<Config>;
  log: Logger;
  options: WorkerOptions;
  mongo: Connection;
  models: Models;
  /** BullMQ workers: `maxRetriesPerRequest: null` so blocking reads survive reconnects. */
  workerRedis: RedisClient;
  /** Adds to the deliveries queue from inside jobs; waits for Redis rather than failing. */
  queueRedis: RedisClient;
  /** The sweep's publisher: fails fast while Redis is away, so a pass ends and the next one retries. */
  producerRedis: RedisClient;
  eventsQueue: Queue<UserEventJob>;
  /** One queue per configured target (docs/delivery.md). */
  deliveries: DeliveryQueues;
  /** Delivery rows, sync state and attempts: their one writer API. */
  store: DeliveryStore;
  /** Target states shared by every worker process (Redis). */
  health: TargetHealth;
  relay: OutboxRelay;
  /** Dates what the worker compares with the API's dates (the sweep, the purge, target health): this machine's clock set by the database's (reference-clock.ts). */
  clock: ReferenceClock;
  metrics: DeliveryMetrics;
  closeQueues(): Promise<void>;
  closeRedis(): Promise<void>;
  closeMongo(): Promise<void>;
}

export async function createWorkerDeps(config: Readonly<Config>, log: Logger, options: Partial<WorkerOptions> = {}): Promise<WorkerDeps> {
  const opts: WorkerOptions = { ...DEFAULT_WORKER_OPTIONS, ...options };
  const mongo = await mongoose.createConnection(config.mongoUrl, mongoConnectionOptions(config.mongoUrl)).asPromise();
  const models = createModels(mongo);
  await ensureIndexes(models, log, config.emailUniqueness);

  const workerRedis = createRedis(config.redisUrl, 'worker');
  const queueRedis = createRedis(config.redisUrl, 'worker');
  const producerRedis = createRedis(config.redisUrl, 'producer');
  // While Redis is down these repeat at every reconnection attempt: a line per 10 s per source and message.
  const warnRepeated = warnAtMostEvery(log);
  for (const [name, r] of [['worker', workerRedis], ['queue', queueRedis], ['producer', producerRedis]] as const) {
    r.on('error', (err) => warnRepeated(`redis ${name}`, { connection: name, err: err.message }, 'redis connection error'));
  }
  const eventsQueue = createEventsQueue(producerRedis, config.queuePrefix);
  const deliveries = new DeliveryQueues(queueRedis, config.queuePrefix, config.downstreamTargets, opts.policy);
  for (const q of [eventsQueue, ...deliveries.all()] as Queue[]) q.on('error', (err) => warnRepeated('queue', { queue: q.name, err: err.message }, 'queue error'));
  const clock = referenceClock(databaseTime(mongo.db!.admin()), log, opts.clock);
  // Measured before the first write or pass is dated by it.
  await clock.measure();
  const relay = new OutboxRelay({
    models,
    queue: eventsQueue,
    log,
    now: clock.now,
    targetNames: config.downstreamTargets.map((t) => t.name),
    beforeCursorMoves: (slot, stored) => markSwept(queueRedis, config.queuePrefix, slot, stored),
  });

  // Redis's eviction policy and room, said in the log (redis-memory-watch.ts).
  const redisMemory = watchRedisMemory(producerRedis, log);
  // File descriptors running out (open-files-watch.ts).
  const openFiles = watchOpenFiles(log);
  return {
    config,
    log,
    options: opts,
    mongo,
    models,
    workerRedis,
    queueRedis,
    producerRedis,
    eventsQueue,
    deliveries,
    store: new DeliveryStore(models),
    health: new TargetHealth(queueRedis, config.queuePrefix, clock.nowMs, new HeldStates(collectionsOf(models).targetStates)),
    relay,
    clock,
    metrics: createDeliveryMetrics(clock),
    closeQueues: async () => {
      await Promise.allSettled([eventsQueue.close(), deliveries.close()]);
    },
    closeRedis: async () => {
      redisMemory.stop();
      openFiles.stop();
      // QUIT waits for Redis's answer: to a connection that is not up it would wait for ever (its
      // commands queued until a reconnection), holding the stop to the end of the grace period.
      await Promise.allSettled([workerRedis, queueRedis, producerRedis].map(async (r) => (r.status === 'ready' ? r.quit().catch(() => r.disconnect()) : r.disconnect())));
    },
    closeMongo: () => {
      clock.stop();
      return mongo.close();
    },
  };
}
