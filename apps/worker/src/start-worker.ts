import { Worker } from 'bullmq';
import { deliveryIdOf, deliveryJobSchema, deliveryQueueName, EVENTS_QUEUE, warnAtMostEvery, watchDatastores, weakSecrets, type DatastoreWatch, type DeliveryJob, type RedisClient, type UserEventJob } from '@connect/shared';
import { deliveryBackoff } from './delivery-backoff.ts';
import { createDeliverToTarget } from './deliver-to-target.ts';
import { watchBlockingConnections, type BlockingConnectionWatch } from './blocking-connections.ts';
import { watchTargets } from './delivery-metrics.ts';
import { joinFanOutRoster, type FanOutRoster } from './fan-out-roster.ts';
import { createFanOut } from './fan-out.ts';
import { startOutboxSweep, type OutboxSweep } from './outbox-sweep.ts';
import { watchForRedisLoss, type RedisLossWatch } from './redis-loss-recovery.ts';
import { startRetentionPurge, type RetentionPurge } from './retention-purge.ts';
import type { WorkerDeps } from './worker-deps.ts';

export interface RunningWorker {
  fanOut: Worker<UserEventJob>;
  /** Which workers may fan out while target lists differ (fan-out-roster.ts). */
  roster: FanOutRoster;
  /** One BullMQ worker per target, each with its own concurrency (docs/delivery.md). */
  deliveries: Map<string, Worker<DeliveryJob>>;
  sweep: OutboxSweep;
  /** Recovers what only Redis held, should Redis lose its data (redis-loss-recovery.ts). */
  redisLoss: RedisLossWatch;
  purge: RetentionPurge;
  /** Mends a blocking connection accepted by Redis and never answered (blocking-connections.ts). */
  blockingConnections: BlockingConnectionWatch;
  /** Logs when MongoDB or Redis stops answering and when it answers again. */
  datastores: DatastoreWatch;
  /** Stops the delivery workers: waits for the jobs in flight, unless `force` (Redis is not answering: see shutdown.ts). */
  closeDeliveries(force?: boolean): Promise<void>;
}

/** Starts the fan-out, one delivery worker per target, the health watch and the outbox sweep. */
export function startWorker(deps: WorkerDeps): RunningWorker {
  const { config, log, options } = deps;
  // Before any BullMQ worker exists: each makes its blocking connection from this one.
  const blockingConnections = watchBlockingConnections(deps.workerRedis, { stuckMs: options.blockingStuckMs, log });
  const common = {
    connection: deps.workerRedis,
    prefix: config.queuePrefix,
    lockDuration: options.lockDurationMs,
    stalledInterval: options.stalledIntervalMs,
    maxStalledCount: options.maxStalledCount,
  };

  // With no target every event is fanned out to nobody and its job completes, which marks it
  // published: a target configured later gets those users only through `targets resync`. Meant for
  // a deployment whose targets come later, or set on purpose (`DOWNSTREAM_TARGETS='[]'`); a worker
  // process left without the variable while targets were delivered to does not get here
  // (targets-left-out.ts). Said loudly at every start all the same.
  if (config.downstreamTargets.length === 0) {
    log.warn('no DOWNSTREAM_TARGETS: events are fanned out to no target and count as published; a target added later gets them only through `pnpm cli targets resync NAME`');
  }
  const weak = weakSecrets(config.downstreamTargets);
  if (weak.length > 0) {
    log.warn(
      `weak callback secrets: ${weak.join('; ')}. Anyone holding one signed callback can try to guess such a secret offline, then sign callbacks of their own; rotate to 32 random bytes (\`openssl rand -hex 32\`, or "whsec_" + \`openssl rand -base64 32\` for standard-webhooks) as docs/operations.md ("Changing a target: secrets, URL, name, scheme", Callback secrets) describes`,
    );
  }
  const fanOut = new Worker<UserEventJob>(EVENTS_QUEUE, createFanOut({ store: deps.store, deliveries: deps.deliveries, targets: config.downstreamTargets, log, giveUpNeverDelayMs: options.fanOutParkMs, standsBack: () => standingBack }), {
    ...common,
    concurrency: options.fanOutConcurrency,
    // Started once the roster allows it (fan-out-roster.ts): a worker restarted with fewer
    // targets than another live one must not take a single event.
    autorun: false,
  });
  let fanOutStarted = false;
  let standingBack = false;
  // Resumed only when the roster paused it: a resume of its own at the first reading (the start
  // below fell back on fanning out) undid a pause given meanwhile, and BullMQ's pause, waiting
  // for a loop that ran on, never returned.
  let pausedByRoster = false;
  const startFanOut = () => {
    if (!fanOutStarted) {
      fanOutStarted = true;
      void fanOut.run().catch((err: Error) => log.error({ err: err.message }, 'the fan-out stopped'));
    } else if (pausedByRoster) {
      pausedByRoster = false;
      fanOut.resume();
    }
  };
  const roster = joinFanOutRoster(
    deps.producerRedis,
    config.queuePrefix,
    config.downstreamTargets.map((t) => t.name),
    log,
    (may) => {
      standingBack = !may;
      if (may) startFanOut();
      else if (fanOutStarted) {
        pausedByRoster = true;
        void fanOut.pause(true).catch(() => undefined);
      }
    },
    { intervalMs: options.rosterIntervalMs, ttlMs: options.rosterTtlMs },
  );
  // The first reading once the connection is up: it has no offline queue, so a reading taken at
  // once failed while it connected, and the worker fanned out for a whole interval before its first
  // real reading (a worker restarted with fewer targets too). Redis still away after the roster's
  // time to live: it fans out, as it always did (nothing can be fanned out without Redis anyway).
  void whenReady(deps.producerRedis, options.rosterTtlMs ?? 20_000)
    .then(() => roster.check())
    .then((may) => may && !fanOutStarted && startFanOut());

  const deliveries = new Map<string, Worker<DeliveryJob>>();
  // While Redis is down each worker reports every reconnection attempt: a line per 10 s per queue and message.
  const warnRepeated = warnAtMostEvery(log);
  const processor = createDeliverToTarget({
    store: deps.store,
    queues: deps.deliveries,
    health: deps.health,
    policy: options.policy,
    targets: config.downstreamTargets,
    log,
    metrics: deps.metrics,
    lockDurationMs: options.lockDurationMs,
    parkMs: options.fanOutParkMs,
  });
  for (const target of config.downstreamTargets) {
    const worker = new Worker<DeliveryJob>(deliveryQueueName(target.name), processor, {
      ...common,
      concurrency: options.concurrency,
      // Needed for BullMQ to honour a queue-wide `rateLimit()` (how a target is held);
      // the numbers themselves never limit anything.
      limiter: { max: 1_000_000, duration: 1000 },
      // A held worker sleeps on its own timer until the hold's end (BullMQ caps the sleep at
      // this), then asks Redis again. A hold lifted early (a probe succeeded, `targets resume`,
      // in any process) deletes the queue's rate-limit key, so every process's workers fetch
      // again within this long.
      maximumRateLimitDelay: options.healthPollMs,
      settings: { backoffStrategy: deliveryBackoff(options.policy) },
    });
    worker.on('error', (err) => warnRepeated('worker', { queue: worker.name, err: err.message }, 'worker error'));
    // A job that stalled more than `maxStalledCount` times fails without its processor
    // running, so nothing marked its row: make it a visible, replayable dead letter.
    worker.on('failed', (job, err) => {
      if (!job || !/stalled/i.test(err.message)) return;
      const parsed = deliveryJobSchema.safeParse(job.data);
      if (!parsed.success) {
        log.warn({ queue: worker.name, job_id: job.id }, 'a stalled delivery job is malformed; no row to mark');
        return;
      }
      void deps.store
        .stalledDeadLetter(deliveryIdOf(parsed.data.event.id, parsed.data.target))
        .catch((e: Error) => log.warn({ err: e.message }, 'could not record a stalled delivery'));
    });
    deliveries.set(target.name, worker);
  }
  fanOut.on('error', (err) => warnRepeated('worker', { queue: fanOut.name, err: err.message }, 'worker error'));
  fanOut.on('failed', (job, err) => {
    log.warn({ event_id: job?.id, err: err.message, attempts: job?.attemptsMade }, 'fan-out failed');
    // The events job is the "published" marker: one failed without its processor (stalled too
    // often) would stop the sweep from publishing the event again, and nothing would fan it out.
    if (job && /stalled/i.test(err.message)) {
      void job.retry('failed').catch((e: Error) => log.warn({ event_id: job.id, err: e.message }, 'could not put a stalled fan-out back'));
    }
  });

  watchTargets(deps.metrics, { health: deps.health, queues: deps.deliveries, eventsQueue: deps.eventsQueue });
  // A target paused or disabled before held states were kept in MongoDB gets its row now.
  void Promise.all(config.downstreamTargets.map((t) => deps.health.keepHeldState(t.name))).catch((err: Error) =>
    log.warn({ err: err.message }, 'could not keep the targets\' held states in MongoDB; a Redis data loss would forget them'),
  );

  const sweep = startOutboxSweep(deps.relay, log, options.sweepIntervalMs, options.sweepBatchSize);
  const redisLoss = watchForRedisLoss(
    { models: deps.models, redis: deps.queueRedis, relay: deps.relay, eventsQueue: deps.eventsQueue, deliveries: deps.deliveries, health: deps.health, targets: config.downstreamTargets, queuePrefix: config.queuePrefix, log },
    options.sweepIntervalMs,
  );
  const purge = startRetentionPurge(
    { models: deps.models, redis: deps.queueRedis, queuePrefix: config.queuePrefix, log, queues: deps.deliveries },
    { retentionMs: options.deliveryRetentionMs, intervalMs: options.purgeIntervalMs, now: deps.clock.now },
  );
  const datastores = watchDatastores(
    [
      { name: 'MongoDB', ping: () => deps.mongo.db!.admin().ping() },
      // The producer connection fails at once while Redis is away, and waits while a black hole holds it.
      { name: 'Redis', ping: () => deps.producerRedis.ping() },
    ],
    log,
    { intervalMs: options.datastoreWatchMs, silentAfterMs: options.datastoreWatchMs },
  );
  log.info({ targets: config.downstreamTargets.map((t) => t.name), concurrency_per_target: options.concurrency, retry_schedule_ms: options.policy.retryScheduleMs }, 'worker started');

  const closeDeliveries = async (force = false) => {
    blockingConnections.stop();
    await Promise.all([...deliveries.values()].map((w) => w.close(force)));
  };
  return {
    fanOut,
    roster,
    deliveries,
    sweep,
    redisLoss,
    closeDeliveries,
    purge,
    blockingConnections,
    datastores,
  };
}

/** Resolves once `redis` is connected and ready, or after `boundMs` (never rejects). */
function whenReady(redis: RedisClient, boundMs: number): Promise<void> {
  if (redis.status === 'ready') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      redis.off('ready', done);
      resolve();
    };
    const timer = setTimeout(done, boundMs);
    timer.unref();
    redis.once('ready', done);
  });
}
