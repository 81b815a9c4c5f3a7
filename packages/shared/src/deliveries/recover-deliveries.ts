import { UnknownTargetError } from '../domain-errors.ts';
import { eventJobOf } from '../events/user-event.ts';
import { findByIds } from '../models/find-by-ids.ts';
import type { ProviderUserDoc } from '../models/models.ts';
import { deliveryIdOf } from './delivery-queues.ts';
import type { ReplayDeps } from './replay-deliveries.ts';

export interface RecoverWindow {
  target: string;
  since: Date;
  /** Exclusive; default and latest: the time the run starts. */
  until?: Date;
  batchSize?: number;
  /** Aborted: stop before the next user (never between a user's claim and its job), `interrupted`. */
  signal?: AbortSignal;
}

/**
 * `deliveries recover --target NAME --since ISO [--until ISO]`
 * (docs/operations.md): after an incident, everything one target missed.
 *
 * Selects the target's dead letters by the time they were dead-lettered
 * (`failed_at`, written when a row turns `failed`), in
 * `[since, until)`, in batches of one read. For each user among them,
 * its rows are claimed (failed → pending, conditional on still being failed in
 * the window, so a recover run twice, or racing a replay, sends once) and ONE
 * delivery job is enqueued, built from the user's current document: the target
 * gets the newest state, with `user.created` first if it never had it; the
 * delivery processor never sends a version older than one the target has, and
 * records the older rows `superseded`. Returns the number of dead letters put
 * back, and `interrupted` when `signal` stopped it (running it again recovers the rest).
 */
export async function recoverDeliveries(deps: ReplayDeps, window: RecoverWindow): Promise<{ recovered: number; interrupted?: true }> {
  if (!deps.targets.some((t) => t.name === window.target)) throw new UnknownTargetError(window.target);
  // Ends now at the latest: a row dead-lettered again while this runs (its receiver still refuses) is
  // a new dead letter, not one this run walks into a second time.
  const now = new Date();
  const span = { target: window.target, since: window.since, until: window.until && window.until < now ? window.until : now };
  const batchSize = window.batchSize ?? 500;
  let recovered = 0;
  for await (const rows of deps.store.deadLettersOf(span, batchSize)) {
    const byUser = new Map<string, string[]>();
    const userIds = new Map<string, ProviderUserDoc['_id']>();
    for (const row of rows) {
      byUser.set(row.user_id.toString(), [...(byUser.get(row.user_id.toString()) ?? []), row._id]);
      userIds.set(row.user_id.toString(), row.user_id);
    }
    // By _id one at a time: FerretDB runs a `$in` as a scan of every user stored, once per batch.
    const users = new Map((await findByIds(deps.store.collections.providerUsers, [...userIds.values()])).map((u) => [u._id.toString(), u]));
    for (const [userId, ids] of byUser) {
      if (window.signal?.aborted) return { recovered, interrupted: true };
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
  }
  return { recovered };
}
