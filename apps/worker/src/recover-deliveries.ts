import type { Types } from 'mongoose';
import { eventJobOf, NotFoundError, type DeliveryDoc, type ProviderUserDoc } from '@connect/shared';
import { deliveryIdOf, enqueueDelivery } from './deliveries-queue.ts';
import type { ReplayDeps } from './replay-deliveries.ts';

export interface RecoverWindow {
  target: string;
  since: Date;
  /** Exclusive; default: now. */
  until?: Date;
  batchSize?: number;
}

/**
 * `deliveries recover --target NAME --since ISO [--until ISO]`
 * (docs/operations.md): after an incident, everything one target missed.
 *
 * Selects the target's dead letters by the time they were dead-lettered
 * (`dead_lettered_at`, written when a row turns `failed`), in
 * `[since, until)`, walking them by `_id` in batches. For each user among them,
 * its rows are claimed (failed → pending, conditional on still being failed, so
 * a recover run twice, or racing a replay, sends once) and ONE delivery job is
 * enqueued, built from the user's current document: the target gets the newest
 * state, with `user.created` first if it never had it; the delivery processor
 * never sends a version older than one the target has, and records the older
 * rows `superseded`. Returns the number of dead letters put back.
 */
export async function recoverDeliveries(deps: ReplayDeps, window: RecoverWindow): Promise<{ recovered: number }> {
  const { Delivery, ProviderUser } = deps.models;
  if (!deps.targets.some((t) => t.name === window.target)) throw new NotFoundError(`No configured target named ${window.target}.`);
  const until = window.until ?? new Date();
  const batchSize = window.batchSize ?? 500;
  const inWindow = { target: window.target, status: 'failed' as const, dead_lettered_at: { $gte: window.since, $lt: until } };
  let recovered = 0;
  let after: string | undefined;
  for (;;) {
    const rows = await Delivery.find({ ...inWindow, ...(after ? { _id: { $gt: after } } : {}) })
      .sort({ _id: 1 })
      .limit(batchSize)
      .select({ _id: 1, user_id: 1 })
      .lean<Pick<DeliveryDoc, '_id' | 'user_id'>[]>();
    if (rows.length === 0) break;
    after = rows.at(-1)!._id;
    const byUser = new Map<string, { userId: Types.ObjectId; ids: string[] }>();
    for (const row of rows) {
      const key = row.user_id.toString();
      const entry = byUser.get(key) ?? { userId: row.user_id, ids: [] };
      entry.ids.push(row._id);
      byUser.set(key, entry);
    }
    const users = new Map(
      (await ProviderUser.find({ _id: { $in: [...byUser.values()].map((e) => e.userId) } }).lean<ProviderUserDoc[]>()).map((u) => [u._id.toString(), u]),
    );
    for (const [key, { ids }] of byUser) {
      const user = users.get(key);
      if (!user) continue;
      const claimedAt = new Date();
      const claimed = await Delivery.updateMany({ _id: { $in: ids }, ...inWindow }, { $set: { status: 'pending', updated_at: claimedAt } });
      if (claimed.modifiedCount === 0) continue;
      const { event, created } = eventJobOf(user);
      try {
        // A job id of its own: the original ones may still sit in BullMQ's failed set.
        await enqueueDelivery(deps.deliveries, { user_id: key, target: window.target, event, created }, `recover.${deliveryIdOf(event.id, window.target)}.${claimedAt.getTime()}`);
      } catch (err) {
        await Delivery.updateMany({ _id: { $in: ids }, status: 'pending', updated_at: claimedAt }, { $set: { status: 'failed', updated_at: new Date() } });
        throw err;
      }
      recovered += claimed.modifiedCount;
    }
    if (rows.length < batchSize) break;
  }
  return { recovered };
}
