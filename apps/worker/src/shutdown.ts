import type { ShutdownStep } from '@connect/shared';
import type { RunningWorker } from './start-worker.ts';
import type { WorkerDeps } from './worker-deps.ts';

/**
 * The worker's shutdown order. This list is the one the code runs (below), the
 * log reports ("shutdown step done" with each name, in order) and the tests
 * assert. Why this order:
 * 1. stop-fan-out, stop-deliveries: take no new job, and wait for the ones in
 *    flight (`Worker.close()` waits). A callback half-sent when the process dies
 *    is sent again after the lock expires: a duplicate with the same event id,
 *    not a loss, but a clean stop avoids even that.
 * 2. stop-sweep: after the processors, and before the queues close, so a pass in
 *    progress finishes its publish instead of failing half-way
 *    (which would only mean a re-publish later, but costs a warning per user).
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
    'stop-fan-out': () => worker.fanOut.close(),
    'stop-deliveries': () => worker.closeDeliveries(),
    // The Redis loss watch republishes and requeues like the sweep: stopped with it.
    'stop-sweep': () => Promise.all([worker.sweep.stop(), worker.redisLoss.stop()]),
    'stop-purge': () => worker.purge.stop(),
    'close-queues': () => deps.closeQueues(),
    'close-redis': () => deps.closeRedis(),
    'close-mongo': () => deps.closeMongo(),
  };
  return WORKER_SHUTDOWN_STEPS.map((name) => ({ name, run: run[name] }));
}
