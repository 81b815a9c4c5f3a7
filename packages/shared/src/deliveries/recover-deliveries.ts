import { UnknownTargetError } from '../domain-errors.ts';
import { eventJobOf } from '../events/user-event.ts';
import type { ProviderUserDoc } from '../models/models.ts';
import { deliveryIdOf } from './delivery-queues.ts';
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
 * (`failed_at`, written when a row turns `failed`), in
 * `[since, until)`, walking them by `_id` in batches. For each user among them,
 * its rows are claimed (failed → pending, conditional on still being failed in
 * the window, so a recover run twice, or racing a replay, sends once) and ONE
 * delivery job is enqueued, built from the user's current document: the target
 * gets the newest state, with `user.created` first if it never had it; the
 * delivery processor never sends a version older than one the target has, and
 * records the older rows `superseded`. Returns the number of dead letters put
 * back.
 */
export async function recoverDeliveries(deps: ReplayDeps, window: RecoverWindow): Promise<{ recovered: number }> {
  if (!deps.targets.some((t) => t.name === window.target)) throw new UnknownTargetError(window.target);
  const span = { target: window.target, since: window.since, until: window.until ?? new Date() };
  const batchSize = window.batchSize ?? 500;
  let recovered = 0;
  let after: string | undefined;
  for (;;) {
    const rows = await deps.store.deadLettersOf(span, after, batchSize);
    if (rows.length === 0) break;
    after = rows.at(-1)!._id;
    const byUser = new Map<string, string[]>();
    const userIds = new Map<string, ProviderUserDoc['_id']>();
    for (const row of rows) {
      byUser.set(row.user_id.toString(), [...(byUser.get(row.user_id.toString()) ?? []), row._id]);
      userIds.set(row.user_id.toString(), row.user_id);
    }
    const users = new Map(
      (await deps.store.collections.providerUsers.find({ _id: { $in: [...userIds.values()] } }).toArray()).map((u) => [u._id.toString(), u]),
    );
    for (const [userId, ids] of byUser) {
      const user = users.get(userId);
      if (!user) continue;
      const claimedAt = new Date();
      const claimed = await deps.store.claimForRecover(ids, span, claimedAt);
      if (claimed === 0) continue;
      const { event, created } = eventJobOf(user);
      try {
        // A job id of its own: the original ones may still sit in BullMQ's failed set.
        await deps.queues.enqueue({ user_id: userId, target: window.target, event, created }, `recover.${deliveryIdOf(event.id, window.target)}.${claimedAt.getTime()}`);
      } catch (err) {
        await deps.store.releaseRecoverClaim(ids, claimedAt);
        throw err;
      }
      recovered += claimed;
    }
    if (rows.length < batchSize) break;
  }
  return { recovered };
}
