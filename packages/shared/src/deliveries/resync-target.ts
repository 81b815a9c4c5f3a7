import type { Collection, Filter } from 'mongodb';
import type { Types } from 'mongoose';
import { UnknownTargetError } from '../domain-errors.ts';
import { eventJobOf } from '../events/user-event.ts';
import { deliveryIdOf, RESYNC_JOB_ID_PREFIX, type DeliveryJob, type DeliveryQueues } from './delivery-queues.ts';
import type { DeliveryStore } from './delivery-store.ts';
import type { ProviderUserDoc } from '../models/models.ts';

/**
 * `targets resync NAME [--org ID] [--force]` (docs/operations.md): brings one
 * target up to date with every user, under the rules of live delivery.
 *
 * - Users are walked by `_id` from a cursor kept in MongoDB, one batch at a
 *   time, never all at once. The cursor moves after a batch is enqueued, so an
 *   interrupted run continues where it stopped; a run that completes deletes it,
 *   so the next run starts from the first user again (and, without --force,
 *   finds everyone current: it enqueues 0).
 * - The walk is one query whose batches are read as they are needed (a
 *   database cursor), not one query per batch: FerretDB runs `_id > x` as a scan
 *   of the whole collection, so a query per batch made a resync quadratic in
 *   the number of users there. A database cursor that expires while the walk
 *   waits for room is opened again after the last user enqueued.
 * - What a user needs is read from its SyncState row for the target (written by
 *   the delivery processor; resync writes it only with --force, below): no row or
 *   nothing delivered → a delivery job; delivered at an older version → a delivery
 *   job; delivered at the current version → skipped (re-sent with --force).
 * - A resync job is an ordinary delivery job, so the delivery processor's rules
 *   hold for it unchanged: one job per (user, target) at a time (the
 *   deduplication key), `user.created` first from the user document (the
 *   original event id and body) when the target has nothing yet, then the
 *   newest event read from MongoDB at send time, and never a version at or
 *   below what the target already answered 2xx to. So a live update that reaches
 *   the target first goes out as usual (creation first), and the resync job
 *   finds it current. A target gets at most one `user.created` per user.
 * - Live events first: resync jobs carry a BullMQ priority, and BullMQ hands
 *   out jobs without one before any prioritized job. The pace is bounded: no
 *   more than `maxOutstanding` resync jobs wait at once; the walk pauses until
 *   the worker has taken them.
 * - --force is for a target that lost its data: every user gets what a new
 *   target gets, `user.created` (the original id and body) then the newest
 *   event, whatever the target answered 2xx to before (the jobs carry `force`).
 *   Before a batch is enqueued its users' SyncState rows for the target forget
 *   what was sent, so a live delivery that runs before the resync job, or in
 *   its place (one waiting job per user and target), sends `user.created` first
 *   too. Ids are the original ones: a receiver that kept its store of seen ids
 *   drops them as repeats.
 */
export interface ResyncOptions {
  target: string;
  organizationId?: string;
  force?: boolean;
  batchSize?: number;
  /** Resync jobs allowed to wait at once before the walk pauses. */
  maxOutstanding?: number;
  /** Stops after the batch in progress (the cursor is saved): SIGINT. */
  signal?: AbortSignal;
  onProgress?: (progress: ResyncProgress) => void;
}

export interface ResyncResult {
  target: string;
  users_scanned: number;
  enqueued: number;
  skipped: number;
}

export interface ResyncProgress extends ResyncResult {
  /** Users in scope (organization or all) when the run started: the progress bar's 100 %; null when the count did not come within 5 s. */
  total: number | null;
  /** Users scanned by earlier, interrupted runs this one continues. */
  resumed_after: number;
  done: boolean;
}

export interface ResyncDeps {
  store: DeliveryStore;
  queues: DeliveryQueues;
  targets: readonly { name: string }[];
}

/** Lower than live deliveries (which carry none); the same for every resync job, so they run in walk order. */
export const RESYNC_PRIORITY = 1000;

export function resyncCursorId(target: string, organizationId: string | undefined, force: boolean): string {
  return `resync:${target}:${organizationId ?? '*'}${force ? ':force' : ''}`;
}

/** Every resync cursor id of one target: those between `resync:<target>:` and `resync:<target>;` (";" follows ":"). */
export function resyncCursorRange(target: string): { $gte: string; $lt: string } {
  return { $gte: `resync:${target}:`, $lt: `resync:${target};` };
}

export async function resyncTarget(deps: ResyncDeps, options: ResyncOptions): Promise<ResyncResult & { interrupted: boolean }> {
  const { providerUsers, relayCursors: cursors } = deps.store.collections;
  if (!deps.targets.some((t) => t.name === options.target)) throw new UnknownTargetError(options.target);
  const force = options.force === true;
  const batchSize = options.batchSize ?? 500;
  const maxOutstanding = options.maxOutstanding ?? 2000;
  const cursorId = resyncCursorId(options.target, options.organizationId, force);
  const saved = await cursors.findOne({ _id: cursorId });
  const scope = options.organizationId ? { organization_id: options.organizationId } : {};
  // For the progress bar only, so never in the way: the collection's metadata count when it is all
  // users, an organization's own count otherwise (it reads the organization's users on FerretDB:
  // about 10 s at 60,000), each stopped by the database after 5 s; without one the bar shows the
  // users scanned only. On a loaded FerretDB even the metadata count took 14 to 25 s at 9,000
  // users (an audit), past the CLI's time limit on an operation: the resync failed before its
  // first batch, every time.
  const bounded = { maxTimeMS: 5_000 };
  const total = await (options.organizationId ? providerUsers.countDocuments(scope, bounded) : providerUsers.estimatedDocumentCount(bounded)).catch(() => null);
  const result: ResyncResult = { target: options.target, users_scanned: 0, enqueued: 0, skipped: 0 };
  const resumedAfter = saved?.scanned ?? 0;
  const report = (done: boolean) => options.onProgress?.({ ...result, total, resumed_after: resumedAfter, done });
  let after = saved?.user_id;
  // A --force run re-sends what the target has: job ids of their own, or BullMQ would
  // take them for the jobs of an earlier run it still keeps.
  const runTag = force ? `.${Date.now().toString(36)}` : '';

  const batches = userBatches(providerUsers, scope, after, batchSize);
  for await (const users of batches) {
    if (options.signal?.aborted) {
      report(false);
      return { ...result, interrupted: true };
    }

    const syncs = await deps.store.readSyncs(users.map((u) => u._id.toString()), options.target);
    const jobs: { job: DeliveryJob; jobId: string }[] = [];
    for (const user of users) {
      const sync = syncs.get(user._id.toString());
      const delivered = sync?.delivered_version ?? 0;
      // A live delivery of the current version is already queued for this target: it brings it up to date.
      const onItsWay = sync?.status === 'pending' && sync.version >= user.version;
      if (delivered > user.version || (!force && (delivered >= user.version || onItsWay))) {
        result.skipped += 1;
        continue;
      }
      const { event, created } = eventJobOf(user);
      jobs.push({
        job: { user_id: user._id.toString(), target: options.target, event, created, ...(force ? { force: true } : {}) },
        jobId: `${RESYNC_JOB_ID_PREFIX}${deliveryIdOf(event.id, options.target)}${runTag}`,
      });
    }
    if (force) await deps.store.forgetWhatWasSent(jobs.map((j) => j.job.user_id), options.target);
    const wentInto = jobs.length > 0 ? await deps.queues.enqueueWith(options.target, jobs, { priority: RESYNC_PRIORITY }) : [];
    result.users_scanned += users.length;
    result.enqueued += jobs.length;
    after = users.at(-1)!._id;
    report(false);
    // Interrupted before a forced batch's users were all enqueued again, the position stays before
    // the batch: the run resumed sends the batch again rather than leave a user without user.created.
    if (force && !(await forceAgainPastRunning(deps, options.target, jobs, wentInto, options.signal))) continue;
    await cursors.updateOne(
      { _id: cursorId },
      { $set: { user_id: after, updated_at: new Date(), scanned: resumedAfter + result.users_scanned } },
      { upsert: true },
    );
    await waitForRoom(deps.queues, options.target, maxOutstanding, options.signal);
  }
  if (options.signal?.aborted) {
    // Aborted while the last batch waited for room (it is enqueued and the cursor saved), or, forced,
    // for a running delivery (the cursor stays before it).
    report(false);
    return { ...result, interrupted: true };
  }
  await cursors.deleteOne({ _id: cursorId });
  report(true);
  return { ...result, interrupted: false };
}

/**
 * A forced run's job that went into another job of its user and target (BullMQ keeps one per
 * pair) is left to that job when it still waits: it runs after the forget, so it finds the target
 * without the user and sends user.created and the newest. A job already running may have read the
 * sync state before the forget: then it sends the newest alone, and the target that lost its data
 * never gets user.created (a loaded CI run showed it). Its record of that is dropped (recordSync
 * applies a run's write only while the row's forgets are what it read), so once the run is over
 * the forget still stands, and the user is added again, until the add is taken or goes into a job
 * that still waits. A run that read the state after the forget sent user.created itself and
 * recorded it: that user is not added again (it was, and the target got user.created twice).
 * False when interrupted first.
 */
async function forceAgainPastRunning(deps: ResyncDeps, target: string, jobs: { job: DeliveryJob; jobId: string }[], wentInto: (string | undefined)[], signal?: AbortSignal): Promise<boolean> {
  let left = jobs.flatMap((j, i) => (wentInto[i] ? [{ ...j, into: wentInto[i] }] : []));
  while (left.length > 0) {
    if (signal?.aborted) return false;
    const past: typeof left = [];
    for (const j of left) if (await deps.queues.noLongerWaits(target, j.into)) past.push(j);
    if (past.length === 0) return true;
    for (const j of past) while (!signal?.aborted && (await deps.queues.isRunning(target, j.into))) await new Promise((r) => setTimeout(r, 100));
    if (signal?.aborted) return false;
    const syncs = await deps.store.readSyncs(past.map((j) => j.job.user_id), target);
    const forgotten = past.filter((j) => (syncs.get(j.job.user_id)?.sent_version ?? 0) === 0);
    const again = forgotten.length > 0 ? await deps.queues.enqueueWith(target, forgotten.map(({ job, jobId }) => ({ job, jobId })), { priority: RESYNC_PRIORITY }) : [];
    left = forgotten.flatMap((j, i) => (again[i] ? [{ ...j, into: again[i] }] : []));
  }
  return true;
}

/** MongoDB's "cursor not found": a cursor left idle past the server's timeout. */
const CURSOR_NOT_FOUND = 43;

/**
 * The users in scope after `after`, by `_id`, in batches, from one database
 * cursor; opened again after the last batch handed out if the server dropped it.
 */
async function* userBatches(users: Collection<ProviderUserDoc>, scope: Filter<ProviderUserDoc>, after: Types.ObjectId | null | undefined, batchSize: number): AsyncGenerator<ProviderUserDoc[]> {
  let last = after;
  for (;;) {
    const cursor = users.find({ ...scope, ...(last ? { _id: { $gt: last } } : {}) }).sort({ _id: 1 }).batchSize(batchSize);
    try {
      let batch: ProviderUserDoc[] = [];
      for await (const user of cursor) {
        batch.push(user);
        if (batch.length === batchSize) {
          yield batch;
          last = batch.at(-1)!._id;
          batch = [];
        }
      }
      if (batch.length > 0) yield batch;
      return;
    } catch (err) {
      if ((err as { code?: unknown }).code !== CURSOR_NOT_FOUND) throw err;
    } finally {
      await cursor.close().catch(() => undefined);
    }
  }
}

/** Bounded pace: waits until fewer than `max` prioritized (resync) jobs wait in the target's queue. */
async function waitForRoom(queues: DeliveryQueues, target: string, max: number, signal?: AbortSignal): Promise<void> {
  for (;;) {
    if ((await queues.waitingAtLowPriority(target)) < max || signal?.aborted) return;
    await new Promise((r) => setTimeout(r, 200));
  }
}
