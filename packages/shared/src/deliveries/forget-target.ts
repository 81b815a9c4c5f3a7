import { Queue } from 'bullmq';
import { TARGET_NAME, TARGET_NAME_RULE } from '../config.ts';
import { DomainError, ValidationError } from '../domain-errors.ts';
import type { RedisClient } from '../events/redis-connection.ts';
import { deleteEachById } from '../models/each-by-id.ts';
import { inBatches } from '../models/in-batches.ts';
import { collectionsOf, type Models } from '../models/models.ts';
import { deleteDeliveriesWithHistory } from './delete-deliveries.ts';
import { deliveryQueueName } from './delivery-queues.ts';
import { resyncCursorRange } from './resync-target.ts';
import { TargetHealth } from './target-health.ts';

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
  if (!TARGET_NAME.test(name)) throw new ValidationError([{ path: 'NAME', message: TARGET_NAME_RULE }], `${JSON.stringify(name.slice(0, 80))} is not a target name (${TARGET_NAME_RULE}).`);
  if (deps.configured.includes(name)) {
    throw new TargetStillInUseError(`Target ${name} is still in DOWNSTREAM_TARGETS: remove it there, restart the workers, then forget it.`);
  }
  const queue = new Queue(deliveryQueueName(name), { connection: deps.redis, prefix: deps.queuePrefix });
  let jobs: number;
  try {
    const workers = await queue.getWorkers();
    // Without CLIENT LIST (some hosted Redis) BullMQ answers one row with no `rawname`: it cannot tell.
    if (workers.some((w) => !w.rawname)) {
      throw new TargetStillInUseError(`This Redis does not list its clients, so whether a worker still serves target ${name} cannot be checked; forget it where CLIENT LIST is allowed.`);
    }
    if (workers.length > 0) {
      throw new TargetStillInUseError(`${workers.length} worker connection(s) still serve target ${name}: restart the workers without it in DOWNSTREAM_TARGETS first.`);
    }
    const counts = await queue.getJobCounts('waiting', 'active', 'delayed', 'prioritized', 'waiting-children', 'paused', 'completed', 'failed');
    jobs = Object.values(counts).reduce((a, b) => a + b, 0);
    await queue.obliterate({ force: true });
    // A Retry-After hold (queue.rateLimit) is a key obliterate leaves: a name used again would start held.
    await queue.removeRateLimitKey();
  } finally {
    await queue.close();
  }
  await new TargetHealth(deps.redis, deps.queuePrefix).forget(name);

  const { syncStates, targetStates, relayCursors } = collectionsOf(deps.models);
  const deleted = await deleteDeliveriesWithHistory(deps.models, { target: name });
  // One read of the target's records (there is no index on target: a scan, once), deleted by `_id`
  // in batches as they come: one delete of them all could outlast the CLI's per-operation timeout
  // on a large deployment, and a delete by `$in` scans the whole collection on FerretDB, per batch.
  let syncs = 0;
  for await (const records of inBatches(syncStates.find({ target: name }, { projection: { _id: 1 } }), 1000)) {
    syncs += await deleteEachById(syncStates, records.map((r) => r._id), { target: name });
  }
  await targetStates.deleteOne({ _id: name });
  await relayCursors.deleteMany({ _id: resyncCursorRange(name) });
  return { target: name, jobs, deliveries: deleted.deliveries, attempts: deleted.attempts, sync_states: syncs };
}
