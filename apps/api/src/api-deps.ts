import mongoose, { type Connection } from 'mongoose';
import { Queue } from 'bullmq';
import type { Logger } from 'pino';
import {
  deliveryQueueName,
  createEventsQueue,
  createModels,
  createRedis,
  ensureIndexes,
  KeyedLock,
  mongoConnectionOptions,
  OutboxRelay,
  RecentUsers,
  type Config,
  type Models,
  type RedisClient,
  type UserEventJob,
} from '@connect/shared';
import { AccessTokens } from './auth/access-tokens.ts';
import { ClientDirectory } from './auth/client-directory.ts';
import { ClientKeys, DEFAULT_CLIENT_KEY_OPTIONS, type ClientKeyOptions } from './auth/client-keys.ts';
import { loadServiceSigningKey } from './auth/service-signing-key.ts';
import { createApiMetrics, type ApiMetrics } from './metrics.ts';

/** Everything the API's routes use, passed in so tests build the real thing with their own connections. */
export interface ApiDeps {
  config: Readonly<Config>;
  log: Logger;
  mongo: Connection;
  models: Models;
  redis: RedisClient;
  queue: Queue<UserEventJob>;
  /** One per target; read-only here: for the dashboard and the queue-depth metrics. */
  deliveryQueues: Queue[];
  metrics: ApiMetrics;
  relay: OutboxRelay;
  lock: KeyedLock;
  recent: RecentUsers;
  tokens: AccessTokens;
  clients: ClientDirectory;
  clientKeys: ClientKeys;
  shuttingDown: () => boolean;
  faults: ApiFaults;
  close: () => Promise<void>;
}

/**
 * Test-only fault injection, off unless the process is started with it (see
 * main.ts); no request can turn it on.
 */
export interface ApiFaults {
  /** Runs after a change is written and before its event is handed to Redis. */
  afterWrite?: () => void;
}

export interface ApiDepsOptions {
  faults?: ApiFaults;
  /** How long a client's enabled state is cached on the bearer path (≤ 60 s by SPEC). */
  clientCacheTtlMs?: number;
  clientKeys?: Partial<ClientKeyOptions>;
}

export async function createApiDeps(config: Readonly<Config>, log: Logger, options: ApiDepsOptions = {}): Promise<ApiDeps> {
  const mongo = await mongoose.createConnection(config.mongoUrl, mongoConnectionOptions(config.mongoUrl)).asPromise();
  const models = createModels(mongo);
  await ensureIndexes(models, log);
  const redis = createRedis(config.redisUrl, 'producer');
  redis.on('error', (err) => log.warn({ err: err.message }, 'redis connection error'));
  const queue = createEventsQueue(redis, config.queuePrefix);
  queue.on('error', (err) => log.warn({ err: err.message }, 'events queue error'));
  const deliveryQueues = config.downstreamTargets.map((t) => new Queue(deliveryQueueName(t.name), { connection: redis, prefix: config.queuePrefix }));
  for (const q of deliveryQueues) q.on('error', (err) => log.warn({ queue: q.name, err: err.message }, 'deliveries queue error'));
  const metrics: ApiMetrics = createApiMetrics({
    queues: [queue, ...deliveryQueues],
    targetQueues: config.downstreamTargets.map((t, i) => ({ target: t.name, queue: deliveryQueues[i]! })),
    unpublished: () => relay.unpublishedCount(),
  });
  const relay = new OutboxRelay({ models, queue, log, onPublishFailure: () => metrics.publishFailures.inc(), targetNames: config.downstreamTargets.map((t) => t.name) });
  const key = await loadServiceSigningKey(models, config.tokenSigningKey);
  let stopping = false;
  return {
    config,
    log,
    mongo,
    models,
    redis,
    queue,
    deliveryQueues,
    metrics,
    relay,
    lock: new KeyedLock(),
    recent: new RecentUsers(2_000),
    tokens: new AccessTokens(key, config.issuer, config.accessTokenTtlSeconds),
    clients: new ClientDirectory(models, options.clientCacheTtlMs ?? 30_000),
    clientKeys: new ClientKeys({ ...DEFAULT_CLIENT_KEY_OPTIONS, ...options.clientKeys }),
    shuttingDown: () => stopping,
    faults: options.faults ?? {},
    close: async () => {
      stopping = true;
      await relay.drain();
      await queue.close().catch(() => undefined);
      await Promise.all(deliveryQueues.map((q) => q.close().catch(() => undefined)));
      redis.disconnect();
      await mongo.close();
    },
  };
}
