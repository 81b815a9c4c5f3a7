import type { Job, Queue } from 'bullmq';
import { Types } from 'mongoose';
import type { Logger } from 'pino';
import { collectionOf, isDuplicateKeyError, type DeliveryDoc, type DownstreamTarget, type Models, type UserEvent, type UserEventJob } from '@connect/shared';
import { deliveryIdOf, enqueueDelivery, type DeliveryJob } from './deliveries-queue.ts';

export interface FanOutDeps {
  models: Models;
  deliveries: Queue<DeliveryJob>;
  targets: readonly DownstreamTarget[];
  log: Logger;
}

/** The execution-log row of an event for a target, inserted once (a duplicate means it exists). */
export async function insertPendingDelivery(models: Models, userId: string, target: string, event: UserEvent): Promise<void> {
  const now = new Date();
  const row: DeliveryDoc = {
    _id: deliveryIdOf(event.id, target),
    event_id: event.id,
    event_type: event.type,
    organization_id: event.organization_id,
    user_id: new Types.ObjectId(userId),
    external_provider_id: event.data.external_provider_id,
    target,
    version: event.version,
    status: 'pending',
    attempts: 0,
    last_status_code: null,
    last_error: null,
    created_at: now,
    updated_at: now,
    delivered_at: null,
  };
  try {
    await collectionOf(models.Delivery).insertOne(row);
  } catch (err) {
    if (!isDuplicateKeyError(err)) throw err;
  }
}

/**
 * `user-events` → one `deliveries` job per configured target, so each target is
 * retried on its own and a target that is down holds up nobody else (SPEC §2).
 * The Delivery row is written before the job exists, so the delivery processor
 * always finds it; a re-published event (same id) adds nothing new: the row
 * exists, and the job id or the per-target version check drops the duplicate.
 */
export function createFanOut(deps: FanOutDeps) {
  return async (job: Job<UserEventJob>): Promise<{ targets: number }> => {
    const { user_id, event, created } = job.data;
    for (const target of deps.targets) {
      await insertPendingDelivery(deps.models, user_id, target.name, event);
      await enqueueDelivery(deps.deliveries, { user_id, target: target.name, event, created });
    }
    deps.log.debug({ event_id: event.id, version: event.version, targets: deps.targets.length }, 'event fanned out');
    return { targets: deps.targets.length };
  };
}
