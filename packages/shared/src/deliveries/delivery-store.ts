import { Types } from 'mongoose';
import type { AnyBulkWriteOperation, Collection, Filter } from 'mongodb';
import { GroupCommit } from '../group-commit.ts';
import { bulkWriteEach } from '../models/bulk-write-each.ts';
import { findByIds } from '../models/find-by-ids.ts';
import { onlyIdPushedDown, updateEachById } from '../models/each-by-id.ts';
import { inBatches } from '../models/in-batches.ts';
import type { UserEvent } from '../events/user-event.ts';
import { collectionsOf, isDuplicateKeyError, isOnlyDuplicateKeyError, type Collections, type DeliveryAttemptDoc, type DeliveryDoc, type DeliveryStatus, type Models, type SyncStateDoc } from '../models/models.ts';
import { deliveryIdOf } from './delivery-queues.ts';

/**
 * The one owner of delivery state: Delivery rows (one per event and target,
 * the execution log and the dead letters), SyncState rows (one per user and
 * target, what GET /users reports) and DeliveryAttempt rows (the history).
 * Every writer goes through these named operations; the rules of who may write
 * what are here and nowhere else (docs/delivery.md):
 *
 * 1. Fan-out only inserts `pending` Delivery rows (`insertPending`). A row that
 *    exists already is left alone (duplicate key): the processor may have got
 *    there first, and its outcome must not be overwritten by `pending`.
 * 2. The delivery processor is the only writer of a row's outcome (`delivered`,
 *    `retrying`, `held`, `deadLettered`, `superseded`) and the only writer of
 *    SyncState but for `targets resync --force`, which sets the versions sent back
 *    to 0 and counts one more forget (forgetWhatWasSent: the target lost its data);
 *    the processor raises them with $max, and only while the row's forgets are what
 *    its run read (a run that read before a forget does not undo it). It runs one job per (user, target) at a time (BullMQ's
 *    deduplication slot in Redis), so its read-then-write of SyncState cannot
 *    race another processor, which matters on upstream FerretDB where an update is a
 *    whole document read, changed and written back without compare-and-set. Its row
 *    writes are upserts by id, so they do not depend on the fan-out's insert
 *    having landed.
 * 3. The stalled handler writes one thing: a `pending` row becomes `failed`
 *    (conditional on `pending`), so a job BullMQ gave up on stays visible.
 * 4. Replay and recover claim a `failed` row back to `pending` (conditional on
 *    `failed`) before they enqueue, and give it back if the enqueue fails. A
 *    row keeps the time it was dead-lettered (`failed_at`, set by 2 and
 *    3): `deliveries recover --since/--until` selects by it.
 * 6. The retention purge deletes finished rows (and their attempts) past
 *    DELIVERY_RETENTION_DAYS, conditional on still being finished; resync only
 *    reads SyncState.
 * 5. Attempts are insert-only.
 *
 * Where this holds: on MongoDB and our FerretDB build the conditional writes (3, 4)
 * are atomic; on upstream FerretDB they are a read and a write, so a replay racing the processor can
 * leave a row's status stale until the next attempt writes it again, but never
 * a callback unsent: what is sent is decided by the queue and SyncState, not by
 * a row's status.
 */
export interface DeliveryRef {
  event: UserEvent;
  target: string;
  userId: string;
}

export interface AttemptRecord {
  deliveryId: string;
  target: string;
  at: Date;
  durationMs: number;
  statusCode: number | null;
  errorClass: DeliveryAttemptDoc['error_class'];
  message: string | null;
  outcome: DeliveryAttemptDoc['outcome'];
  probe: boolean;
}

export interface DeliveryFilter {
  status?: DeliveryStatus;
  target?: string;
  limit?: number;
  /** Server-side time limit of the query (maxTimeMS; 0 or absent: none): past it the database stops it and the read fails with `MaxTimeMSExpired`. */
  maxTimeMS?: number;
}

/**
 * What a delivery run's SyncState writes are conditional on (recordSync): the row's forgets as the
 * run read them, or null for none (the run read no row, or it started from user.created, which is
 * what a forget asks for): the write applies whatever forgets came since, and makes the row if need be.
 */
export type SyncBasis = Pick<SyncStateDoc, 'forgets'> | null;

export function syncStateIdOf(userId: string, target: string): string {
  return `${userId}:${target}`;
}

/** Defaults for an upsert's insert, minus the fields the update itself sets (MongoDB refuses both). */
/** A new Delivery row's fields, but for its id, status and updated_at (which every writer sets itself). */
function newRowFields(ref: DeliveryRef, now: Date): Omit<DeliveryDoc, '_id' | 'status' | 'updated_at'> {
  const { event } = ref;
  return {
    event_id: event.id,
    event_type: event.type,
    organization_id: event.organization_id,
    user_id: new Types.ObjectId(ref.userId),
    external_provider_id: event.data.external_provider_id,
    target: ref.target,
    version: event.version,
    attempts: 0,
    last_status_code: null,
    last_error: null,
    created_at: now,
    delivered_at: null,
  };
}

function onInsertOnly(defaults: Record<string, unknown>, updated: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(defaults).filter(([k]) => !(k in updated)));
}

/**
 * Two upserts of one new row at once (the fan-out's pending insert and the processor's
 * outcome, or a delivery and a replay): one inserts, the other gets a duplicate-key
 * error, on FerretDB always and on MongoDB in some cases. The row exists by then, so
 * the same update applied again takes the update path.
 */
async function retryOnDuplicateUpsert<T>(write: () => Promise<T>): Promise<T> {
  try {
    return await write();
  } catch (err) {
    if (!isDuplicateKeyError(err)) throw err;
    return write();
  }
}

export class DeliveryStore {
  /** The typed collections of `models`, for the callers that read users next to deliveries. */
  readonly collections: Collections;
  private readonly rows: Collection<DeliveryDoc>;
  private readonly syncs: Collection<SyncStateDoc>;
  private readonly attempts: Collection<DeliveryAttemptDoc>;
  /**
   * Two of the processor's three writes of an outcome, the sync state and the attempt, are
   * shared by the deliveries finishing at the same time: one bulkWrite per collection per
   * batch instead of one command per delivery. Each caller still learns its own write's
   * outcome (bulkWriteEach). The Delivery row is written alone: the fan-out inserts the same
   * rows at the same time, and on FerretDB, which applies a bulk in one PostgreSQL
   * transaction, a bulk of upserts racing those inserts deadlocks (docs/delivery.md,
   * "Batched writes").
   */
  private readonly syncWrites: GroupCommit<AnyBulkWriteOperation<SyncStateDoc>>;
  private readonly attemptInserts: GroupCommit<AnyBulkWriteOperation<DeliveryAttemptDoc>>;

  constructor(
    readonly models: Models,
    private readonly now: () => Date = () => new Date(),
  ) {
    this.collections = collectionsOf(models);
    this.rows = this.collections.deliveries;
    this.syncs = this.collections.syncStates;
    this.attempts = this.collections.deliveryAttempts;
    this.syncWrites = new GroupCommit((ops) => bulkWriteEach(this.syncs, ops));
    this.attemptInserts = new GroupCommit((ops) => bulkWriteEach(this.attempts, ops));
  }

  /** The row the fan-out writes first. */
  pendingRow(ref: DeliveryRef): DeliveryDoc {
    const now = this.now();
    return { _id: deliveryIdOf(ref.event.id, ref.target), ...newRowFields(ref, now), status: 'pending', updated_at: now };
  }

  /** Rule 1: insert only; a row already there (any status) is left as it is. */
  async insertPending(docs: DeliveryDoc[]): Promise<void> {
    try {
      await this.rows.insertMany(docs, { ordered: false });
    } catch (err) {
      if (!isOnlyDuplicateKeyError(err)) throw err;
    }
  }

  // --- Rule 2: the delivery processor -------------------------------------------------

  async delivered(ref: DeliveryRef, statusCode: number, attempts: number): Promise<void> {
    const at = this.now();
    await this.touch(ref, { status: 'delivered', last_status_code: statusCode, last_error: null, delivered_at: at }, { attempts });
  }

  /** An attempt failed and will be tried again on the schedule. */
  async retrying(ref: DeliveryRef, statusCode: number | null, error: string, attempts: number): Promise<void> {
    await this.touch(ref, { status: 'pending', last_status_code: statusCode, last_error: error }, { attempts });
  }

  /** The target is failing or disabled: the delivery waits (still `pending`), nothing dropped. */
  async held(ref: DeliveryRef, statusCode: number | null, error: string, attempts: number): Promise<void> {
    await this.touch(ref, { status: 'pending', last_status_code: statusCode, last_error: error }, { attempts });
  }

  /** A dead letter: visible in `deliveries list --status failed`, replayable. */
  async deadLettered(ref: DeliveryRef, statusCode: number | null, error: string, attempts = 0): Promise<void> {
    await this.touch(ref, { status: 'failed', last_status_code: statusCode, last_error: error, failed_at: this.now() }, attempts ? { attempts } : undefined);
  }

  /** The target already has this version (a duplicate job): the row is done. */
  async alreadyDelivered(ref: DeliveryRef): Promise<void> {
    await this.touch(ref, { status: 'delivered' });
  }

  /**
   * The job's own event, overtaken by a newer version sent instead (or had already): superseded,
   * and written even when the fan-out's pending row has not landed yet (its insert is then a
   * no-op), which an updateMany of the rows there would miss, leaving a row pending for good.
   * A delivered row stays as it is.
   */
  async overtaken(ref: DeliveryRef): Promise<void> {
    const now = this.now();
    const set = { status: 'superseded' as const, updated_at: now };
    const notDelivered = { _id: deliveryIdOf(ref.event.id, ref.target), status: { $ne: 'delivered' as const } };
    try {
      await this.rows.updateOne(notDelivered, { $set: set, $setOnInsert: onInsertOnly(newRowFields(ref, now), set) }, { upsert: true });
    } catch (err) {
      if (!isDuplicateKeyError(err)) throw err;
      // The row is there now: delivered (the filter did not match it), or the fan-out's pending
      // insert landed between the upsert's search and its insert (on FerretDB, at any time;
      // on MongoDB, in some cases). The update alone settles the second and leaves the first.
      await this.rows.updateOne(notDelivered, { $set: set });
    }
  }

  /**
   * A fan-out's row whose job went into one already there: that job may have delivered a newer
   * version and settled the rows below it before this row landed (the row and the job are written
   * at the same time), which would leave it pending until the retention pass. Superseded when the
   * target already has a newer version; otherwise that job has not recorded its delivery yet, and
   * settles this row itself when it does. One read, only for such rows.
   */
  async settleIfOvertaken(ref: DeliveryRef): Promise<boolean> {
    const sync = await this.readSync(ref.userId, ref.target);
    if (!sync || sync.delivered_version <= ref.event.version) return false;
    await this.overtaken(ref);
    return true;
  }

  /** Rows of events this target will never be sent, because a newer version reached it. */
  async supersedeOlder(userId: string, target: string, deliveredVersion: number): Promise<void> {
    await this.rows.updateMany(
      { user_id: new Types.ObjectId(userId), target, version: { $lt: deliveredVersion }, status: { $in: ['pending', 'failed'] } },
      { $set: { status: 'superseded', updated_at: this.now() } },
    );
  }

  /**
   * Pending rows below `version` of a (user, target) whose delivery of `version` was just
   * dead-lettered: their jobs folded into that delivery's, so nothing else would ever finish them
   * (and pending rows are never purged). Replaying the dead letter sends the newest state.
   */
  async supersedePendingBelow(userId: string, target: string, version: number): Promise<void> {
    await this.rows.updateMany(
      { user_id: new Types.ObjectId(userId), target, version: { $lt: version }, status: 'pending' },
      { $set: { status: 'superseded', updated_at: this.now() } },
    );
  }

  async readSync(userId: string, target: string): Promise<SyncStateDoc | null> {
    return this.syncs.findOne({ _id: syncStateIdOf(userId, target) });
  }

  /**
   * SyncState: only the processor, only while it holds the (user, target) slot. `versions.sent`:
   * the version of the event this outcome is about (it went out, answered or not);
   * `versions.delivered`: that version again when the target answered 2xx. Both only ever grow.
   * `basis`: the row as the run read it. The write applies only while the row's forgets are the
   * same: a forced resync that forgot what the target has after the run read it is not undone by
   * the run, which went by what the target had before (docs/delivery.md, "A forced resync and the
   * runs around it"). Null: applied whatever the forgets, upserted (SyncBasis).
   */
  async recordSync(ref: Omit<DeliveryRef, 'event'> & { organizationId: string }, set: Partial<SyncStateDoc>, versions: { sent: number; delivered?: number }, basis: SyncBasis): Promise<void> {
    const userId = new Types.ObjectId(ref.userId);
    const delivered = versions.delivered === undefined ? {} : { delivered_version: versions.delivered };
    const _id = syncStateIdOf(ref.userId, ref.target);
    await this.syncWrites.push({
      updateOne: {
        filter: basis === null ? { _id } : onlyIdPushedDown<SyncStateDoc>({ _id, forgets: basis.forgets ?? { $exists: false } }),
        update: {
          $set: { updated_at: this.now(), ...set },
          $setOnInsert: onInsertOnly(
            { organization_id: ref.organizationId, user_id: userId, target: ref.target, delivered_version: 0, attempts: 0, last_attempt_at: null, last_error: null },
            { ...set, ...delivered },
          ),
          $max: { sent_version: versions.sent, ...delivered },
        },
        upsert: basis === null,
      },
    });
  }

  /** Rule 5. */
  async recordAttempt(a: AttemptRecord): Promise<void> {
    await this.attemptInserts.push({
      insertOne: {
        document: {
          _id: new Types.ObjectId(),
          delivery_id: a.deliveryId,
          target: a.target,
          at: a.at,
          duration_ms: a.durationMs,
          status_code: a.statusCode,
          error_class: a.errorClass,
          message: a.message,
          outcome: a.outcome,
          probe: a.probe,
        },
      },
    });
  }

  // --- Rule 3: the stalled handler -----------------------------------------------------

  async stalledDeadLetter(deliveryId: string): Promise<void> {
    const at = this.now();
    await this.rows.updateOne(onlyIdPushedDown({ _id: deliveryId, status: 'pending' }), { $set: { status: 'failed', last_error: 'worker stalled too many times', updated_at: at, failed_at: at } });
  }

  // --- Rule 4: replay ------------------------------------------------------------------

  /** `failed` → `pending`; false when someone else changed it first. */
  async claimForReplay(deliveryId: string, at: Date): Promise<boolean> {
    const res = await this.rows.updateOne(onlyIdPushedDown({ _id: deliveryId, status: 'failed' }), { $set: { status: 'pending', updated_at: at } });
    return res.modifiedCount > 0;
  }

  async releaseReplayClaim(deliveryId: string): Promise<void> {
    // failed_at is left as it was: the row is the same dead letter, not a new one.
    await this.rows.updateOne(onlyIdPushedDown({ _id: deliveryId, status: 'pending' }), { $set: { status: 'failed', updated_at: this.now() } });
  }

  /** Recover: these rows, if still dead letters of the window, → `pending`; how many were claimed. */
  async claimForRecover(deliveryIds: string[], window: { target: string; since: Date; until: Date }, at: Date): Promise<number> {
    // Each row by its own id (updateEachById): a `$in` scans the whole collection on FerretDB, once per user recovered.
    return updateEachById(this.rows, deliveryIds, { target: window.target, status: 'failed', ...deadLetteredWithin(window) }, { $set: { status: 'pending', updated_at: at } });
  }

  /** The enqueue after a recover claim failed: the rows it claimed are dead letters again (their time kept). */
  async releaseRecoverClaim(deliveryIds: string[], at: Date): Promise<void> {
    await updateEachById(this.rows, deliveryIds, { status: 'pending', updated_at: at }, { $set: { status: 'failed', updated_at: this.now() } });
  }

  /**
   * A target's dead letters of a window, `batchSize` at a time: what recover walks, in one
   * query read once (a cursor), not a query per batch: FerretDB pushes down the target and the
   * status but neither a range nor a sort, so each batch of a walk by `_id` loaded and sorted
   * every dead letter of the target again. Rows claimed while the walk goes on are read as they
   * stand (the claim is conditional, so a row seen twice is claimed once).
   * A row's `updated_at` is never before its `failed_at`, so the
   * `updated_at >= since` bound is implied and lets the {target, status,
   * updated_at} index narrow the read without an index of its own (one less
   * index for every delivery write to maintain).
   */
  deadLettersOf(window: { target: string; since: Date; until: Date }, batchSize: number): AsyncGenerator<Pick<DeliveryDoc, '_id' | 'user_id'>[]> {
    const cursor = this.rows.find<Pick<DeliveryDoc, '_id' | 'user_id'>>(
      { target: window.target, status: 'failed', updated_at: { $gte: window.since }, ...deadLetteredWithin(window) },
      { projection: { _id: 1, user_id: 1 } },
    );
    return inBatches(cursor, batchSize);
  }

  /** Resync: the SyncState rows of these users for one target (read only). */
  /**
   * `targets resync --force`: the target lost its data, so what it was sent and answered 2xx to no
   * longer holds. A live delivery that runs before the resync's job (or in its place: BullMQ keeps
   * one waiting job per user and target) then sends user.created first, as to a new target. A run
   * that read the row before this cannot write it back (recordSync's basis).
   */
  async forgetWhatWasSent(userIds: string[], target: string): Promise<void> {
    await updateEachById(this.syncs, userIds.map((u) => syncStateIdOf(u, target)), {}, { $set: { delivered_version: 0, sent_version: 0, updated_at: this.now() }, $inc: { forgets: 1 } });
  }

  async readSyncs(userIds: string[], target: string): Promise<Map<string, SyncStateDoc>> {
    const rows = await findByIds(this.syncs, userIds.map((u) => syncStateIdOf(u, target)));
    return new Map(rows.map((r) => [r.user_id.toString(), r]));
  }

  // --- Reads ---------------------------------------------------------------------------

  async get(deliveryId: string): Promise<DeliveryDoc | null> {
    return this.rows.findOne({ _id: deliveryId });
  }

  /** Whether any delivery row names this target (a target removed from DOWNSTREAM_TARGETS leaves them until `targets forget`). */
  async hasRowsFor(target: string): Promise<boolean> {
    return (await this.rows.findOne({ target }, { projection: { _id: 1 } })) !== null;
  }

  /** Oldest change first. */
  async list(filter: DeliveryFilter = {}): Promise<DeliveryDoc[]> {
    const q: Record<string, unknown> = {};
    if (filter.status) q.status = filter.status;
    if (filter.target) q.target = filter.target;
    return this.rows
      .find(q)
      .sort({ updated_at: 1, _id: 1 })
      .limit(filter.limit ?? 1000)
      // All in the first batch (list-provider-users.ts says why): a getMore after FerretDB stopped the
      // query at its time limit failed with "cursor not found", which the CLI took for an internal error.
      .batchSize(filter.limit ?? 1000)
      .maxTimeMS(filter.maxTimeMS ?? 0)
      .toArray();
  }

  async attemptsOf(deliveryId: string): Promise<DeliveryAttemptDoc[]> {
    return this.attempts.find({ delivery_id: deliveryId }).sort({ at: 1, _id: 1 }).toArray();
  }

  private async touch(ref: DeliveryRef, set: Record<string, unknown>, inc?: Record<string, number>): Promise<void> {
    const { event } = ref;
    const now = this.now();
    await retryOnDuplicateUpsert(() =>
      this.rows.updateOne(
        { _id: deliveryIdOf(event.id, ref.target) },
        {
          $set: { updated_at: now, ...set },
          $setOnInsert: onInsertOnly(newRowFields(ref, now), { ...set, ...inc }),
          ...(inc ? { $inc: inc } : {}),
        },
        { upsert: true },
      ),
    );
  }
}

/**
 * Dead-lettered within the window: by `failed_at`, or, for a row dead-lettered by a version
 * that did not write `failed_at`, by its last write (`updated_at`), which was the dead-lettering.
 */
function deadLetteredWithin(window: { since: Date; until: Date }): Filter<DeliveryDoc> {
  const inWindow = { $gte: window.since, $lt: window.until };
  return { $or: [{ failed_at: inWindow }, { failed_at: null, updated_at: inWindow }] };
}
