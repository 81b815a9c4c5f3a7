import mongoose, { type Connection } from 'mongoose';
import { Queue } from 'bullmq';
import type { Logger } from 'pino';
import {
  DELIVERIES_QUEUE,
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
  type UserEventPublisher,
} from '@connect/shared';
import { AccessTokens } from './auth/access-tokens.ts';
import { ClientDirectory } from './auth/client-directory.ts';
import { ClientKeys, DEFAULT_CLIENT_KEY_OPTIONS, type ClientKeyOptions } from './auth/client-keys.ts';
import { loadServiceSigningKey } from './auth/service-signing-key.ts';
import { deriveCursorKey } from './list-cursor.ts';
import { createApiMetrics, type ApiMetrics } from './metrics.ts';

/** Everything the API's routes use, passed in so tests build the real thing with their own connections. */
export interface ApiDeps {
  config: Readonly<Config>;
  log: Logger;
  mongo: Connection;
  models: Models;
  redis: RedisClient;
  queue: Queue<UserEventJob>;
  /** Read-only here: for the dashboard and the queue-depth metrics. */
  deliveriesQueue: Queue;
  metrics: ApiMetrics;
  relay: OutboxRelay;
  /** What write use cases hand their events to: the relay, behind the test-only fault hook. */
  publisher: UserEventPublisher;
  lock: KeyedLock;
  recent: RecentUsers;
  tokens: AccessTokens;
  clients: ClientDirectory;
  clientKeys: ClientKeys;
  /** Signs GET /users cursors so a tampered one is refused; shared by every instance (derived from the service key). */
  cursorKey: Buffer;
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
  const deliveriesQueue = new Queue(DELIVERIES_QUEUE, { connection: redis, prefix: config.queuePrefix });
  deliveriesQueue.on('error', (err) => log.warn({ err: err.message }, 'deliveries queue error'));
  // Metrics read the queues themselves; the relay reports its failures to a metric: one arrow, no cycle.
  const metrics: ApiMetrics = createApiMetrics({ models, queues: [queue, deliveriesQueue], eventsQueue: queue });
  const relay = new OutboxRelay({ models, queue, log, onPublishFailure: () => metrics.publishFailures.inc() });
  const faults = options.faults ?? {};
  const publisher: UserEventPublisher = {
    publishSoon: (user) => {
      faults.afterWrite?.();
      relay.publishSoon(user);
    },
  };
  const key = await loadServiceSigningKey(models, config.tokenSigningKey);
  let stopping = false;
  return {
    config,
    log,
    mongo,
    models,
    redis,
    queue,
    deliveriesQueue,
    metrics,
    relay,
    publisher,
    lock: new KeyedLock(),
    recent: new RecentUsers(2_000),
    tokens: new AccessTokens(key, config.issuer, config.accessTokenTtlSeconds),
    clients: new ClientDirectory(models, options.clientCacheTtlMs ?? 30_000),
    clientKeys: new ClientKeys({ ...DEFAULT_CLIENT_KEY_OPTIONS, ...options.clientKeys }),
    cursorKey: deriveCursorKey(key.privateKey),
    shuttingDown: () => stopping,
    faults,
    close: async () => {
      stopping = true;
      await relay.drain();
      await queue.close().catch(() => undefined);
      await deliveriesQueue.close().catch(() => undefined);
      redis.disconnect();
      await mongo.close();
    },
  };
}
