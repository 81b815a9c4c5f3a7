import mongoose, { type Connection } from 'mongoose';
import { Queue } from 'bullmq';
import type { Logger } from 'pino';
import {
  deliveryQueueName,
  collectionsOf,
  createEventsQueue,
  createModels,
  createRedis,
  EmailClaims,
  ensureIndexes,
  KeyedLock,
  mongoConnectionOptions,
  OutboxRelay,
  RecentUsers,
  databaseTime,
  referenceClock,
  watchOpenFiles,
  watchRedisMemory,
  type ReferenceClock,
  type ReferenceClockOptions,
  type Config,
  type DatastoreWatch,
  type Models,
  type RedisClient,
  type UserEventJob,
  type UserEventPublisher,
  warnAtMostEvery,
  watchDatastores,
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
  /** One per target; read-only here: for the dashboard and the queue-depth metrics. */
  deliveryQueues: Queue[];
  metrics: ApiMetrics;
  relay: OutboxRelay;
  /** Dates writes (`updated_at`, the outbox slot): this machine's clock set by the database's (reference-clock.ts). */
  clock: ReferenceClock;
  /** What write use cases hand their events to: the relay, behind the test-only fault hook. */
  publisher: UserEventPublisher;
  lock: KeyedLock;
  recent: RecentUsers;
  /** Set under EMAIL_UNIQUENESS=claims (docs/guarantees.md, "Email claims"). */
  emailClaims: EmailClaims | undefined;
  tokens: AccessTokens;
  clients: ClientDirectory;
  clientKeys: ClientKeys;
  /** Signs GET /users cursors so a tampered one is refused; shared by every instance (derived from the service key). */
  cursorKey: Buffer;
  /** True from the first shutdown step on: readiness then answers 503. */
  shuttingDown: () => boolean;
  markShuttingDown: () => void;
  faults: ApiFaults;
  close: () => Promise<void>;
  /** Whether MongoDB and Redis answer, watched in the background (datastore-watch.ts). */
  datastores: DatastoreWatch;
}

/**
 * Test-only fault injection, off unless the process is started with it (see
 * run-api.ts); no request can turn it on.
 */
export interface ApiFaults {
  /** Runs after a change is written and before its event is handed to Redis. */
  afterWrite?: () => void;
  /** The server-side time limit of a GET /users page's query, in place of what the request deadline leaves. */
  listMaxTimeMs?: number;
  /** Awaited by a GET /users page before its query, once counted among the organization's pages in flight. */
  beforeListQuery?: () => Promise<void>;
}

/**
 * A database that stops answering without closing its connections (a black
 * hole, a dead host behind a NAT) would otherwise hold each operation, the
 * per-user lock around it and a pooled connection until TCP keepalive gives up,
 * minutes later. With this bound a stuck operation fails (a MongoNetworkTimeoutError:
 * 503) and its connection is dropped. It is well above any request's deadline
 * (service-unavailable.ts), which answers the integrator first; it is the time
 * after which the API has let go of everything a black hole held. Note: it also
 * bounds index builds at start-up; a build on a large collection that takes
 * longer fails the start, and the next start finds the index built.
 */
const API_MONGO_BOUNDS = { socketTimeoutMS: 30_000 } as const;

/**
 * Redis is on the request path only where the API can do without it: the rate
 * limiter lets a request through when Redis errs, and an event Redis does not
 * take stays in MongoDB for the worker's sweep. So a Redis command that does not
 * answer in 3 s fails (the request goes on without it), and a connection that
 * receives nothing for 5 s while waiting for a reply is dropped and made anew,
 * so that a black-holed connection does not stay in use.
 */
const API_REDIS_BOUNDS = { commandTimeout: 3000, socketTimeout: 5000 } as const;

export interface ApiDepsOptions {
  faults?: ApiFaults;
  /** How long a client's enabled state is cached on the bearer path (≤ 60 s by docs/contract.md). */
  clientCacheTtlMs?: number;
  clientKeys?: Partial<ClientKeyOptions>;
  /** The users this process remembers, and how it picks an update's first step (recent-users.ts); 2,000, learning, by default. */
  recentUsers?: RecentUsers;
  /** The reference clock's measurement (tests skew this machine's clock with `local`). */
  clock?: ReferenceClockOptions;
}

export async function createApiDeps(config: Readonly<Config>, log: Logger, options: ApiDepsOptions = {}): Promise<ApiDeps> {
  const mongo = await mongoose.createConnection(config.mongoUrl, { ...mongoConnectionOptions(config.mongoUrl), ...API_MONGO_BOUNDS }).asPromise();
  const models = createModels(mongo);
  await ensureIndexes(models, log, config.emailUniqueness);
  const redis = createRedis(config.redisUrl, 'producer', API_REDIS_BOUNDS);
  // While Redis is down these repeat at every reconnection attempt: a line per 10 s per source and message.
  const warnRepeated = warnAtMostEvery(log);
  redis.on('error', (err) => warnRepeated('redis', { err: err.message }, 'redis connection error'));
  const queue = createEventsQueue(redis, config.queuePrefix);
  queue.on('error', (err) => warnRepeated('events queue', { err: err.message }, 'events queue error'));
  const deliveryQueues = config.downstreamTargets.map((t) => new Queue(deliveryQueueName(t.name), { connection: redis, prefix: config.queuePrefix }));
  for (const q of deliveryQueues) q.on('error', (err) => warnRepeated('deliveries queue', { queue: q.name, err: err.message }, 'deliveries queue error'));
  const clock = referenceClock(databaseTime(mongo.db!.admin()), log, options.clock);
  // Measured before the first write is dated by it.
  await clock.measure();
  // The relay reports its failures to a metric; the unpublished gauge asks the relay only when scraped, after both exist.
  const metrics: ApiMetrics = createApiMetrics({
    clockOffsetMs: () => clock.offsetMs(),
    queues: [queue, ...deliveryQueues],
    targetQueues: config.downstreamTargets.map((t, i) => ({ target: t.name, queue: deliveryQueues[i]! })),
    unpublished: () => relay.unpublishedCount(),
  });
  const relay = new OutboxRelay({ models, queue, log, now: clock.now, onPublishFailure: () => metrics.publishFailures.inc(), targetNames: config.downstreamTargets.map((t) => t.name) });
  const faults = options.faults ?? {};
  const publisher: UserEventPublisher = {
    publishSoon: (user, log) => {
      faults.afterWrite?.();
      relay.publishSoon(user, log);
    },
    recheckLater: (key, log) => relay.recheckLater(key, log),
  };
  const key = await loadServiceSigningKey(models, config.tokenSigningKey);
  let stopping = false;
  // A line when a datastore stops answering and one when it is back, traffic or not
  // (docs/operations.md, Logs); /readyz asks it about a ping still waiting.
  const datastores = watchDatastores(
    [
      { name: 'MongoDB', ping: () => mongo.db!.admin().ping() },
      { name: 'Redis', ping: () => redis.ping() },
    ],
    log,
  );
  // Redis's eviction policy and room, said in the log (redis-memory-watch.ts).
  const redisMemory = watchRedisMemory(redis, log);
  // File descriptors running out, which otherwise drops connections without a line (open-files-watch.ts).
  const openFiles = watchOpenFiles(log);
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
    clock,
    publisher,
    lock: new KeyedLock(),
    recent: options.recentUsers ?? new RecentUsers(2_000),
    emailClaims: config.emailUniqueness === 'claims' ? new EmailClaims(collectionsOf(models).emailClaims, collectionsOf(models).providerUsers, log) : undefined,
    tokens: new AccessTokens(key, config.issuer, config.accessTokenTtlSeconds),
    clients: new ClientDirectory(models, options.clientCacheTtlMs ?? 30_000),
    clientKeys: new ClientKeys({ ...DEFAULT_CLIENT_KEY_OPTIONS, ...options.clientKeys }),
    cursorKey: deriveCursorKey(key.privateKey),
    shuttingDown: () => stopping,
    faults,
    datastores,
    markShuttingDown: () => {
      stopping = true;
    },
    close: async () => {
      stopping = true;
      // Before the connections close, which it would report as an outage.
      datastores.stop();
      clock.stop();
      redisMemory.stop();
      openFiles.stop();
      await relay.drain();
      await queue.close().catch(() => undefined);
      await Promise.all(deliveryQueues.map((q) => q.close().catch(() => undefined)));
      redis.disconnect();
      await mongo.close();
    },
  };
}
