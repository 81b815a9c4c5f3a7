import type { Logger } from 'pino';
import { Types } from 'mongoose';
import { collectionsOf, eventJobOf, findByIds, LuaScript, removeDanglingDeduplicationKey, warnAtMostEvery, type DeliveryJob, type DeliveryQueues, type Models, type OutboxRelay, type ProviderUserDoc, type RedisClient, type TargetHealth, type UserEventJob } from '@connect/shared';
import type { Queue } from 'bullmq';
import { startPeriodic } from './periodic.ts';
import { withRedisLock } from './retention-purge.ts';

/**
 * Redis that lost its data (docs/delivery.md, "Redis that lost its data"): a
 * restart without persistence, a failover to an empty replica, a FLUSHALL.
 * Events are safe in MongoDB, but two kinds of work lived only in Redis:
 *
 * - delivery jobs of Delivery rows still `pending` (a backlog behind a failing,
 *   held or slow target): the outbox counts their events as published, since
 *   their fan-out wrote the rows, so the sweep never looks at them again;
 * - events jobs not yet fanned out, in slots the sweep's cursor had passed
 *   because their job existed then.
 *
 * So the worker keeps a marker key in Redis, and in MongoDB the last time it
 * saw the marker with the events queue drained (`updated_at` of the relay
 * cursor row `redis-epoch`). Every check (each sweep interval) reads the
 * marker; when it is missing and MongoDB says it was set before, Redis lost its
 * data, and one worker process (a Redis lock) recovers:
 *
 * 1. The sweep's cursor goes back to the last time the events queue was seen
 *    drained (less the sweep's safety lag): every event written since then is
 *    looked at again, and one without a job or Delivery rows is published.
 * 2. Every (user, target) with a pending Delivery row and no job in its
 *    target's queue (BullMQ's deduplication key per user and target) gets a
 *    delivery job for the user's newest event, as resync makes them: the
 *    processor sends the newest version, `user.created` first where the target
 *    has nothing, and marks the overtaken rows superseded.
 *
 * Before both, each target's held state (`paused`, `disabled`) comes back from
 * MongoDB (TargetHealth.restore) and its queue is paused again, so no job given
 * back goes to a target that was stopped. Then the marker is set again.
 *
 * A Redis that went back in time (an RDB snapshot restored, a lagging replica
 * promoted, the tail of an AOF lost) keeps a marker, but an old one. The marker
 * holds the last slot the sweep passed (`swept`), written to Redis before the
 * sweep's cursor moves in MongoDB (markSwept): every event up to that slot had
 * its job in this Redis, or its Delivery rows. So Redis names a slot at least as
 * late as the cursor, unless it lost writes it had acknowledged; a marker
 * naming an earlier slot than the cursor means just that, and the same recovery
 * runs, the sweep going back to the marker's slot, since events queued after it
 * may be gone with the rest. On the
 * first start of a deployment (no marker, nothing in MongoDB) the restore and
 * step 2 run too; they find everything in place and change nothing. Work that
 * was only in Redis and is not recovered: the rest of target health (a failing
 * target starts healthy), Retry-After holds, retry delays (the requeued jobs go
 * at once) and the attempt counts of the lost jobs (their Delivery rows keep
 * the attempts recorded).
 */
export const REDIS_EPOCH_ID = 'redis-epoch';

export function redisMarkerKey(queuePrefix: string): string {
  return `${queuePrefix}:redis-epoch`;
}

/** The marker's value: the last slot the sweep had passed when it was written (null: none yet). */
interface Marker {
  swept: number | null;
}

/** The marker's value; undefined for an earlier release's (a time in ISO 8601), which tells a loss by its absence but no slot. */
function parseMarker(raw: string): Marker | undefined {
  try {
    const m = JSON.parse(raw) as Partial<Marker> | null;
    if (m?.swept === null || Number.isInteger(m?.swept)) return { swept: m!.swept! };
  } catch {
    // not ours: below
  }
  return undefined;
}

/**
 * KEYS[1] the marker; ARGV[1] a slot the sweep passed; ARGV[2] the cursor the sweep's pass read
 * ('' for none). Refuses, writing nothing, when the marker is gone (`lost`) or names an earlier
 * slot than that cursor (`back`): the sweep must not cover what the loss check has to see. Else
 * the marker names the slot, unless it names a later one already (two workers' sweeps): Redis
 * never says less than it was told. Only the recovery creates or lowers the marker.
 */
const MARK_SWEPT = new LuaScript(`
local raw = redis.call('GET', KEYS[1])
if not raw then return 'lost' end
local ok, m = pcall(cjson.decode, raw)
if ok and type(m) == 'table' then
  local swept = tonumber(m.swept) or -1
  if ARGV[2] ~= '' and swept < tonumber(ARGV[2]) then return 'back' end
  if swept >= tonumber(ARGV[1]) then return 'ok' end
end
redis.call('SET', KEYS[1], cjson.encode({ swept = tonumber(ARGV[1]) }))
return 'ok'
`);

/**
 * Before the sweep's cursor moves from `stored` past `slot` (OutboxRelayDeps.beforeCursorMoves):
 * Redis is told first, so a Redis that later names an earlier slot than the cursor has lost this
 * write. False (the cursor stays) while the marker is gone or behind the cursor: the loss check's to recover.
 */
export async function markSwept(redis: RedisClient, queuePrefix: string, slot: number, stored: number | undefined): Promise<boolean> {
  return (await MARK_SWEPT.run(redis, [redisMarkerKey(queuePrefix)], [slot, stored ?? ''])) === 'ok';
}

/** What a check finds: no marker (Redis lost its data), one naming a slot before the cursor (Redis went back in time), or neither. */
async function markerState(deps: RedisLossDeps): Promise<{ lost: boolean; back: Marker | undefined }> {
  // The cursor first: Redis names a slot at least as late as the cursor read before it, unless it lost writes.
  const cursor = await deps.relay.sweptThrough();
  const raw = await deps.redis.get(redisMarkerKey(deps.queuePrefix));
  if (raw === null) return { lost: true, back: undefined };
  const marker = parseMarker(raw);
  // A marker written before the sweep passed any slot (null) is behind any cursor.
  const back = marker !== undefined && cursor !== undefined && (marker.swept ?? -1) < cursor;
  return { lost: false, back: back ? marker : undefined };
}

export interface RedisLossDeps {
  models: Models;
  redis: RedisClient;
  relay: OutboxRelay;
  eventsQueue: Queue<UserEventJob>;
  deliveries: DeliveryQueues;
  health: TargetHealth;
  targets: readonly { name: string }[];
  queuePrefix: string;
  log: Logger;
}

export interface RedisLossRecovery {
  /** Redis had lost its data (false on the first start of a deployment). */
  lostData: boolean;
  /** Redis had gone back in time: its marker named an earlier slot than the sweep had passed. */
  wentBack: boolean;
  /** Targets whose held state (`paused`, `disabled`) was put back from MongoDB. */
  restoredHolds: string[];
  /** The slot the sweep starts from again, when it was moved back. */
  sweepFromSlot: number | undefined;
  /**
   * (user, target) pairs with pending Delivery rows that were checked (a pair whose rows
   * fall in different batches of 500 rows is checked once per batch: memory stays
   * bounded whatever the backlog), and those given a new job.
   */
  pendingPairs: number;
  requeued: number;
  /** Jobs found active with no lock (a snapshot's, whose worker is gone), put back to waiting. */
  freedActive: number;
}

/** Pending Delivery rows read per round trip. */
const BATCH = 500;

/** Step 2: a job for every (user, target) with pending rows and none in its queue. */
/**
 * Of these (user, target) pairs, those with no job in their target's queue (BullMQ's
 * deduplication key per user and target names none) get a delivery job for the user's newest
 * event, as resync makes them. Answers how many were given one.
 */
export async function requeueOrphanPairs(deps: Pick<RedisLossDeps, 'deliveries' | 'models'>, pairs: readonly { userId: string; target: string }[]): Promise<number> {
  const orphans: { userId: string; target: string }[] = [];
  for (const pair of pairs) {
    const queue = deps.deliveries.get(pair.target);
    if (!queue) continue;
    // A key naming a job Redis no longer holds (evicted: delivery-queues.ts, addAgainWhereDangling)
    // counts as none, and goes: the add below may have the very job id it names (the same newest event).
    const dedupId = `${pair.userId}:${pair.target}`;
    const jobId = await queue.getDeduplicationJobId(dedupId);
    if (!jobId || (await removeDanglingDeduplicationKey(queue, dedupId, jobId))) orphans.push(pair);
  }
  if (orphans.length === 0) return 0;
  const users = await findByIds<ProviderUserDoc>(collectionsOf(deps.models).providerUsers, [...new Set(orphans.map((o) => o.userId))].map((id) => new Types.ObjectId(id)));
  const byId = new Map(users.map((u) => [u._id.toString(), u]));
  const jobs: DeliveryJob[] = [];
  for (const { userId, target } of orphans) {
    const user = byId.get(userId);
    if (!user) continue;
    const { event, created } = eventJobOf(user);
    jobs.push({ user_id: userId, target, event, created });
  }
  await deps.deliveries.enqueueMany(jobs);
  return jobs.length;
}

async function requeuePending(deps: RedisLossDeps): Promise<{ pendingPairs: number; requeued: number }> {
  const { deliveries: rows } = collectionsOf(deps.models);
  const configured = new Set(deps.targets.map((t) => t.name));
  let checked = 0;
  let requeued = 0;
  const cursor = rows.find({ status: 'pending' }, { projection: { user_id: 1, target: 1 } }).batchSize(BATCH);
  // This batch's pairs, each once. Across batches a pair is deduplicated by Redis: once
  // requeued, its deduplication key names a job, so a later batch finds it there.
  let batch = new Map<string, { userId: string; target: string }>();
  const flush = async () => {
    checked += batch.size;
    const pairs = [...batch.values()];
    batch = new Map();
    requeued += await requeueOrphanPairs(deps, pairs);
  };
  try {
    for await (const row of cursor) {
      const pair = { userId: row.user_id.toString(), target: row.target };
      if (!configured.has(pair.target)) continue;
      batch.set(`${pair.userId}:${pair.target}`, pair);
      if (batch.size >= BATCH) await flush();
    }
    await flush();
  } finally {
    await cursor.close().catch(() => undefined);
  }
  return { pendingPairs: checked, requeued };
}

/** The recovery, under no lock (tests, and `check` below under its lock). */
export async function recoverFromRedisLoss(deps: RedisLossDeps, now: Date = new Date()): Promise<RedisLossRecovery> {
  const { relayCursors } = collectionsOf(deps.models);
  const known = await relayCursors.findOne({ _id: REDIS_EPOCH_ID });
  const state = await markerState(deps);
  const lostData = state.lost && known !== null;
  // Held states first, before any job is given back: a paused or disabled target stays so.
  const restoredHolds = await restoreHeldStates(deps);
  let sweepFromSlot: number | undefined;
  if (lostData) {
    sweepFromSlot = await deps.relay.rewindSweep((known.updated_at ?? now).getTime());
    deps.log.warn({ drained_at: known.updated_at?.toISOString() ?? null, sweep_from_slot: sweepFromSlot }, 'Redis lost its data (or QUEUE_PREFIX changed, which looks the same): the outbox sweep goes back over what was written since the events queue was last seen drained, and pending deliveries get their jobs back');
  } else if (state.back) {
    sweepFromSlot = await deps.relay.rewindSweepTo(state.back.swept ?? -1);
    deps.log.warn(
      { marker_swept_slot: state.back.swept, sweep_from_slot: sweepFromSlot },
      'Redis went back in time (a snapshot restored, a lagging replica promoted): its marker names an earlier slot than the outbox sweep passed; the sweep goes back over what was queued since, and pending deliveries get their jobs back',
    );
  }
  const freedActive = await freeAbandonedActiveJobs(deps);
  if (freedActive > 0) deps.log.warn({ jobs: freedActive }, 'jobs active in Redis with no worker holding them (a snapshot restored mid-job) put back to waiting');
  const requeue = await requeuePending(deps);
  if (requeue.requeued > 0) deps.log.warn(requeue, 'pending deliveries had no job in Redis: requeued');
  // A plain SET: after a rewind the marker names the cursor where it is now, lower than before.
  await deps.redis.set(redisMarkerKey(deps.queuePrefix), JSON.stringify({ swept: (await deps.relay.sweptThrough()) ?? null } satisfies Marker));
  await relayCursors.updateOne({ _id: REDIS_EPOCH_ID }, { $set: { updated_at: known?.updated_at ?? now } }, { upsert: true });
  return { lostData, wentBack: state.back !== undefined, sweepFromSlot, restoredHolds, freedActive, ...requeue };
}

/**
 * Jobs a restored snapshot brings back as active, their worker long gone and their lock expired:
 * back to waiting (or paused, for a held target's queue), as BullMQ's stalled check would do one
 * or two `WORKER_STALLED_INTERVAL_MS` later. Until then such a delivery job holds its (user,
 * target)'s deduplication key, so each newer version folds into it and waits too, and the step
 * below skips the pair (it has a job). A job whose lock is there belongs to a running worker and
 * stays; a lockless active job gets no lock again (a worker takes jobs from waiting only), so
 * the check then the move cannot take one from a worker that holds it.
 */
async function freeAbandonedActiveJobs(deps: RedisLossDeps): Promise<number> {
  const queues: Queue[] = [deps.eventsQueue, ...deps.targets.flatMap(({ name }) => deps.deliveries.get(name) ?? [])];
  let freed = 0;
  for (const queue of queues) {
    for (const job of await queue.getActive()) {
      if (!job.id || (await deps.redis.exists(`${queue.toKey(job.id)}:lock`)) === 1) continue;
      // Token "0": no lock to check (there is none). A job that finished meanwhile is not active: nothing moves.
      await job.moveToWait('0').then(
        () => freed++,
        (err: Error) => deps.log.warn({ queue: queue.name, job_id: job.id, err: err.message }, 'could not put an abandoned active job back to waiting; the stalled check will'),
      );
    }
  }
  return freed;
}

/** Step 0: every configured target's held state (`paused`, `disabled`) back from MongoDB, its queue paused again. */
async function restoreHeldStates(deps: RedisLossDeps): Promise<string[]> {
  const restored: string[] = [];
  for (const { name } of deps.targets) {
    const { state, restored: wasRestored } = await deps.health.restore(name);
    if (!wasRestored) continue;
    await deps.deliveries.get(name)?.pause();
    restored.push(name);
    deps.log.warn({ target: name, state }, `target ${name} is ${state} again: its state was kept in MongoDB`);
  }
  return restored;
}

export interface RedisLossWatch {
  stop(): Promise<void>;
  /** One check now (tests): undefined when the marker was there or another process holds the lock. */
  checkNow(): Promise<RedisLossRecovery | undefined>;
}

/**
 * Every `intervalMs`: the marker there and not behind the sweep's cursor → note, at
 * most once a minute, when the events queue is drained; the marker gone, or behind
 * the cursor (Redis went back in time) → recover, in one process at a time.
 */
export function watchForRedisLoss(deps: RedisLossDeps, intervalMs: number): RedisLossWatch {
  let drainedNotedAt = 0;
  const { relayCursors } = collectionsOf(deps.models);
  const warn = warnAtMostEvery(deps.log);

  const check = async (): Promise<RedisLossRecovery | undefined> => {
    try {
      const state = await markerState(deps);
      if (!state.lost && !state.back) {
        if (Date.now() - drainedNotedAt >= 60_000) {
          const counts = await deps.eventsQueue.getJobCounts('waiting', 'active', 'delayed', 'prioritized', 'waiting-children');
          if (Object.values(counts).every((n) => n === 0)) {
            await relayCursors.updateOne({ _id: REDIS_EPOCH_ID }, { $set: { updated_at: new Date() } }, { upsert: true });
            drainedNotedAt = Date.now();
          }
        }
        return undefined;
      }
      return await withRedisLock(deps.redis, `${deps.queuePrefix}:redis-loss-recovery:lock`, 10 * 60_000, () => recoverFromRedisLoss(deps));
    } catch (err) {
      // Each interval while Redis or MongoDB is away: one line per 10 s per message, with how many were left out.
      warn(`check ${(err as Error).message}`, { err: (err as Error).message }, 'Redis loss check could not run (MongoDB or Redis failed it); the next one retries');
      return undefined;
    }
  };
  const loop = startPeriodic(check, () => intervalMs, 0);
  return { stop: () => loop.stop(), checkNow: () => loop.runNow() };
}
