import { Queue } from 'bullmq';
import { DomainError } from '../domain-errors.ts';
import type { RedisClient } from '../events/redis-connection.ts';
import { collectionsOf, type DeliveryDoc, type Models } from '../models/models.ts';
import { deliveryQueueName } from './delivery-queues.ts';

/** `targets forget NAME` refused: the target is still configured, or a worker still serves it. */
export class TargetStillInUseError extends DomainError {
  constructor(detail: string) {
    super('target-in-use', 'Target still in use', 409, detail);
  }
}

export interface ForgetTargetDeps {
  models: Models;
  redis: RedisClient;
  queuePrefix: string;
  /** The names in this process's DOWNSTREAM_TARGETS. */
  configured: readonly string[];
}

export interface ForgetTargetResult {
  target: string;
  /** BullMQ jobs of its queue (waiting, held, delayed, finished) removed with the queue. */
  jobs: number;
  deliveries: number;
  attempts: number;
  sync_states: number;
}

const BATCH = 1000;

/**
 * `targets forget NAME` (docs/operations.md, Removing a target): everything
 * stored for a target that was taken out of DOWNSTREAM_TARGETS. Nothing else
 * removes it: its queue in Redis (held and finished jobs, deduplication keys,
 * events stream) is never trimmed again once no worker serves it, its health
 * keys have no expiry, and its delivery rows, attempts, per-user sync records,
 * kept held state and resync cursors stay in MongoDB; pending rows are never
 * purged. Refused while the target is configured here or a worker process is
 * still attached to its queue. A name used again later is a new target (bring
 * it up to date with `targets resync`). Running it twice is harmless.
 */
export async function forgetTarget(deps: ForgetTargetDeps, name: string): Promise<ForgetTargetResult> {
  if (deps.configured.includes(name)) {
    throw new TargetStillInUseError(`Target ${name} is still in DOWNSTREAM_TARGETS: remove it there, restart the workers, then forget it.`);
  }
  const queue = new Queue(deliveryQueueName(name), { connection: deps.redis, prefix: deps.queuePrefix });
  let jobs: number;
  try {
    const workers = await queue.getWorkersCount();
    if (workers > 0) {
      throw new TargetStillInUseError(`${workers} worker connection(s) still serve target ${name}: restart the workers without it in DOWNSTREAM_TARGETS first.`);
    }
    const counts = await queue.getJobCounts('waiting', 'active', 'delayed', 'prioritized', 'waiting-children', 'paused', 'completed', 'failed');
    jobs = Object.values(counts).reduce((a, b) => a + b, 0);
    await queue.obliterate({ force: true });
  } finally {
    await queue.close();
  }
  await deps.redis.del(`${deps.queuePrefix}:target-health:${name}`, `${deps.queuePrefix}:target-probe:${name}`);

  const { deliveries, deliveryAttempts, syncStates, targetStates, relayCursors } = collectionsOf(deps.models);
  const result: ForgetTargetResult = { target: name, jobs, deliveries: 0, attempts: 0, sync_states: 0 };
  for (;;) {
    const ids = (await deliveries.find<Pick<DeliveryDoc, '_id'>>({ target: name }, { projection: { _id: 1 } }).limit(BATCH).toArray()).map((d) => d._id);
    if (ids.length === 0) break;
    // History first, as the retention purge does: a run cut short leaves rows without history, never the reverse.
    result.attempts += (await deliveryAttempts.deleteMany({ delivery_id: { $in: ids } })).deletedCount;
    result.deliveries += (await deliveries.deleteMany({ _id: { $in: ids }, target: name })).deletedCount;
  }
  result.sync_states = (await syncStates.deleteMany({ target: name })).deletedCount;
  await targetStates.deleteOne({ _id: name });
  // Resync cursors are `resync:<target>:<organization or *>[:force]`; target names hold no regex characters but "." and "-".
  await relayCursors.deleteMany({ _id: { $regex: `^resync:${name.replace(/[.-]/g, '\\$&')}:` } });
  return result;
}
