import { UnrecoverableError, type Job } from 'bullmq';
import { Types } from 'mongoose';
import type { Logger } from 'pino';
import { collectionOf, eventJobOf, isDuplicateKeyError, maskEmailsIn, type DownstreamTarget, type Models, type SyncStateDoc, type UserEvent } from '@connect/shared';
import { deliverCallback } from './deliver-callback.ts';
import { deliveryIdOf, type DeliveryJob } from './deliveries-queue.ts';
import { RetryableDeliveryError } from './delivery-backoff.ts';
import type { DeliveryMetrics } from './delivery-metrics.ts';

export interface DeliverToTargetDeps {
  models: Models;
  targets: readonly DownstreamTarget[];
  log: Logger;
  now?: () => Date;
  metrics?: DeliveryMetrics;
}

export function syncStateIdOf(userId: string, target: string): string {
  return `${userId}:${target}`;
}

/** Defaults for an upsert's insert, minus the fields the update itself sets (MongoDB refuses both). */
function onInsertOnly(defaults: Record<string, unknown>, updated: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(defaults).filter(([k]) => !(k in updated)));
}

/** A failure already written to the Delivery and SyncState rows; rethrown for BullMQ to retry or not. */
class RecordedFailure extends Error {}

/**
 * The delivery processor: brings one target up to date with one user.
 *
 * - It sends the user's newest event as stored in MongoDB, not necessarily the
 *   event the job was made for: events describe state, and the per-(user,
 *   target) deduplication may have folded newer jobs into this one (SPEC §2
 *   allows coalescing; overtaken events are recorded `superseded`).
 * - It never sends a version at or below what the target has answered 2xx to
 *   (`delivered_version`), so a duplicate or late job cannot take a target back
 *   in time. Deliveries for one (user, target) never run in parallel (see
 *   deliveries-queue.ts), which is what makes this read-then-send safe.
 * - A target that never got `user.created` gets it first, from the user document.
 * - Only this processor writes a SyncState row, and only while it holds the
 *   (user, target) slot, so FerretDB's whole-document updates cannot lose a
 *   concurrent change to it.
 *
 * Where this holds: the one-at-a-time slot lives in Redis (BullMQ's dedup key
 * and Lua scripts), not in the database, so ordering and the version check hold
 * the same on MongoDB and FerretDB, across any number of worker processes. What
 * neither can prevent is a duplicate: a worker that dies (or stalls past its
 * lock) after the receiver got the callback but before the row is written makes
 * the next worker send the same event again, with the same id, which receivers
 * dedupe on. Delivery rows have several writers (fan-out inserts, this processor,
 * replay claims failed → pending); each write is either an insert, an upsert by
 * id, or conditional on status. On MongoDB those conditions are atomic; on
 * FerretDB (read, apply, write back) a replay racing this processor can leave a
 * row's status stale until the next attempt, never a callback unsent.
 */
export function createDeliverToTarget(deps: DeliverToTargetDeps) {
  const targets = new Map(deps.targets.map((t) => [t.name, t]));
  const now = deps.now ?? (() => new Date());
  // The driver's collections, not mongoose's query layer: every value here is built by us.
  const Delivery = collectionOf(deps.models.Delivery);
  const ProviderUser = collectionOf(deps.models.ProviderUser);
  const SyncState = collectionOf(deps.models.SyncState);

  return async (job: Job<DeliveryJob>): Promise<{ sent: string[] }> => {
    const { user_id, target: targetName } = job.data;
    const userId = new Types.ObjectId(user_id);
    const syncId = syncStateIdOf(user_id, targetName);
    const attempt = job.attemptsMade + 1;
    // Attempts are recorded once their outcome is known. A run that died mid-attempt (the
    // worker killed: BullMQ counts the job as stalled) recorded nothing; count it with the
    // first attempt that does get recorded, since its callback may well have gone out.
    const attemptsToRecord = 1 + (job.attemptsMade === 0 ? job.stalledCounter ?? 0 : 0);
    const lastAttempt = attempt >= (job.opts.attempts ?? 1);
    const target = targets.get(targetName);

    const touchRow = (event: UserEvent, set: Record<string, unknown>, inc?: Record<string, number>) =>
      retryOnDuplicateUpsert(() => Delivery.updateOne(
        { _id: deliveryIdOf(event.id, targetName) },
        {
          $set: { updated_at: now(), ...set },
          $setOnInsert: onInsertOnly(
            {
              event_id: event.id,
              event_type: event.type,
              organization_id: event.organization_id,
              user_id: userId,
              external_provider_id: event.data.external_provider_id,
              target: targetName,
              version: event.version,
              created_at: now(),
              delivered_at: null,
              dead_lettered_at: null,
              last_status_code: null,
              last_error: null,
              attempts: 0,
            },
            { ...set, ...inc },
          ),
          ...(inc ? { $inc: inc } : {}),
        },
        { upsert: true },
      ));

    const writeSync = (organizationId: string, set: Partial<SyncStateDoc>, deliveredVersion?: number) =>
      retryOnDuplicateUpsert(() => SyncState.updateOne(
        { _id: syncId },
        {
          $set: { updated_at: now(), ...set },
          $setOnInsert: onInsertOnly(
            { organization_id: organizationId, user_id: userId, target: targetName, delivered_version: 0, attempts: 0, last_attempt_at: null, last_error: null },
            { ...set, ...(deliveredVersion === undefined ? {} : { delivered_version: deliveredVersion }) },
          ),
          ...(deliveredVersion === undefined ? {} : { $max: { delivered_version: deliveredVersion } }),
        },
        { upsert: true },
      ));

    // Rows of events this target will never be sent, because a newer version reached it.
    const settle = async (deliveredVersion: number) => {
      await Delivery.updateMany(
        { user_id: userId, target: targetName, version: { $lt: deliveredVersion }, status: { $in: ['pending', 'failed'] } },
        { $set: { status: 'superseded', updated_at: now() } },
      );
    };

    if (!target) {
      await touchRow(job.data.event, { status: 'failed', dead_lettered_at: now(), last_error: 'target is no longer configured' });
      throw new UnrecoverableError(`target ${targetName} is no longer configured`);
    }

    try {
      const [user, sync] = await Promise.all([ProviderUser.findOne({ _id: userId }), SyncState.findOne({ _id: syncId })]);
      const fresh = user ? eventJobOf(user) : undefined;
      const newest = fresh && fresh.event.version > job.data.event.version ? fresh.event : job.data.event;
      const created = fresh?.created ?? job.data.created;
      const deliveredVersion = sync?.delivered_version ?? 0;

      // `targets resync --force`: the newest version once more (same event id), never an older one.
      const forced = job.data.force === true && deliveredVersion > 0 && newest.version === deliveredVersion;
      if (newest.version <= deliveredVersion && !forced) {
        deps.metrics?.deliveries.inc({ target: targetName, outcome: 'superseded' });
        await settle(deliveredVersion);
        if (job.data.event.version === deliveredVersion) await touchRow(job.data.event, { status: 'delivered' });
        deps.log.debug({ event_id: job.data.event.id, target: targetName, delivered_version: deliveredVersion }, 'target already has this version');
        return { sent: [] };
      }

      // SPEC §2 order: a target that never got the creation event gets it before any update.
      const toSend = deliveredVersion === 0 && newest.version > 1 ? [created, newest] : [newest];
      for (const event of toSend) {
        const isNewest = event === newest;
        const startedAt = now();
        const outcome = await deliverCallback(target, event, { now });
        // One write per row per attempt, once its outcome is known (the happy path's cost is
        // these two writes and the two reads above).
        const attemptFields = { version: newest.version, attempts: attempt, last_attempt_at: startedAt };
        if (outcome.kind === 'success') {
          await Promise.all([
            touchRow(event, { status: 'delivered', delivered_at: now(), last_status_code: outcome.status, last_error: null }, { attempts: attemptsToRecord }),
            writeSync(event.organization_id, { status: isNewest ? 'delivered' : 'pending', ...attemptFields, last_error: null }, event.version),
          ]);
          deps.metrics?.deliveries.inc({ target: targetName, outcome: 'delivered' });
          deps.metrics?.latency.observe({ target: targetName, type: event.type }, Math.max(0, (now().getTime() - Date.parse(event.occurred_at)) / 1000));
          deps.log.info(
            { event_id: event.id, type: event.type, version: event.version, target: targetName, status: outcome.status, duration_ms: outcome.durationMs, attempt },
            'callback delivered',
          );
          continue;
        }

        const dead = outcome.kind === 'permanent' || lastAttempt;
        deps.metrics?.deliveries.inc({ target: targetName, outcome: dead ? 'failed' : 'retry' });
        await Promise.all([
          touchRow(event, { status: dead ? 'failed' : 'pending', ...(dead ? { dead_lettered_at: now() } : {}), last_status_code: outcome.status, last_error: outcome.error }, { attempts: attemptsToRecord }),
          writeSync(event.organization_id, { status: dead ? 'failed' : 'pending', ...attemptFields, last_error: outcome.error }),
        ]);
        if (dead) {
          // The `created` sent first failed for good: the update this job was for is stuck
          // behind it, so it is a dead letter too (visible, and replayed with it).
          for (const other of [job.data.event, newest]) {
            if (other.id !== event.id) await touchRow(other, { status: 'failed', dead_lettered_at: now(), last_error: `${outcome.error} (on ${event.type})` });
          }
        }
        deps.log.warn(
          { event_id: event.id, version: event.version, target: targetName, error: outcome.error, attempt, dead_letter: dead, duration_ms: outcome.durationMs },
          dead ? 'callback failed for good: dead-lettered' : 'callback failed; will retry',
        );
        if (outcome.kind === 'permanent') throw new UnrecoverableError(outcome.error);
        throw new RetryableDeliveryError(outcome.error, outcome.retryAfterMs);
      }
      // Versions between the one the target had and the one it now has were overtaken. None when
      // the target was exactly one behind (the usual case): skip the write then.
      if (newest.version > deliveredVersion + 1) await settle(newest.version);
      return { sent: toSend.map((e) => e.id) };
    } catch (err) {
      if (err instanceof UnrecoverableError || err instanceof RetryableDeliveryError || err instanceof RecordedFailure) throw err;
      // MongoDB or something else of ours failed: BullMQ retries it like a delivery; on
      // the last attempt the row becomes a dead letter so it stays visible and replayable.
      const message = `internal error: ${maskEmailsIn((err as Error).message ?? String(err))}`;
      if (lastAttempt) {
        await touchRow(job.data.event, { status: 'failed', dead_lettered_at: now(), last_error: message }).catch(() => undefined);
      }
      deps.log.error({ event_id: job.data.event.id, target: targetName, err: message, attempt }, 'delivery could not run');
      throw new RecordedFailure(message);
    }
  };
}

/**
 * Two upserts of one new row at once (two workers, or a delivery and a replay):
 * one inserts, the other gets a duplicate-key error, on FerretDB always and on
 * MongoDB in some cases. The row exists by then, so the same update applied again
 * takes the update path.
 */
async function retryOnDuplicateUpsert<T>(write: () => Promise<T>): Promise<T> {
  try {
    return await write();
  } catch (err) {
    if (!isDuplicateKeyError(err)) throw err;
    return write();
  }
}
