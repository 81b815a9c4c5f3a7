import type { ShutdownStep } from '@connect/shared';
import type { RunningWorker } from './start-worker.ts';
import type { WorkerDeps } from './worker-deps.ts';

/**
 * The worker's shutdown order, and why:
 * 1. stop-fan-out, stop-deliveries: take no new job, and wait for the ones in
 *    flight (`Worker.close()` waits). A callback half-sent when the process dies
 *    is sent again after the lock expires: a duplicate with the same event id,
 *    not a loss, but a clean stop avoids even that.
 * 2. stop-sweep: after the processors, and before the queues close, so a pass in
 *    progress finishes its publish instead of failing half-way
 *    (which would only mean a re-publish later, but costs a warning per user).
 * 2b. stop-purge: the retention purge's pass in progress finishes (it holds a
 *    Redis lock and deletes through MongoDB, both closed below).
 * 3. close-queues, close-redis: nothing above adds jobs any more.
 * 4. close-mongo: last, because the steps above write Delivery and SyncState
 *    rows and read users until they end; closing it first turns a clean
 *    finish into a retried job.
 */
export function workerShutdownSteps(worker: RunningWorker, deps: WorkerDeps): ShutdownStep[] {
  return [
    { name: 'stop-fan-out', run: () => worker.fanOut.close() },
    { name: 'stop-deliveries', run: () => worker.closeDeliveries() },
    { name: 'stop-sweep', run: () => worker.sweep.stop() },
    { name: 'stop-purge', run: () => worker.purge.stop() },
    { name: 'close-queues', run: () => deps.closeQueues() },
    { name: 'close-redis', run: () => deps.closeRedis() },
    { name: 'close-mongo', run: () => deps.closeMongo() },
  ];
}
