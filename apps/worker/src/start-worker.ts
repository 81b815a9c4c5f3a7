import { Worker } from 'bullmq';
import { DELIVERIES_QUEUE, EVENTS_QUEUE, type UserEventJob } from '@connect/shared';
import { deliveryIdOf, type DeliveryJob } from './deliveries-queue.ts';
import { deliveryBackoff } from './delivery-backoff.ts';
import { createDeliverToTarget } from './deliver-to-target.ts';
import { createFanOut } from './fan-out.ts';
import { startOutboxSweep, type OutboxSweep } from './outbox-sweep.ts';
import { startRetentionPurge, type RetentionPurge } from './retention-purge.ts';
import type { WorkerDeps } from './worker-deps.ts';

export interface RunningWorker {
  fanOut: Worker<UserEventJob>;
  deliveries: Worker<DeliveryJob>;
  sweep: OutboxSweep;
  purge: RetentionPurge;
  /** Stops taking jobs (waits for those in flight) and stops the sweep; connections stay with the deps. */
  close(): Promise<void>;
}

/** Starts the two processors and the outbox sweep over the given connections. */
export function startWorker(deps: WorkerDeps): RunningWorker {
  const { config, log, options } = deps;
  const common = {
    connection: deps.workerRedis,
    prefix: config.queuePrefix,
    lockDuration: options.lockDurationMs,
    stalledInterval: options.stalledIntervalMs,
    maxStalledCount: options.maxStalledCount,
  };

  const fanOut = new Worker<UserEventJob>(EVENTS_QUEUE, createFanOut({ models: deps.models, deliveries: deps.deliveries, targets: config.downstreamTargets, log, giveUpNeverDelayMs: options.fanOutParkMs }), {
    ...common,
    concurrency: options.fanOutConcurrency,
  });
  const deliveries = new Worker<DeliveryJob>(DELIVERIES_QUEUE, createDeliverToTarget({ models: deps.models, targets: config.downstreamTargets, log, metrics: deps.metrics }), {
    ...common,
    concurrency: options.concurrency,
    settings: {
      backoffStrategy: deliveryBackoff({ baseMs: options.backoffBaseMs, maxMs: options.backoffMaxMs, maxRetryAfterMs: options.maxRetryAfterMs }),
    },
  });
  for (const w of [fanOut, deliveries] as Worker[]) {
    w.on('error', (err) => log.warn({ queue: w.name, err: err.message }, 'worker error'));
  }
  // A job that stalled more than `maxStalledCount` times fails without its processor
  // running, so nothing marked its row: make it a visible, replayable dead letter.
  deliveries.on('failed', (job, err) => {
    if (!job || !/stalled/i.test(err.message)) return;
    void deps.models.Delivery.updateOne(
      { _id: deliveryIdOf(job.data.event.id, job.data.target), status: 'pending' },
      { $set: { status: 'failed', last_error: 'worker stalled too many times', updated_at: new Date(), dead_lettered_at: new Date() } },
    ).catch((e: Error) => log.warn({ err: e.message }, 'could not record a stalled delivery'));
  });
  fanOut.on('failed', (job, err) => {
    log.warn({ event_id: job?.id, err: err.message, attempts: job?.attemptsMade }, 'fan-out failed');
    // The events job is the "published" marker: one failed without its processor (stalled too
    // often) would stop the sweep from publishing the event again, and nothing would fan it out.
    if (job && /stalled/i.test(err.message)) {
      void job.retry('failed').catch((e: Error) => log.warn({ event_id: job.id, err: e.message }, 'could not put a stalled fan-out back'));
    }
  });

  const sweep = startOutboxSweep(deps.relay, log, options.sweepIntervalMs, options.sweepBatchSize);
  const purge = startRetentionPurge(
    { models: deps.models, redis: deps.queueRedis, queuePrefix: config.queuePrefix, log },
    { retentionMs: options.deliveryRetentionMs, intervalMs: options.purgeIntervalMs },
  );
  log.info({ targets: config.downstreamTargets.map((t) => t.name), concurrency: options.concurrency }, 'worker started');

  return {
    fanOut,
    deliveries,
    sweep,
    purge,
    async close() {
      await Promise.all([fanOut.close(), deliveries.close()]);
      await Promise.all([sweep.stop(), purge.stop()]);
    },
  };
}
