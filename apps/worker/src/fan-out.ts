import { DelayedError, type Job } from 'bullmq';
import type { Logger } from 'pino';
import { GroupCommit, parseUserEventJob, type DeliveryDoc, type DeliveryJob, type DeliveryQueues, type DeliveryStore, type DownstreamTarget, type UserEventJob } from '@connect/shared';

export interface FanOutDeps {
  store: DeliveryStore;
  deliveries: DeliveryQueues;
  targets: readonly DownstreamTarget[];
  log: Logger;
  /** True while another live worker knows a target this one does not (fan-out-roster.ts): its jobs are handed back. */
  standsBack?: () => boolean;
}

/**
 * `user-events` → one job on each configured target's own queue, so each target is
 * retried on its own and a target that is down holds up nobody else (docs/delivery.md).
 * The pending Delivery rows and the jobs are written at the same time: the
 * delivery processor upserts its row whatever it finds, so a fast delivery that
 * writes `delivered` first only makes the pending insert a no-op (duplicate
 * key), and the row insert is not on the way from the write to the callback.
 * A re-published event (same id) adds nothing new: the row exists, and the job
 * id or the per-target version check drops the duplicate. A job that goes into
 * one already there for its (user, target) is the one case where the row can
 * land after the job that settles it ran: that row is checked once written.
 * Rows that are sequential instead (row, then job) would close it too, at the
 * cost of a database round trip on every event's way to its callback.
 */
export function createFanOut(deps: FanOutDeps & { giveUpNeverDelayMs?: number }) {
  const parkMs = deps.giveUpNeverDelayMs ?? 60_000;
  // Fan-outs running at once share their writes: rows in one insertMany (a row that exists
  // already is fine: inserted once), jobs in one addBulk (each with its own deduplication).
  const rows = new GroupCommit<DeliveryDoc>((docs) => deps.store.insertPending(docs));
  const jobs = new GroupCommit<{ job: DeliveryJob; priority: number; folded?: boolean }>(async (batch) => {
    const folded = await deps.deliveries.enqueueMany(
      batch.map((b) => b.job),
      batch.map((b) => b.priority),
    );
    batch.forEach((b, i) => (b.folded = folded[i]));
  });
  return async (job: Job<UserEventJob>, token?: string): Promise<{ targets: number }> => {
    // Pausing the BullMQ worker stops it fetching, but a job its waiting fetch brought still comes
    // here: handed back (no attempt spent) for a worker that knows every target.
    if (token && deps.standsBack?.()) {
      await job.moveToDelayed(Date.now() + 250, token);
      throw new DelayedError();
    }
    try {
      // Inside the try: a payload that never parses is parked like any other failure, never dropped.
      const { user_id, event, created } = parseUserEventJob(job.data);
      // The event's priority (a bulk organization's, org-pace.ts) goes on to its deliveries.
      const priority = job.priority ?? 0;
      const adds = deps.targets.map((target): { job: DeliveryJob; priority: number; folded?: boolean } => ({ job: { user_id, target: target.name, event, created }, priority }));
      await Promise.all([...deps.targets.map((target) => rows.push(deps.store.pendingRow({ userId: user_id, target: target.name, event }))), ...adds.map((a) => jobs.push(a))]);
      // A job that went into one already there: that one may have settled the rows below the version
      // it sent before this event's row landed. Best effort: the retention pass settles what this misses.
      await Promise.all(
        adds
          .filter((a) => a.folded)
          .map((a) =>
            deps.store.settleIfOvertaken({ userId: user_id, target: a.job.target, event }).catch((err: Error) => deps.log.warn({ event_id: event.id, target: a.job.target, err: err.message }, 'could not check whether this row was overtaken; the retention pass will')),
          ),
      );
    } catch (err) {
      // This job is what marks the event published (a failed job is kept a week), so the sweep
      // would not publish the event again: a fan-out that ran out of attempts (MongoDB down for longer than the
      // events queue's backoff) would lose it. On its last attempt the job is parked and
      // retried a minute later instead, for as long as it takes; it only touches our stores.
      if (job.attemptsMade + 1 >= (job.opts.attempts ?? 1) && token) {
        deps.log.error({ event_id: job.id, err: (err as Error).message }, 'fan-out keeps failing; retrying later');
        await job.moveToDelayed(Date.now() + parkMs, token);
        throw new DelayedError();
      }
      throw err;
    }
    deps.log.debug({ event_id: job.id, targets: deps.targets.length }, 'event fanned out');
    return { targets: deps.targets.length };
  };
}
