/**
 * The outbox relay: from a user document's embedded newest event to BullMQ.
 *
 * Guarantees, and where they hold:
 * - No event is lost (MongoDB and FerretDB). The event is part of the user
 *   document's own write, so it exists exactly when the change does. Publishing
 *   never edits the user document: it is `queue.add(job, { jobId: event.id })`
 *   and nothing else. So the relay cannot race an API write, which matters on
 *   FerretDB where updates rewrite whole documents without compare-and-set.
 * - "Published" means BullMQ holds a job with the event's id (waiting, active,
 *   delayed, or finished and not yet removed), or the fan-out has run for it:
 *   its Delivery row exists for every configured target (a row for one target
 *   only may be a resync, replay or recover job's, which never fans out). The job is the first marker, in the same Redis: a
 *   Redis that loses the job before fan-out has lost the marker with it, so the
 *   event is published again, where a marker kept in MongoDB would have claimed
 *   it safe. And publishing costs no database write.
 * - Trimming finished jobs (removeOnComplete / removeOnFail, by age and count;
 *   see queues.ts) neither loses an event nor publishes one twice:
 *   - lose: only finished jobs are trimmed. A completed events job is one whose
 *     fan-out wrote its Delivery rows and delivery jobs, so the event lives on
 *     in them. An events job never fails for good: the fan-out parks itself on
 *     its last attempt, and one that stalled too often is put back by the worker
 *     (start-worker.ts). A failed delivery job is a dead letter whose Delivery
 *     row (status failed) is what replay and recover read, not the job.
 *   - twice: the sweep asks "published?" only for users at or after its cursor,
 *     which passes a user within SAFETY_LAG_MS of its write; after that nobody
 *     asks again. If the cursor is held back (a publish that keeps failing) long
 *     enough for the count limit to trim a job of a user after it, the
 *     question falls through to the Delivery rows the fan-out wrote (kept
 *     DELIVERY_RETENTION_DAYS, far longer than any job), found by id, so the
 *     event is not fanned out a second time. Were both gone, the result would
 *     still be a duplicate with the same event id that the delivery processor
 *     drops by its per-target version check, never a second callback.
 *   docs/operations.md says the same for operators.
 * - A crash between the write and the enqueue, or Redis being down, only delays
 *   the event: the sweep walks users by (updated_at, _id) from a stored cursor,
 *   publishes every user whose newest event has no job, and moves the cursor only
 *   over users that are published and older than SAFETY_LAG_MS, so neither a long
 *   outage nor a write still in flight (its updated_at was taken before the sweep
 *   read past it) is skipped.
 * - Duplicates are possible (two sweeps at once, a job removed before the cursor
 *   passed its user): they carry the same event id; BullMQ drops a job id it
 *   still holds and the worker drops a version a target already has.
 * - Per-user order of writes on FerretDB holds only for writes from one API
 *   process (see upsert-provider-user.ts); across processes it needs MongoDB.
 */
import type { Queue } from 'bullmq';
import type { ChainableCommander } from 'ioredis';
import type { Filter } from 'mongodb';
import type { Logger } from 'pino';
import { GroupCommit } from '../group-commit.ts';
import { collectionsOf, type DeliveryDoc, type LastEvent, type Models, type ProviderUserDoc } from '../models/models.ts';
import { findByIds } from '../models/find-by-ids.ts';
import { eventJobOf, type UserEventJob } from './user-event.ts';

export const SWEEP_CURSOR_ID = 'outbox-sweep';
const SAFETY_LAG_MS = 30_000;

export interface OutboxRelayDeps {
  models: Models;
  queue: Queue<UserEventJob>;
  log: Logger;
  now?: () => Date;
  /** Called when a publish right after a write fails (a metric). */
  onPublishFailure?: () => void;
  /**
   * The configured target names: a fan-out writes one Delivery row per target,
   * id `<event id>.<target>`, which is the second "published" marker (see above).
   */
  targetNames?: readonly string[];
}

export interface SweepResult {
  scanned: number;
  published: number;
  failed: boolean;
  /** The cursor moved past every user of this pass: there may be more after it, to look at now. */
  passedAll: boolean;
}

export class OutboxRelay {
  private readonly inFlight = new Set<Promise<unknown>>();
  /** Jobs go to BullMQ in batches of whatever arrived while the last batch was in flight. */
  private readonly jobs: GroupCommit<UserEventJob>;

  constructor(private readonly deps: OutboxRelayDeps) {
    this.jobs = new GroupCommit(async (jobs) => {
      await deps.queue.addBulk(jobs.map((job) => ({ name: job.event.type, data: job, opts: { jobId: job.event.id } })));
    });
  }

  /** Publishes the user's newest event. Throws when Redis does not take it. */
  async publish(user: ProviderUserDoc): Promise<void> {
    await this.jobs.push(eventJobOf(user));
  }

  /** The events among these that BullMQ holds a job for (see the top of this file). */
  async publishedAmong(eventIds: readonly string[]): Promise<Set<string>> {
    const published = await publishedAmong(this.deps.queue, eventIds);
    const missing = eventIds.filter((id) => !published.has(id));
    const targets = this.deps.targetNames ?? [];
    if (missing.length > 0 && targets.length > 0) {
      // The job was trimmed (or never made): did its fan-out run? Each row by _id, an indexed lookup (findByIds).
      // Every target's row must be there: one target's row alone may come from a resync,
      // replay or recover job that sent this newest event to that target only.
      const rows = await findByIds<DeliveryDoc, Pick<DeliveryDoc, 'event_id'>>(collectionsOf(this.deps.models).deliveries, missing.flatMap((id) => targets.map((t) => `${id}.${t}`)), { projection: { event_id: 1 } });
      const perEvent = new Map<string, number>();
      for (const row of rows) perEvent.set(row.event_id, (perEvent.get(row.event_id) ?? 0) + 1);
      for (const [id, n] of perEvent) if (n === targets.length) published.add(id);
    }
    return published;
  }

  /**
   * Events not published yet, for the metric: among the users at or after the
   * sweep's cursor (everything before it is published, by construction), at
   * most `limit` of them. The cost follows the outbox's backlog (about
   * SAFETY_LAG_MS of writes, more during an outage), never the number of users
   * stored; `capped` says the backlog was larger than `limit`, and the count is
   * then over some `limit` of them (a lower bound). Unsorted on purpose: a count
   * needs no order, and FerretDB sorts by reading the whole collection (a sort by
   * updated_at with no sweep cursor took tens of seconds at 100,000 users).
   */
  async unpublishedCount(limit = 10_000): Promise<{ count: number; capped: boolean }> {
    const { providerUsers, relayCursors } = collectionsOf(this.deps.models);
    const cursor = await relayCursors.findOne({ _id: SWEEP_CURSOR_ID });
    const users = await providerUsers
      .find<{ last_event: Pick<LastEvent, 'id'> }>(cursor ? { updated_at: { $gte: cursor.updated_at } } : {}, { projection: { 'last_event.id': 1 } })
      .limit(limit)
      .toArray();
    const ids = users.map((u) => u.last_event.id);
    const published = await this.publishedAmong(ids);
    return { count: ids.length - published.size, capped: users.length === limit };
  }

  /**
   * Right after the write, without holding up the answer. A failure is logged and
   * left to the sweep. `drain()` waits for these on shutdown.
   */
  publishSoon(user: ProviderUserDoc): void {
    const p = this.publish(user)
      .catch((err: Error) => {
        this.deps.onPublishFailure?.();
        this.deps.log.warn({ err: err.message, event_id: user.last_event.id }, 'event not published yet; the sweep will retry');
      })
      .finally(() => this.inFlight.delete(p));
    this.inFlight.add(p);
  }

  async drain(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }

  /** One pass of the sweep over at most `batchSize` users after the cursor. */
  async sweep(batchSize = 500): Promise<SweepResult> {
    const { providerUsers, relayCursors } = collectionsOf(this.deps.models);
    const cursor = await relayCursors.findOne({ _id: SWEEP_CURSOR_ID });
    // The sweep always stores a user with its time; a cursor without one (null) passes no tie.
    const filter: Filter<ProviderUserDoc> = cursor
      ? {
          $or: [
            { updated_at: { $gt: cursor.updated_at } },
            ...(cursor.user_id ? [{ updated_at: cursor.updated_at, _id: { $gt: cursor.user_id } }] : []),
          ],
        }
      : {};
    const users = await providerUsers.find(filter).sort({ updated_at: 1, _id: 1 }).limit(batchSize).toArray();
    if (users.length === 0) return { scanned: 0, published: 0, failed: false, passedAll: false };

    const published = await this.publishedAmong(users.map((u) => u.last_event.id));

    const horizon = (this.deps.now?.() ?? new Date()).getTime() - SAFETY_LAG_MS;
    // Published together (the relay batches them); the cursor stops before the first failure.
    const unpublished = users.filter((u) => !published.has(u.last_event.id));
    const outcomes = await Promise.allSettled(unpublished.map((u) => this.publish(u)));
    const notPublished = new Set<string>();
    outcomes.forEach((o, i) => {
      if (o.status === 'rejected') notPublished.add(unpublished[i]!.last_event.id);
    });
    const failure = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected');
    if (failure) this.deps.log.warn({ err: (failure.reason as Error).message }, 'outbox sweep could not publish; will retry');
    const failed = failure !== undefined;
    const count = unpublished.length - notPublished.size;
    let advanceTo: ProviderUserDoc | undefined;
    for (const user of users) {
      if (notPublished.has(user.last_event.id)) break;
      if (user.updated_at.getTime() <= horizon) advanceTo = user;
    }
    // The cursor moves over the published prefix that is older than the horizon; within
    // the lag window, or past a user that could not be published, it stays put and a
    // later pass looks at those users again.
    if (advanceTo) {
      await relayCursors.updateOne(
        { _id: SWEEP_CURSOR_ID },
        { $set: { updated_at: advanceTo.updated_at, user_id: advanceTo._id } },
        { upsert: true },
      );
    }
    return { scanned: users.length, published: count, failed, passedAll: advanceTo === users.at(-1) };
  }
}

/**
 * The events among these that the events queue holds a job for: "published" as
 * the top of this file defines it. A function of the queue alone, so a metric can
 * ask without holding the relay.
 */
export async function publishedAmong(queue: Queue<UserEventJob>, eventIds: readonly string[]): Promise<Set<string>> {
  if (eventIds.length === 0) return new Set();
  const client = await queue.client;
  const pipeline = client.pipeline() as unknown as ChainableCommander;
  // A job is a hash at <prefix>:<queue>:<job id>; with a hash-tagged prefix every key is on one cluster slot.
  for (const id of eventIds) pipeline.exists(queue.toKey(id));
  const results = (await pipeline.exec()) ?? [];
  const published = new Set<string>();
  results.forEach(([err, exists], i) => {
    if (err) throw err;
    if (exists === 1) published.add(eventIds[i]!);
  });
  return published;
}
