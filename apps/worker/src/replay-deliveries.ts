import type { Queue } from 'bullmq';
import { eventJobOf, NotFoundError, type DeliveryDoc, type DeliveryStatus, type DownstreamTarget, type Models, type ProviderUserDoc } from '@connect/shared';
import { enqueueDelivery, type DeliveryJob } from './deliveries-queue.ts';

export interface ReplayDeps {
  models: Models;
  deliveries: Queue<DeliveryJob>;
  targets: readonly DownstreamTarget[];
}

/** A Delivery row as operators see it: ids, status and error, never the user's data (emails). */
export interface DeliveryView {
  id: string;
  event_id: string;
  event_type: string;
  organization_id: string;
  external_provider_id: string;
  target: string;
  version: number;
  status: DeliveryStatus;
  attempts: number;
  last_status_code: number | null;
  last_error: string | null;
  created_at: string;
  updated_at: string;
  delivered_at: string | null;
}

function viewOf(d: DeliveryDoc): DeliveryView {
  return {
    id: d._id,
    event_id: d.event_id,
    event_type: d.event_type,
    organization_id: d.organization_id,
    external_provider_id: d.external_provider_id,
    target: d.target,
    version: d.version,
    status: d.status,
    attempts: d.attempts ?? 0,
    last_status_code: d.last_status_code ?? null,
    last_error: d.last_error ?? null,
    created_at: d.created_at.toISOString(),
    updated_at: d.updated_at.toISOString(),
    delivered_at: d.delivered_at ? d.delivered_at.toISOString() : null,
  };
}

export class ReplayError extends Error {}

/** `deliveries list --status failed`: the dead letters (or any status), oldest change first. */
export async function listDeliveries(models: Models, filter: { status?: DeliveryStatus; limit?: number } = {}): Promise<DeliveryView[]> {
  const rows = await models.Delivery.find(filter.status ? { status: filter.status } : {})
    .sort({ updated_at: 1, _id: 1 })
    .limit(filter.limit ?? 1000)
    .lean<DeliveryDoc[]>();
  return rows.map(viewOf);
}

/**
 * `deliveries replay ID`: sends a dead-lettered delivery again, built from the
 * user's current document, so the target gets the newest state (the old event
 * is then marked superseded if a newer one went out). The row turns `pending`
 * before the job exists, conditionally on still being `failed`, so a replay run
 * twice enqueues once and the job can never be overwritten by this function.
 * The SyncState row is left to the delivery processor (its only writer: on
 * FerretDB a second writer could erase its `delivered_version`); GET /users
 * shows `failed` until the replayed job's first attempt marks it `pending`.
 */
export async function replayDelivery(deps: ReplayDeps, id: string): Promise<DeliveryView> {
  const { Delivery, ProviderUser } = deps.models;
  const row = await Delivery.findById(id).lean<DeliveryDoc>();
  if (!row) throw new NotFoundError(`No delivery ${id}.`);
  if (row.status !== 'failed') throw new ReplayError(`Delivery ${id} is ${row.status}; only failed deliveries are replayed.`);
  if (!deps.targets.some((t) => t.name === row.target)) throw new ReplayError(`Target ${row.target} is no longer configured.`);
  const user = await ProviderUser.findById(row.user_id).lean<ProviderUserDoc>();
  if (!user) throw new NotFoundError(`The user of delivery ${id} no longer exists.`);

  const claimedAt = new Date();
  const claimed = await Delivery.updateOne({ _id: id, status: 'failed' }, { $set: { status: 'pending', updated_at: claimedAt } });
  if (claimed.modifiedCount === 0) throw new ReplayError(`Delivery ${id} is being replayed already.`);
  try {
    const { event, created } = eventJobOf(user);
    // A job id of its own: the original one may still sit in BullMQ's failed set.
    await enqueueDelivery(deps.deliveries, { user_id: user._id.toString(), target: row.target, event, created }, `replay.${id}.${Date.now()}`);
  } catch (err) {
    await Delivery.updateOne({ _id: id, status: 'pending' }, { $set: { status: 'failed', updated_at: new Date() } });
    throw err;
  }
  // What this call did (the row as it left it): a re-read could already show the
  // replayed job's outcome, which the caller learns from `deliveries list`.
  return viewOf({ ...row, status: 'pending', updated_at: claimedAt });
}

/** `deliveries replay --all-failed`. */
export async function replayAllFailed(deps: ReplayDeps): Promise<{ replayed: DeliveryView[]; errors: { id: string; error: string }[] }> {
  const failed = await listDeliveries(deps.models, { status: 'failed', limit: 100_000 });
  const replayed: DeliveryView[] = [];
  const errors: { id: string; error: string }[] = [];
  for (const d of failed) {
    try {
      replayed.push(await replayDelivery(deps, d.id));
    } catch (err) {
      errors.push({ id: d.id, error: (err as Error).message });
    }
  }
  return { replayed, errors };
}
