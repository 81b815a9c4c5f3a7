import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { collectionsOf, deleteDeliveriesWithHistory, findByIds, LuaScript, updateEachById, syncStateIdOf, type DeliveryDoc, type DeliveryQueues, type Models, type ProviderUserDoc, type RedisClient, type SyncStateDoc } from '@connect/shared';
import { purgeOrphanedHistory } from './orphaned-history.ts';
import { startPeriodic } from './periodic.ts';
import { requeueOrphanPairs } from './redis-loss-recovery.ts';

/**
 * Retention (docs/operations.md): what the service stores must stop growing
 * with the days it runs.
 * - Finished Delivery rows (delivered, superseded, failed) whose last change is
 *   older than DELIVERY_RETENTION_DAYS are deleted, with their attempt history.
 *   Pending rows never are, however old: they are work still owed to a target;
 *   nor is the dead letter of a refused reactivation still current (below).
 * - A pending row below the version its target already has is not owed: a newer
 *   version overtook it. The delivery processor marks such rows superseded as it
 *   goes, and so does a fan-out whose row landed after that (its job folded into
 *   one already waiting: fan-out.ts); each pass marks the ones both missed (that
 *   check failed), so they are purged in turn instead of staying pending for good.
 * - A pending row still owed whose (user, target) has no job in Redis is owed
 *   by nobody: a Redis that went back in time (a snapshot restored, a failover
 *   to a replica that lagged) lost its job but kept the marker that tells a data
 *   loss (redis-loss-recovery.ts). Each pass gives such a pair its job back.
 * - Used assertion ids (the token endpoint's replay guard) are deleted once past
 *   their `exp` (+ skew): from then on the assertion itself is refused as
 *   expired, so the row guards nothing. On MongoDB the TTL index on
 *   `expires_at` does this too; FerretDB refuses TTL indexes (code 238), so
 *   this pass is what keeps the collection bounded there. Running it on MongoDB
 *   as well costs one indexed delete and keeps both worlds on one code path.
 * - Attempt history an earlier release left without its row is deleted, by one
 *   walk per database (orphaned-history.ts).
 *
 * One pass at a time across every worker process: a Redis lock (SET NX PX with
 * a random token, released only by its holder). Two passes at once would not
 * be wrong (deletes are idempotent) but would double the database load for
 * nothing. The lock expires on its own, so a worker that dies mid-pass does not
 * stop purging for good.
 */
export interface RetentionOptions {
  retentionMs: number;
  /** Rows deleted per round trip, so one pass never holds a huge delete. */
  batchSize?: number;
  now?: () => Date;
}

export interface PurgeResult {
  deliveries: number;
  attempts: number;
  assertions: number;
  /** Pending rows found overtaken (below their target's delivered version) and marked superseded. */
  superseded: number;
  /** (user, target) pairs with a pending row still owed and no job in Redis, given one. */
  requeued: number;
  /** Attempts found without their delivery row, left by an earlier release (orphaned-history.ts): once per database. */
  orphanedAttempts: number;
}

/** Where the next pass's look at pending rows goes on from (rows legitimately held can be many). */
export interface PendingScanPosition {
  updated_at: Date;
  _id: string;
}

/** A pending row younger than this is left to the delivery processor, which may be at it now. */
export const OVERTAKEN_AFTER_MS = 15 * 60_000;
/**
 * Pending rows looked at per pass, at most, so a long outage's held backlog costs a bounded pass.
 * One read: FerretDB pushes the status down to PostgreSQL but not the time range or the order, so
 * each read of a batch loads every pending row into FerretDB; one read per pass, not several.
 */
const PENDING_SCANNED_PER_PASS = 5000;

/**
 * Pending rows last written before `staleBefore`: those whose version is below what their target
 * has (`delivered_version` of the user's sync state) are marked superseded (nothing will send
 * them); with `queues`, the (user, target) pairs of the others that have no job in Redis get one
 * (requeueOrphanPairs). Reads at most PENDING_SCANNED_PER_PASS rows, after `from`, in
 * (updated_at, _id) order, and answers where the next pass goes on (undefined: from the start again).
 */
export async function mendPendingLeftBehind(
  models: Models,
  queues: DeliveryQueues | undefined,
  staleBefore: Date,
  from?: PendingScanPosition,
): Promise<{ superseded: number; requeued: number; next?: PendingScanPosition }> {
  const { deliveries, syncStates } = collectionsOf(models);
  const after = from ? { $or: [{ updated_at: { $gt: from.updated_at } }, { updated_at: from.updated_at, _id: { $gt: from._id } }] } : {};
  // By the {status, updated_at} index.
  const rows = await deliveries
    .find<Pick<DeliveryDoc, '_id' | 'user_id' | 'target' | 'version' | 'updated_at'>>(
      { status: 'pending', updated_at: { $lt: staleBefore }, ...after },
      { projection: { _id: 1, user_id: 1, target: 1, version: 1, updated_at: 1 } },
    )
    .sort({ updated_at: 1, _id: 1 })
    .limit(PENDING_SCANNED_PER_PASS)
    .toArray();
  if (rows.length === 0) return { superseded: 0, requeued: 0 };
  const syncIds = [...new Set(rows.map((r) => syncStateIdOf(r.user_id.toHexString(), r.target)))];
  // By _id one at a time (findByIds): FerretDB runs `$in` as a scan of the whole collection, and
  // sync states grow with users x targets, so every pass would read all of them.
  const syncs = await findByIds<SyncStateDoc, Pick<SyncStateDoc, '_id' | 'delivered_version'>>(syncStates, syncIds, { projection: { _id: 1, delivered_version: 1 } });
  const delivered = new Map(syncs.map((s) => [s._id, s.delivered_version]));
  const overtaken = new Set(rows.filter((r) => r.version < (delivered.get(syncStateIdOf(r.user_id.toHexString(), r.target)) ?? 0)).map((r) => r._id));
  let superseded = 0;
  if (overtaken.size > 0) {
    // Still pending when written (the processor may have finished one meanwhile); a delivered version only grows.
    // Each by its own id: a `$in` is a scan of every delivery row stored on FerretDB.
    superseded = await updateEachById(deliveries, [...overtaken], { status: 'pending' }, { $set: { status: 'superseded', updated_at: new Date() } });
  }
  let requeued = 0;
  if (queues) {
    const owed = new Map<string, { userId: string; target: string }>();
    for (const r of rows) {
      if (overtaken.has(r._id) || !queues.get(r.target)) continue;
      const userId = r.user_id.toHexString();
      owed.set(`${userId}:${r.target}`, { userId, target: r.target });
    }
    requeued = await requeueOrphanPairs({ deliveries: queues, models }, [...owed.values()]);
  }
  if (rows.length < PENDING_SCANNED_PER_PASS) return { superseded, requeued };
  const last = rows.at(-1)!;
  return { superseded, requeued, next: { updated_at: last.updated_at, _id: last._id } };
}

export const FINISHED_STATUSES = ['delivered', 'superseded', 'failed'] as const;

/** At most this many such rows are kept (their ids ride in the purge's filter); past it, the rest go as any other. */
const MAX_KEPT = 10_000;

/**
 * Dead letters past the retention that must stay: a reactivation refused for good that is still its
 * user's status change. Its failed row is what tells the delivery processor not to send it again in
 * front of each newer event (docs/delivery.md, Status changes); purged, the reactivation went out
 * again (and was refused again) as soon as the target was behind. They go once the user's status
 * changes again. A refused deactivation is never kept: nothing can follow it but a reactivation,
 * which replaces it, so its row guards nothing.
 */
async function refusedStatusChangesStillCurrent(models: Models, cutoff: Date): Promise<string[]> {
  const { deliveries, providerUsers } = collectionsOf(models);
  const rows = await deliveries
    .find<Pick<DeliveryDoc, '_id' | 'user_id' | 'event_id'>>(
      { status: 'failed', updated_at: { $lt: cutoff }, event_type: 'user.reactivated' },
      { projection: { _id: 1, user_id: 1, event_id: 1 } },
    )
    .limit(MAX_KEPT)
    .toArray();
  const kept: string[] = [];
  for (let i = 0; i < rows.length; i += 1000) {
    const batch = rows.slice(i, i + 1000);
    // By _id one at a time, not `$in`: on FerretDB that reads every user, on each pass while such rows are kept.
    const ids = [...new Map(batch.map((r) => [r.user_id.toHexString(), r.user_id])).values()];
    const users = await findByIds<ProviderUserDoc, Pick<ProviderUserDoc, '_id' | 'status_event'>>(providerUsers, ids, { projection: { _id: 1, 'status_event.id': 1 } });
    const current = new Set(users.map((u) => u.status_event?.id).filter((id) => id !== undefined));
    for (const r of batch) if (current.has(r.event_id)) kept.push(r._id);
  }
  return kept;
}

/**
 * One purge pass (no lock): used assertion ids, then finished deliveries with their history, each
 * on its own so that one failing does not hold up the other (the first error is rethrown after both).
 */
export async function purgeExpired(models: Models, options: RetentionOptions & { pendingFrom?: PendingScanPosition; queues?: DeliveryQueues }): Promise<PurgeResult & { pendingNext?: PendingScanPosition }> {
  const now = options.now?.() ?? new Date();
  const cutoff = new Date(now.getTime() - options.retentionMs);
  const result: PurgeResult & { pendingNext?: PendingScanPosition } = { deliveries: 0, attempts: 0, assertions: 0, superseded: 0, requeued: 0, orphanedAttempts: 0 };
  // First: what it marks superseded is purged in a later pass, once past the retention.
  const overtaken = await mendPendingLeftBehind(models, options.queues, new Date(now.getTime() - OVERTAKEN_AFTER_MS), options.pendingFrom).catch((err: unknown) => err as Error);
  if (!(overtaken instanceof Error)) {
    result.superseded = overtaken.superseded;
    result.requeued = overtaken.requeued;
    result.pendingNext = overtaken.next;
  }
  const purgeDeliveries = async () => {
    const kept = await refusedStatusChangesStillCurrent(models, cutoff);
    // By the {status, updated_at} index, one status at a time: FerretDB pushes an equality down but
    // runs a `$in` of the three as a scan of every row, pending ones (a held target's backlog) included.
    const total = { deliveries: 0, attempts: 0 };
    for (const status of FINISHED_STATUSES) {
      const r = await deleteDeliveriesWithHistory(models, { status, updated_at: { $lt: cutoff }, ...(kept.length > 0 ? { _id: { $nin: kept } } : {}) }, options.batchSize);
      total.deliveries += r.deliveries;
      total.attempts += r.attempts;
    }
    // After this release's own deletes, so the walk looks only at what an earlier one left.
    result.orphanedAttempts = (await purgeOrphanedHistory(models, cutoff, options.batchSize)) ?? 0;
    return total;
  };
  const [assertions, deliveries] = await Promise.allSettled([collectionsOf(models).usedAssertions.deleteMany({ expires_at: { $lt: now } }), purgeDeliveries()]);
  if (assertions.status === 'fulfilled') result.assertions = assertions.value.deletedCount;
  if (deliveries.status === 'fulfilled') Object.assign(result, deliveries.value);
  const failed = [assertions, deliveries].find((r) => r.status === 'rejected');
  if (failed) throw (failed as PromiseRejectedResult).reason;
  if (overtaken instanceof Error) throw overtaken;
  return result;
}

const RELEASE_LOCK = new LuaScript(`if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end`);

/** Runs `work` if this process gets the lock; returns undefined when another holds it. */
export async function withRedisLock<T>(redis: RedisClient, key: string, ttlMs: number, work: () => Promise<T>): Promise<T | undefined> {
  const token = randomUUID();
  const got = await redis.set(key, token, 'PX', ttlMs, 'NX');
  if (got !== 'OK') return undefined;
  try {
    return await work();
  } finally {
    await RELEASE_LOCK.run(redis, [key], [token]).catch(() => undefined);
  }
}

export interface RetentionPurge {
  stop(): Promise<void>;
  /** One pass now, under the lock; undefined when another process holds it (tests). */
  runOnce(): Promise<PurgeResult | undefined>;
}

export interface RetentionPurgeDeps {
  models: Models;
  redis: RedisClient;
  /** The targets' queues, to give back the job of a pending row Redis no longer holds one for. */
  queues?: DeliveryQueues;
  queuePrefix: string;
  log: Logger;
}

export function purgeLockKey(queuePrefix: string): string {
  // The queue prefix carries the hash tag on Redis Cluster; nothing else needs the slot, but it keeps all our keys together.
  return `${queuePrefix}:retention-purge:lock`;
}

/** Every `intervalMs` (first pass after `firstDelayMs`), one purge pass across all processes. */
export function startRetentionPurge(deps: RetentionPurgeDeps, options: RetentionOptions & { intervalMs: number; firstDelayMs?: number }): RetentionPurge {
  // Longer than any sane pass; if a pass outlives it, a second process may start one: harmless.
  const lockTtlMs = Math.max(60_000, options.intervalMs);

  // This process's place in the pending rows; another process holding the lock next keeps its own.
  let pendingFrom: PendingScanPosition | undefined;
  const pass = async (): Promise<PurgeResult | undefined> => {
    try {
      const r = await withRedisLock(deps.redis, purgeLockKey(deps.queuePrefix), lockTtlMs, () => purgeExpired(deps.models, { ...options, pendingFrom, queues: deps.queues }));
      if (!r) return undefined;
      const { pendingNext, ...counts } = r;
      pendingFrom = pendingNext;
      if (counts.deliveries > 0 || counts.assertions > 0 || counts.attempts > 0) deps.log.info(counts, 'retention purge deleted expired rows');
      if (counts.superseded > 0) deps.log.info({ superseded: counts.superseded }, 'pending deliveries overtaken by a newer version marked superseded');
      if (counts.orphanedAttempts > 0) deps.log.info({ attempts: counts.orphanedAttempts }, 'attempt history an earlier release left without its delivery row deleted (once per database)');
      if (counts.requeued > 0) deps.log.warn({ requeued: counts.requeued }, 'pending deliveries had no job in Redis (a Redis gone back in time?): requeued');
      return counts;
    } catch (err) {
      deps.log.warn({ err: (err as Error).message }, 'retention purge failed; next pass retries');
      return undefined;
    }
  };
  const loop = startPeriodic(pass, () => options.intervalMs, options.firstDelayMs ?? Math.min(options.intervalMs, 60_000));
  return { stop: () => loop.stop(), runOnce: () => loop.runNow() };
}
