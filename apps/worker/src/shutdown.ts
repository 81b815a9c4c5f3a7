import type { RedisClient, ShutdownStep } from '@connect/shared';
import type { RunningWorker } from './start-worker.ts';
import type { WorkerDeps } from './worker-deps.ts';

/**
 * The worker's shutdown order. This list is the one the code runs (below), the
 * log reports ("shutdown step done" with each name, in order) and the tests
 * assert. Why this order:
 * 1. stop-fan-out, stop-deliveries: take no new job, and wait for the ones in
 *    flight (`Worker.close()` waits). A callback half-sent when the process dies
 *    is sent again after the lock expires: a duplicate with the same event id,
 *    not a loss, but a clean stop avoids even that. With Redis not answering at
 *    the stop, they do not wait: a job in flight cannot record its end there
 *    (nor renew its lock), and BullMQ's own close would wait for ever on its
 *    connections; the jobs run again once their locks lapse.
 * 2. stop-sweep (and the datastore watch's log lines): after the processors, and before the queues close, so a pass in
 *    progress finishes its publish instead of failing half-way
 *    (which would only mean a re-publish later, but costs a warning per user).
 *    Waited for only while Redis answers: a pass waiting on a Redis that is gone
 *    would hold the stop to the end of the grace period for nothing (its work is
 *    done again by the next pass of any worker, docs/delivery.md).
 * 3. stop-purge: the retention purge's pass in progress finishes (it holds a
 *    Redis lock and deletes through MongoDB, both closed below).
 * 4. close-queues, close-redis: nothing above adds jobs any more.
 * 5. close-mongo: last, because the steps above write Delivery and SyncState
 *    rows and read users until they end; closing it first turns a clean
 *    finish into a retried job.
 */
export const WORKER_SHUTDOWN_STEPS = ['stop-fan-out', 'stop-deliveries', 'stop-sweep', 'stop-purge', 'close-queues', 'close-redis', 'close-mongo'] as const;
export type WorkerShutdownStepName = (typeof WORKER_SHUTDOWN_STEPS)[number];

export function workerShutdownSteps(worker: RunningWorker, deps: WorkerDeps): ShutdownStep[] {
  const run: Record<WorkerShutdownStepName, () => Promise<unknown>> = {
    // Then out of the roster: workers that left fan-out to this one take it up at once.
    'stop-fan-out': () => worker.fanOut.close(redisAway(deps.workerRedis, deps.log)).then(() => worker.roster.leave()),
    'stop-deliveries': () => worker.closeDeliveries(redisAway(deps.workerRedis, deps.log)),
    // The Redis loss watch republishes and requeues like the sweep: stopped with it.
    'stop-sweep': () => {
      worker.datastores.stop();
      return whileRedisAnswers(Promise.all([worker.sweep.stop(), worker.redisLoss.stop()]), deps.queueRedis, deps.log);
    },
    'stop-purge': () => whileRedisAnswers(worker.purge.stop(), deps.queueRedis, deps.log),
    'close-queues': () => deps.closeQueues(),
    'close-redis': () => deps.closeRedis(),
    'close-mongo': () => deps.closeMongo(),
  };
  return WORKER_SHUTDOWN_STEPS.map((name) => ({ name, run: run[name] }));
}

/** Redis is not connected now: the workers close without waiting for their jobs (above). */
function redisAway(redis: RedisClient, log: WorkerDeps['log']): boolean {
  if (redis.status === 'ready') return false;
  log.info({ redis: redis.status }, 'Redis does not answer: the workers close without waiting for their jobs in flight (they run again once their locks lapse)');
  return true;
}

/**
 * `work`, or less: at once when Redis is not connected, or as soon as its connection closes.
 * The loops are stopped by then (no new pass); a pass left behind ends with the connections.
 */
function whileRedisAnswers(work: Promise<unknown>, redis: RedisClient, log: WorkerDeps['log']): Promise<void> {
  const leave = () => log.info({ redis: redis.status }, 'Redis does not answer: not waiting for the pass in progress (the next pass of any worker does its work)');
  if (redis.status !== 'ready') {
    leave();
    return Promise.resolve();
  }
  return new Promise<void>((resolve) => {
    const away = () => {
      leave();
      resolve();
    };
    redis.once('close', away);
    const done = () => {
      redis.off('close', away);
      resolve();
    };
    work.then(done, done);
  });
}
