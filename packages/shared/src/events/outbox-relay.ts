/**
 * The outbox relay: from a user document's embedded newest event to BullMQ.
 *
 * Guarantees, and where they hold:
 * - No event is lost (MongoDB and FerretDB). The event is part of the user
 *   document's own write, so it exists exactly when the change does. Publishing
 *   never edits the user document: it is `queue.add(job, { jobId: event.id })`
 *   and nothing else. So the relay cannot race an API write, which matters on
 *   upstream FerretDB, where updates rewrite whole documents without compare-and-set.
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
 *     in them (should Redis lose its data, delivery jobs included, the worker
 *     requeues pending rows and rewinds this sweep: redis-loss-recovery.ts).
 *     An events job never fails for good: the fan-out parks itself on
 *     its last attempt, and one that stalled too often is put back by the worker
 *     (start-worker.ts). A failed delivery job is a dead letter whose Delivery
 *     row (status failed) is what replay and recover read, not the job.
 *   - twice: the sweep leaves events younger than SWEEP_GRACE_MS to the API's own
 *     publish, so it never reads one between the write and that enqueue and
 *     enqueues it again after the API's job ran and was trimmed. It asks
 *     "published?" only for users in slots after its cursor,
 *     which passes a slot SAFETY_LAG_MS after it ends; after that nobody
 *     asks again. If the cursor is held back (a publish that keeps failing) long
 *     enough for the count limit to trim a job of a user after it, the
 *     question falls through to the Delivery rows the fan-out wrote (kept
 *     DELIVERY_RETENTION_DAYS, far longer than any job), found by id, so the
 *     event is not fanned out a second time. Were both gone, the result would
 *     still be a duplicate with the same event id that the delivery processor
 *     drops by its per-target version check, never a second callback.
 *   docs/operations.md says the same for operators.
 * - A crash between the write and the enqueue, or Redis being down, only delays
 *   the event: every write stores `outbox_slot`, its updated_at in 10 s slots
 *   (outboxSlotOf). The sweep reads the slots after its stored cursor one by one,
 *   publishes every user whose newest event has no job, and moves the cursor only
 *   over slots that ended more than SAFETY_LAG_MS ago and hold nothing
 *   unpublished, so neither a long outage nor a write still in flight (its slot
 *   was taken before the sweep read past it) is skipped. One slot is one equality
 *   lookup: on FerretDB, which pushes down no range and no sort, the earlier walk
 *   by (updated_at, _id) read the whole collection on every pass. Users written
 *   without a slot (by a version from before it) get one from backfillSlots, run
 *   by the worker's sweep loop at start (then hourly while it finds any): the
 *   current slot when their event is unpublished, so an upgrade does not strand it.
 * - Duplicates are possible (two sweeps at once, a job removed before the cursor
 *   passed its user): they carry the same event id; BullMQ drops a job id it
 *   still holds and the worker drops a version a target already has.
 * - Per-user order of writes on FerretDB holds only for writes from one API
 *   process (see upsert-provider-user.ts); across processes it needs MongoDB.
 */
import type { Queue } from 'bullmq';
import type { Filter } from 'mongodb';
import type { ChainableCommander } from 'ioredis';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import { GroupCommit } from '../group-commit.ts';
import { OrgPace } from './org-pace.ts';
import { collectionsOf, OUTBOX_SLOT_MS, outboxSlotOf, type DeliveryDoc, type Models, type ProviderUserDoc, type RelayCursorDoc } from '../models/models.ts';
import { findByIds } from '../models/find-by-ids.ts';
import type { UserKey, WriteLog } from '../provider-users/write-ports.ts';
import { eventJobOf, type UserEventJob } from './user-event.ts';

export const SWEEP_CURSOR_ID = 'outbox-sweep';
/** Users with no `outbox_slot` (missing or null): only documents from before it existed (the type says every user has one). */
const NO_SLOT = { outbox_slot: null } as unknown as Filter<ProviderUserDoc>;
const SAFETY_LAG_MS = 30_000;
/** How far back the sweep reads again when it finds its cursor ahead of the reference clock. */
const CURSOR_AHEAD_REWIND_MS = 3600_000;
/**
 * The sweep leaves events younger than this to the API, which publishes them right after its write.
 * Without it a sweep could read a user between the write and the API's enqueue (no job, no Delivery
 * row yet) and enqueue the event itself after the API's job had run and been trimmed: a second
 * fan-out. Their slots are newer than SAFETY_LAG_MS, so the cursor cannot pass them meanwhile.
 */
export const SWEEP_GRACE_MS = 5_000;
/** publishSoon logs a failure at most once per this long (the publish-failure counter counts each). */
export const PUBLISH_WARN_EVERY_MS = 10_000;

/** At most an hour of slots per pass; a backlog is worked through in passes back to back. */
const MAX_SLOTS_PER_PASS = 360;
/** Ten minutes of empty slots in a row: look up the next slot with a user instead of walking on. */
const EMPTY_SLOTS_BEFORE_SEEK = 60;
/**
 * How long the metric's count trusts a seek it made (unpublishedCount): a settled slot gets no new
 * user but from a write that landed more than SAFETY_LAG_MS late, which the API looks at again
 * itself (recheckLater). A seek is a read of every user on FerretDB, so an API whose workers are
 * stopped pays one per stretch per hour, not one per scrape.
 */
const COUNT_SEEK_TTL_MS = 3600_000;

export interface OutboxRelayDeps {
  models: Models;
  queue: Queue<UserEventJob>;
  log: Logger;
  now?: () => Date;
  /** Who publishes in bulk (org-pace.ts); one of its own by default. */
  pace?: OrgPace;
  /** Called when a publish right after a write fails (a metric). */
  onPublishFailure?: () => void;
  /** When a write of unknown outcome is looked at again (RECHECK_DELAYS_MS; tests shorten them). */
  recheckDelaysMs?: readonly number[];
  /**
   * The configured target names: a fan-out writes one Delivery row per target,
   * id `<event id>.<target>`, which is the second "published" marker (see above).
   */
  targetNames?: readonly string[];
  /**
   * Called before the sweep's cursor moves from `stored` (the cursor this pass read; undefined:
   * none yet) past `slotDone`; the cursor stays where it is when it answers false or fails. The
   * worker tells Redis first, and refuses while Redis has lost data or gone back in time, which its
   * own check then sees and recovers from (apps/worker/src/redis-loss-recovery.ts).
   */
  beforeCursorMoves?: (slotDone: number, stored: number | undefined) => Promise<boolean>;
}

/**
 * When a write whose outcome is unknown is looked at again (recheckLater): after the API's
 * MongoDB socket timeout (30 s) has let go of it, and twice more for a write held up longer
 * server-side (a lock wait).
 */
export const RECHECK_DELAYS_MS: readonly number[] = [60_000, 5 * 60_000, 15 * 60_000];
/** Writes looked at again at once, at most, per process: past it a new one is not (an outage makes every write one). */
const MAX_RECHECKS = 10_000;

export interface SweepResult {
  scanned: number;
  published: number;
  failed: boolean;
  /** The cursor moved past every slot this pass read. */
  passedAll: boolean;
  /** ...and settled slots remain after them (a backlog, after an outage): the next pass should run now. */
  more: boolean;
}

export class OutboxRelay {
  private readonly inFlight = new Set<Promise<unknown>>();
  /** Jobs go to BullMQ in batches of whatever arrived while the last batch was in flight. */
  private readonly jobs: GroupCommit<{ job: UserEventJob; priority: number }>;
  /** Who publishes in bulk: their events go after everyone else's (org-pace.ts). */
  private readonly pace: OrgPace;
  /** The count's seeks (readSlots): from a slot, the next one that held a user, all between settled and empty. */
  private readonly countSeeks = new LRUCache<number, number>({ max: 1000, ttl: COUNT_SEEK_TTL_MS });

  constructor(private readonly deps: OutboxRelayDeps) {
    this.pace = deps.pace ?? new OrgPace();
    const optionsOf = (job: UserEventJob, priority: number) => (priority > 0 ? { jobId: job.event.id, priority } : { jobId: job.event.id });
    this.jobs = new GroupCommit(async (jobs) => {
      // A batch of one (the usual batch below saturation) goes by queue.add: addBulk builds an
      // ioredis pipeline, whose constructor copies every BullMQ script command (about a fifth
      // of addBulk's CPU in a profile of the API under updates). Same job, same jobId.
      if (jobs.length === 1) await deps.queue.add(jobs[0]!.job.event.type, jobs[0]!.job, optionsOf(jobs[0]!.job, jobs[0]!.priority));
      else await deps.queue.addBulk(jobs.map(({ job, priority }) => ({ name: job.event.type, data: job, opts: optionsOf(job, priority) })));
    });
  }

  /** Publishes the user's newest event, after other organizations' when its own publishes in bulk. Throws when Redis does not take it. */
  async publish(user: ProviderUserDoc): Promise<void> {
    await this.jobs.push({ job: eventJobOf(user), priority: this.pace.note(user.organization_id) });
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
   * Events not published yet, for the metric: among the users of the slots the
   * sweep has not passed (everything before them is published, by
   * construction; every user while no sweep has stored a cursor), at most
   * `limit` of them. The cost follows the outbox's
   * backlog (about SAFETY_LAG_MS of writes, more during an outage), except that
   * a long empty stretch after the cursor (every worker stopped) takes a seek,
   * on FerretDB a read of every user: its answer is kept (COUNT_SEEK_TTL_MS), so
   * the scrapes that follow do not pay it again. `capped` says the backlog was
   * larger than `limit`, and the count is then over some `limit` of them (a
   * lower bound).
   */
  async unpublishedCount(limit = 10_000): Promise<{ count: number; capped: boolean }> {
    const { providerUsers, relayCursors } = collectionsOf(this.deps.models);
    const now = this.nowMs();
    const cursor = await relayCursors.findOne({ _id: SWEEP_CURSOR_ID });
    let ids: string[];
    if (cursor) {
      const { slots } = await this.readSlots(await this.firstUnsweptSlot(cursor, now), outboxSlotOf(now), limit, { now, seeks: this.countSeeks });
      ids = slots.flatMap((s) => s.users.map((u) => u.last_event.id)).slice(0, limit);
    } else {
      // No sweep has passed anything yet (no worker so far): every user is after the cursor.
      // Unsorted on purpose: a count needs no order, and FerretDB sorts by reading the whole collection.
      const users = await providerUsers.find<{ last_event: { id: string } }>({}, { projection: { 'last_event.id': 1 } }).limit(limit).toArray();
      ids = users.map((u) => u.last_event.id);
    }
    // Redis away: none of them can be confirmed in the queue, so all count (the sweep has not passed
    // them). The gauge then grows with the outage; failing instead left the value from before it.
    const published = await this.publishedAmong(ids).catch(() => new Set<string>());
    return { count: ids.length - published.size, capped: ids.length === limit };
  }

  private nowMs(): number {
    return (this.deps.now?.() ?? new Date()).getTime();
  }

  /** The last slot the sweep has passed (every event in it and before had its job or its rows), if it has passed any. */
  async sweptThrough(): Promise<number | undefined> {
    const cursor = await collectionsOf(this.deps.models).relayCursors.findOne({ _id: SWEEP_CURSOR_ID }, { projection: { slot_done: 1 } });
    return typeof cursor?.slot_done === 'number' ? cursor.slot_done : undefined;
  }

  /**
   * Where the sweep starts: the slot after `slot_done`. A cursor from before
   * slots: the slot of the last user it passed (`updated_at`). No cursor (a new
   * database): the slot of the oldest user (one sort, on FerretDB a read of the
   * whole collection, until the first cursor is stored), else the first slot
   * not yet settled.
   */
  private async firstUnsweptSlot(cursor: RelayCursorDoc | null, now: number): Promise<number> {
    const { providerUsers } = collectionsOf(this.deps.models);
    if (typeof cursor?.slot_done === 'number') return cursor.slot_done + 1;
    if (cursor?.updated_at) return outboxSlotOf(cursor.updated_at);
    const [oldest] = await providerUsers.find({}, { projection: { updated_at: 1 } }).sort({ updated_at: 1 }).limit(1).toArray();
    return oldest ? outboxSlotOf(oldest.updated_at) : outboxSlotOf(now - SAFETY_LAG_MS);
  }

  /**
   * The users of slots `from`..`to`, one equality lookup per slot (on FerretDB an
   * indexed lookup, where a range or a sort reads the whole collection), until
   * `limit` users are read (the slot that crosses it is read whole) or
   * MAX_SLOTS_PER_PASS slots. After a long quiet stretch (EMPTY_SLOTS_BEFORE_SEEK
   * empty slots in a row) it asks for the next slot that holds a user (one
   * range query) and jumps there, so a worker that was down for a week does not
   * walk 60,000 empty slots one by one. `lastSlot`: the last slot covered (read or
   * known empty), `from - 1` if none. With `memo.seeks`, a seek's answer is kept
   * for the stretch that was settled at `memo.now`, and used again instead of a query.
   */
  private async readSlots(
    from: number,
    to: number,
    limit: number,
    memo?: { now: number; seeks: LRUCache<number, number> },
  ): Promise<{ slots: { slot: number; users: ProviderUserDoc[] }[]; lastSlot: number }> {
    const { providerUsers } = collectionsOf(this.deps.models);
    const seek = async (slot: number): Promise<number | undefined> => {
      const known = memo?.seeks.get(slot);
      if (known !== undefined) return known;
      const [next] = await providerUsers.find({ outbox_slot: { $gte: slot } }, { projection: { outbox_slot: 1 } }).sort({ outbox_slot: 1 }).limit(1).toArray();
      if (memo) {
        // Kept only as far as the slots were settled: a later slot may still get users.
        const settledEnd = outboxSlotOf(memo.now - SAFETY_LAG_MS);
        const emptyUpTo = Math.min(next ? next.outbox_slot : settledEnd, settledEnd);
        if (emptyUpTo > slot) memo.seeks.set(slot, emptyUpTo);
      }
      return next?.outbox_slot;
    };
    const slots: { slot: number; users: ProviderUserDoc[] }[] = [];
    let read = 0;
    let empty = 0;
    let slot = from;
    for (let n = 0; slot <= to && read < limit && n < MAX_SLOTS_PER_PASS; n++, slot++) {
      if (empty >= EMPTY_SLOTS_BEFORE_SEEK) {
        const nextSlot = Math.min((await seek(slot)) ?? to + 1, to + 1);
        empty = 0;
        if (nextSlot > slot) {
          slot = nextSlot - 1; // the loop's slot++ lands on it; the slots between are empty
          continue;
        }
      }
      const users = await providerUsers.find({ outbox_slot: slot }).toArray();
      empty = users.length === 0 ? empty + 1 : 0;
      read += users.length;
      slots.push({ slot, users });
    }
    return { slots, lastSlot: slot - 1 };
  }

  private readonly rechecks = new Map<string, NodeJS.Timeout>();
  /** When publishSoon last logged a failure, and the failures since that it did not log. */
  private publishWarned = { at: -Infinity, unsaid: 0 };

  /**
   * A write the database did not answer in time may land later than the sweep allows for
   * (a lock wait, a slow server: its slot was taken before it was sent, and the cursor passes a
   * slot SAFETY_LAG_MS after it ends), and an integrator's retry then finds it `unchanged`: its
   * event would be published by nobody. So the user is read again after each of RECHECK_DELAYS_MS
   * and its newest event published if neither a job nor the fan-out's rows show it was. In this
   * process's memory only: a process that stops meanwhile takes its rechecks with it.
   */
  recheckLater(key: UserKey, log: WriteLog = this.deps.log): void {
    const id = `${key.organizationId}\u0000${key.externalProviderId}`;
    if (this.rechecks.has(id) || this.rechecks.size >= MAX_RECHECKS) return;
    const delays = this.deps.recheckDelaysMs ?? RECHECK_DELAYS_MS;
    const step = (i: number) => {
      const timer = setTimeout(() => {
        void this.recheck(key, log)
          .catch((err: Error) => log.warn({ err: err.message }, 'could not look again at a write whose answer was lost; the next look, or the next write of the user, publishes it'))
          .finally(() => (i + 1 < delays.length ? step(i + 1) : this.rechecks.delete(id)));
      }, delays[i]);
      timer.unref();
      this.rechecks.set(id, timer);
    };
    step(0);
  }

  private async recheck(key: UserKey, log: WriteLog): Promise<void> {
    const user = await collectionsOf(this.deps.models).providerUsers.findOne({ organization_id: key.organizationId, external_provider_id: key.externalProviderId });
    if (!user || (await this.publishedAmong([user.last_event.id])).has(user.last_event.id)) return;
    await this.publish(user);
    log.warn({ event_id: user.last_event.id, version: user.version }, 'a write whose answer was lost landed after all; its event is published now');
  }

  /**
   * Right after the write, without holding up the answer. A failure is logged and
   * left to the sweep. `drain()` waits for these on shutdown.
   */
  publishSoon(user: ProviderUserDoc, log: WriteLog = this.deps.log): void {
    const p = this.publish(user)
      .catch((err: Error) => {
        this.deps.onPublishFailure?.();
        // While Redis is down every write fails here: one line per PUBLISH_WARN_EVERY_MS (with the
        // request id of the write it follows, and how many were left unsaid since), not one per write.
        const t = Date.now();
        if (t - this.publishWarned.at < PUBLISH_WARN_EVERY_MS) {
          this.publishWarned.unsaid++;
          return;
        }
        const repeated = this.publishWarned.unsaid;
        this.publishWarned = { at: t, unsaid: 0 };
        log.warn({ err: err.message, event_id: user.last_event.id, ...(repeated > 0 ? { repeated } : {}) }, 'event not published yet; the sweep will retry');
      })
      .finally(() => this.inFlight.delete(p));
    this.inFlight.add(p);
  }

  /**
   * Gives a slot to the users that have none: written before `outbox_slot` existed (a
   * database from an earlier version), or by an API of that version still running
   * during a rolling upgrade. The sweep reads slots only, so without this their
   * unpublished events would never be published. A user whose newest event is
   * published gets its own slot (nothing left to sweep): published by the relay's
   * test (a job, or the fan-out's rows), or written before the position of the sweep's
   * cursor from that earlier version (`updated_at`: that sweep published everything
   * before it), which spares a database of years, whose old jobs and Delivery rows
   * are long trimmed, a re-publication of every user. One whose event is not gets
   * the current slot, like a write made now: a slot that has not ended cannot have
   * been passed by any sweep, so the next passes publish it. Conditional on the slot
   * still missing, so an API write meanwhile (which sets its own) wins. One read of
   * the users with no slot (`outbox_slot: null`: on MongoDB an index lookup, on
   * FerretDB a scan of the collection), in batches.
   */
  async backfillSlots(batchSize = 500): Promise<{ backfilled: number; toSweep: number }> {
    const { providerUsers, relayCursors } = collectionsOf(this.deps.models);
    const result = { backfilled: 0, toSweep: 0 };
    // Strictly before: that sweep walked by (updated_at, _id), and a user of the same instant may be after it.
    const sweptBefore = (await relayCursors.findOne({ _id: SWEEP_CURSOR_ID }))?.updated_at?.getTime() ?? -Infinity;
    type Legacy = Pick<ProviderUserDoc, '_id' | 'updated_at'> & { last_event: { id: string } };
    const passedByEarlierSweep = (u: Legacy) => u.updated_at.getTime() < sweptBefore;
    const give = async (users: Legacy[]) => {
      const published = await this.publishedAmong(users.filter((u) => !passedByEarlierSweep(u)).map((u) => u.last_event.id));
      const isPublished = (u: Legacy) => passedByEarlierSweep(u) || published.has(u.last_event.id);
      const nowSlot = outboxSlotOf(this.nowMs());
      const write = await providerUsers.bulkWrite(
        users.map((u) => ({
          updateOne: {
            filter: { ...NO_SLOT, _id: u._id },
            update: { $set: { outbox_slot: isPublished(u) ? outboxSlotOf(u.updated_at) : nowSlot } },
          },
        })),
        { ordered: false },
      );
      result.backfilled += write.modifiedCount;
      result.toSweep += users.filter((u) => !isPublished(u)).length;
    };
    const cursor = providerUsers.find<Legacy>(NO_SLOT, { projection: { updated_at: 1, 'last_event.id': 1 } }).batchSize(batchSize);
    try {
      let batch: Legacy[] = [];
      for await (const user of cursor) {
        batch.push(user);
        if (batch.length === batchSize) {
          await give(batch);
          batch = [];
        }
      }
      if (batch.length > 0) await give(batch);
    } finally {
      await cursor.close().catch(() => undefined);
    }
    return result;
  }

  async drain(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }

  /**
   * Makes the sweep look again at everything written since `sinceMs` (less the
   * safety lag): after Redis lost its data, events whose job it held are
   * unpublished again (apps/worker/src/redis-loss-recovery.ts). Never moves the
   * cursor forward. Answers the first slot the next pass reads.
   */
  async rewindSweep(sinceMs: number): Promise<number> {
    return this.rewindSweepTo(outboxSlotOf(sinceMs - SAFETY_LAG_MS) - 1);
  }

  /** As rewindSweep, to a slot: the sweep reads every slot after `back` again. */
  async rewindSweepTo(back: number): Promise<number> {
    const { relayCursors } = collectionsOf(this.deps.models);
    const cursor = await relayCursors.findOne({ _id: SWEEP_CURSOR_ID });
    if (typeof cursor?.slot_done === 'number' && cursor.slot_done > back) {
      await relayCursors.updateOne({ _id: SWEEP_CURSOR_ID }, { $set: { slot_done: back } });
      return back + 1;
    }
    return this.firstUnsweptSlot(cursor, this.nowMs());
  }

  /**
   * One pass of the sweep: the users of the slots after the cursor, up to about
   * `batchSize` of them (whole slots), every unpublished event among them
   * published, and the cursor moved over the slots that are settled (ended
   * SAFETY_LAG_MS ago) and hold nothing left unpublished.
   */
  async sweep(batchSize = 500): Promise<SweepResult> {
    const { relayCursors } = collectionsOf(this.deps.models);
    const now = this.nowMs();
    // The last slot that ended before the safety lag: only those can be passed for good.
    const settled = outboxSlotOf(now - SAFETY_LAG_MS) - 1;
    let cursor = await relayCursors.findOne({ _id: SWEEP_CURSOR_ID });
    // Two workers' clocks differ by a fraction of a second (reference-clock.ts): one slot of leeway.
    if (typeof cursor?.slot_done === 'number' && cursor.slot_done > settled + 1) {
      // Passed slots that had not settled: it was moved by a clock ahead of this one (a worker's own
      // clock, before the reference clock; the database's clock set back since). Writes dated since fall
      // in slots it passed, and would never be looked at: read the last CURSOR_AHEAD_REWIND_MS again.
      const back = outboxSlotOf(now - CURSOR_AHEAD_REWIND_MS) - 1;
      this.deps.log.warn(
        { slot_done: cursor.slot_done, settled, ahead_s: Math.round(((cursor.slot_done - settled) * OUTBOX_SLOT_MS) / 1000), rewound_to: back },
        'the outbox sweep had passed slots that have not ended by the reference clock (a clock ran ahead); it reads the last hour again',
      );
      await relayCursors.updateOne({ _id: SWEEP_CURSOR_ID, slot_done: cursor.slot_done }, { $set: { slot_done: back } });
      cursor = await relayCursors.findOne({ _id: SWEEP_CURSOR_ID });
    }
    const stored = typeof cursor?.slot_done === 'number' ? cursor.slot_done : undefined;
    const from = await this.firstUnsweptSlot(cursor, now);
    const { slots, lastSlot } = await this.readSlots(from, outboxSlotOf(now), batchSize);
    // Events still young enough for the API's own publish are looked at by a later pass.
    const read = slots.flatMap((s) => s.users);
    const users = read.filter((u) => u.last_event.occurred_at.getTime() <= now - SWEEP_GRACE_MS);

    const published = await this.publishedAmong(users.map((u) => u.last_event.id));
    const unpublished = users.filter((u) => !published.has(u.last_event.id));
    // Published together (the relay batches them); the cursor stops before the first slot with a failure.
    const outcomes = await Promise.allSettled(unpublished.map((u) => this.publish(u)));
    const notPublished = new Set<string>();
    outcomes.forEach((o, i) => {
      if (o.status === 'rejected') notPublished.add(unpublished[i]!.last_event.id);
    });
    const failure = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected');
    if (failure) this.deps.log.warn({ err: (failure.reason as Error).message }, 'outbox sweep could not publish; will retry');

    // The cursor moves over settled slots, in order, up to the first that still holds an
    // unpublished event; empty slots skipped by readSlots count as passed. (A settled slot holds
    // no event within the grace: it ended SAFETY_LAG_MS ago, far longer.)
    let done = from - 1;
    const bySlot = new Map(slots.map((s) => [s.slot, s.users]));
    for (let slot = from; slot <= Math.min(lastSlot, settled); slot++) {
      if ((bySlot.get(slot) ?? []).some((u) => notPublished.has(u.last_event.id))) break;
      done = slot;
    }
    // Refused (Redis lost data or went back in time): the cursor stays, and no pass follows at once.
    const moves = done >= from && (await this.deps.beforeCursorMoves?.(done, stored)) !== false;
    if (moves) {
      // From where this pass found it only: a rewind since (a recovery) or another worker's move stays.
      await relayCursors.updateOne(stored === undefined ? { _id: SWEEP_CURSOR_ID } : { _id: SWEEP_CURSOR_ID, slot_done: stored }, { $set: { slot_done: done } }, { upsert: stored === undefined });
    }
    const passedAll = moves && done === lastSlot;
    return {
      scanned: read.length,
      published: unpublished.length - notPublished.size,
      failed: failure !== undefined,
      passedAll,
      more: passedAll && lastSlot < settled,
    };
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
