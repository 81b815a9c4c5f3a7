/**
 * The outbox relay: from a user document's embedded newest event to BullMQ.
 *
 * Guarantees, and where they hold:
 * - No event is lost (MongoDB and FerretDB). The event is part of the user
 *   document's own write, so it exists exactly when the change does. Publishing
 *   never edits the user document: after `queue.add(job, { jobId: event.id })` the
 *   relay inserts a marker `{ _id: event.id }` into `published_events`
 *   (insert-only, a duplicate means someone already did). So the relay cannot race
 *   an API write, which matters on FerretDB where updates rewrite whole documents
 *   without compare-and-set.
 * - A crash between the write and the enqueue, or Redis being down, only delays
 *   the event: the sweep walks users by (updated_at, _id) from a stored cursor,
 *   publishes every user whose newest event has no marker, and moves the cursor
 *   only over users that are published and older than SAFETY_LAG_MS, so neither a
 *   long outage nor a write still in flight (its updated_at was taken before the
 *   sweep read past it) is skipped.
 * - Duplicates are possible (re-publish after a crash before the marker, two
 *   sweeps at once): they carry the same event id; BullMQ drops a job id it still
 *   holds and the worker drops a version a target already has.
 * - Per-user order of writes on FerretDB holds only for writes from one API
 *   process (see upsert-provider-user.ts); across processes it needs MongoDB.
 */
import type { Queue } from 'bullmq';
import type { Logger } from 'pino';
import { GroupCommit } from '../group-commit.ts';
import { collectionOf, isDuplicateKeyError, type Models, type ProviderUserDoc, type PublishedEventDoc } from '../models/models.ts';
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
  /** Jobs and markers are written in batches of whatever arrived while the last batch was in flight. */
  private readonly jobs: GroupCommit<UserEventJob>;
  private readonly markers: GroupCommit<PublishedEventDoc>;

  constructor(private readonly deps: OutboxRelayDeps) {
    this.jobs = new GroupCommit(async (jobs) => {
      await deps.queue.addBulk(jobs.map((job) => ({ name: job.event.type, data: job, opts: { jobId: job.event.id } })));
    });
    this.markers = new GroupCommit(async (markers) => {
      try {
        await collectionOf(deps.models.PublishedEvent).insertMany(markers, { ordered: false });
      } catch (err) {
        if (!onlyDuplicateKeys(err)) throw err;
      }
    });
  }

  /** Publishes the user's newest event: the job, then its marker. Throws when Redis does not take it. */
  async publish(user: ProviderUserDoc): Promise<void> {
    const job = eventJobOf(user);
    await this.jobs.push(job);
    await this.markers.push({ _id: job.event.id, user_id: user._id, published_at: new Date() });
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
    const { ProviderUser, PublishedEvent, RelayCursor } = this.deps.models;
    const cursor = await RelayCursor.findById(SWEEP_CURSOR_ID).lean();
    const filter = cursor
      ? {
          $or: [
            { updated_at: { $gt: cursor.updated_at } },
            { updated_at: cursor.updated_at, _id: { $gt: cursor.user_id } },
          ],
        }
      : {};
    const users = await ProviderUser.find(filter).sort({ updated_at: 1, _id: 1 }).limit(batchSize).lean<ProviderUserDoc[]>();
    if (users.length === 0) return { scanned: 0, published: 0, failed: false, passedAll: false };

    const markers = await PublishedEvent.find({ _id: { $in: users.map((u) => u.last_event.id) } })
      .select({ _id: 1 })
      .lean();
    const published = new Set(markers.map((m) => m._id));

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
      await RelayCursor.updateOne(
        { _id: SWEEP_CURSOR_ID },
        { $set: { updated_at: advanceTo.updated_at, user_id: advanceTo._id } },
        { upsert: true },
      );
    }
    return { scanned: users.length, published: count, failed, passedAll: advanceTo === users.at(-1) };
  }
}

/** An unordered insertMany that failed only because some markers were there already (someone published too). */
function onlyDuplicateKeys(err: unknown): boolean {
  const writeErrors = (err as { writeErrors?: unknown[] | unknown }).writeErrors;
  const list = Array.isArray(writeErrors) ? writeErrors : writeErrors ? [writeErrors] : [];
  return list.length > 0 ? list.every((e) => isDuplicateKeyError(e)) : isDuplicateKeyError(err);
}
