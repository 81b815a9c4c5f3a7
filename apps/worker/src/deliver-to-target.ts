import { DelayedError, RateLimitError, UnrecoverableError, Worker, type Job, type Queue } from 'bullmq';
import { Types } from 'mongoose';
import type { Logger } from 'pino';
import {
  deliveryIdOf,
  eventJobOf,
  statusChangeOf,
  internalRetryDelayMs,
  maskEmailsIn,
  maxRetryAfterMs,
  warnAtMostEvery,
  parseDeliveryJob,
  type DeliveryAttemptDoc,
  type DeliveryJob,
  type DeliveryPolicy,
  type DeliveryQueues,
  type DeliveryStore,
  type DownstreamTarget,
  type TargetHealth,
  type Transition,
  type ProviderUserDoc,
  type UserEvent,
} from '@connect/shared';
import { deliverCallback, type CallbackOutcome } from './deliver-callback.ts';
import { RetryableDeliveryError } from './delivery-backoff.ts';
import type { DeliveryMetrics } from './delivery-metrics.ts';

export interface DeliverToTargetDeps {
  store: DeliveryStore;
  queues: DeliveryQueues;
  health: TargetHealth;
  policy: DeliveryPolicy;
  targets: readonly DownstreamTarget[];
  log: Logger;
  now?: () => Date;
  metrics?: DeliveryMetrics;
  /** WORKER_LOCK_DURATION_MS: what the job's lock is renewed to before each send. */
  lockDurationMs?: number;
  /** The longest a job that failed on our side waits before it runs again (60 s; internalRetryDelayMs). */
  parkMs?: number;
}

/**
 * The run lost its job's lock: a pause or a cut from Redis longer than the lock let the stalled
 * check hand the job to another run, which may have sent newer versions since. Nothing more
 * may be sent from this run's stale reading (docs/delivery.md, "One delivery at a time").
 */
export class LostJobLockError extends Error {}

/** A failure already written to the Delivery and SyncState rows; rethrown for BullMQ to retry or not. */
class RecordedFailure extends Error {}

/** `Retry-After` on these statuses holds the whole target (docs/delivery.md). */
const TARGET_WIDE_RETRY_AFTER = new Set([429, 503]);

function errorClassOf(outcome: CallbackOutcome): DeliveryAttemptDoc['error_class'] {
  if (outcome.kind === 'success') return null;
  if (outcome.status !== null) return 'http';
  return outcome.error.startsWith('timeout') ? 'timeout' : 'network';
}

/**
 * The delivery processor: brings one target up to date with one user
 * (docs/delivery.md).
 *
 * - Before anything, it asks the target's shared health whether it may send
 *   (`admit`): a held delivery (target failing, paused, disabled, or under a
 *   Retry-After) goes back to the queue with BullMQ's RateLimitError, which
 *   spends no attempt, and the queue-wide rate limit keeps every process from
 *   fetching the target's jobs until the hold ends. While failing, one
 *   delivery at a time is let through as the probe.
 * - It sends the user's newest event as stored in the database, not
 *   necessarily the event the job was made for: events describe state, and the
 *   per-(user, target) deduplication may have folded newer jobs into this one
 *   (overtaken events are recorded `superseded`).
 * - It never sends a version at or below what the target has answered 2xx to
 *   (`delivered_version`), so a duplicate or late job cannot take a target back
 *   in time. Deliveries for one (user, target) never run in parallel (BullMQ's
 *   deduplication slot, see DeliveryQueues.enqueue), which makes this
 *   read-then-send safe, on MongoDB and on FerretDB alike: the slot lives in
 *   Redis, not in the database.
 * - A target that never got `user.created` gets it first, from the user document.
 *
 * All writes go through DeliveryStore, whose header states who writes what.
 * What cannot be prevented is a duplicate: a worker that dies after the
 * receiver got the callback but before the row is written makes the next
 * worker send the same event again, with the same id, which receivers dedupe on.
 */
export function createDeliverToTarget(deps: DeliverToTargetDeps) {
  const targets = new Map(deps.targets.map((t) => [t.name, t]));
  const parkMs = deps.parkMs ?? 60_000;
  const internalError = warnAtMostEvery(deps.log);
  const now = deps.now ?? (() => new Date());
  const { store, health, policy, log } = deps;
  const retryAfterCap = maxRetryAfterMs(policy);

  const logTransition = (target: string, t: Transition, reason: string) => {
    if (t.from === t.to) return;
    // Logged by the one process whose script made the change: once per change, not per job.
    const level = t.to === 'healthy' ? 'info' : 'warn';
    log[level]({ target, from: t.from, to: t.to, reason }, `target ${target} is now ${t.to}`);
  };

  /** Jobs an operator's command made (targets resync, deliveries replay and recover), by their ids. */
  const OPERATOR_JOB_ID = /^(resync|replay|recover)\./;

  /** Back to the queue, no attempt spent; nobody fetches this target's jobs for `ms`. */
  const holdJob = async (queue: Queue<DeliveryJob>, ms: number): Promise<never> => {
    await queue.rateLimit(Math.max(Math.round(ms), 50));
    throw Worker.RateLimitError();
  };

  /**
   * The user's latest change of status, when it must go before `newest`: coalescing may drop
   * updates, never leave a receiver believing the wrong status. Overtaken by a newer event, that
   * change is a reactivation (a deactivated user changes only by coming back). A target that has
   * the user (version 1 or more) may have heard the deactivation, even unacknowledged (it acted,
   * then answered too late); one that never had it (new, wiped) gets user.created and the newest,
   * as resync promises. Not when a newer version than the change already went out to the target
   * (`sent_version`, answered or not): it came after user.created in the run that found the target
   * without the user, so the target heard no deactivation, and the change would now be an older
   * version after a newer one. A change the target refused for good (a dead letter) is not sent
   * again in front of every later event: that would hold them all behind it.
   */
  const statusChangeToSend = async (user: ProviderUserDoc, newest: UserEvent, sync: { delivered: number; sent: number }, targetName: string): Promise<UserEvent | undefined> => {
    const change = statusChangeOf(user);
    if (!change || sync.delivered < 1 || change.version <= sync.delivered || change.version < sync.sent || change.version >= newest.version) return undefined;
    const row = await store.get(deliveryIdOf(change.id, targetName));
    return row?.status === 'failed' ? undefined : change;
  };

  /** Renews the job's lock; when another run holds the job now, says so and throws LostJobLockError. */
  const mustOwn = async (job: Job<DeliveryJob>, token: string | undefined, event: UserEvent, why: string): Promise<void> => {
    if (token === undefined || (await job.extendLock(token, deps.lockDurationMs ?? 30_000)) === 1) return;
    log.warn({ event_id: event.id, target: job.data.target, version: event.version }, why);
    throw new LostJobLockError(`lost the lock of job ${job.id}`);
  };

  return async (job: Job<DeliveryJob>, token?: string): Promise<{ sent: string[] }> => {
    const data = parseDeliveryJob(job.data);
    const { user_id, target: targetName } = data;
    const attempt = job.attemptsMade + 1;
    // Attempts are recorded once their outcome is known. A run that died mid-attempt (the
    // worker killed: BullMQ counts the job as stalled) recorded nothing; count it with the
    // first attempt that does get recorded, since its callback may well have gone out.
    const attemptsToRecord = 1 + (job.attemptsMade === 0 ? job.stalledCounter ?? 0 : 0);
    const lastAttempt = attempt >= (job.opts.attempts ?? 1);
    const target = targets.get(targetName);
    const queue = deps.queues.get(targetName);
    const refOf = (event: UserEvent) => ({ event, target: targetName, userId: user_id });

    if (!target || !queue) {
      await store.deadLettered(refOf(data.event), null, 'target is no longer configured');
      throw new UnrecoverableError(`target ${targetName} is no longer configured`);
    }

    const admission = await health.admit(targetName, target.timeout_ms + 30_000);
    if (admission.kind === 'hold') {
      // A paused or disabled target given back to a Redis that lost it: its queue's pause was lost too.
      if (admission.restored) await queue.pause();
      return holdJob(queue, admission.ms);
    }
    let probeToken = admission.kind === 'probe' ? admission.token : undefined;

    try {
      const [user, sync] = await Promise.all([store.collections.providerUsers.findOne({ _id: new Types.ObjectId(user_id) }), store.readSync(user_id, targetName)]);
      const fresh = user ? eventJobOf(user) : undefined;
      // The stored copy of the job's own event too: a job queued by an earlier version lacks fields
      // the body carries now (status, deactivated_at); the stored user has them.
      const newest = fresh && (fresh.event.version > data.event.version || fresh.event.id === data.event.id) ? fresh.event : data.event;
      const created = fresh?.created ?? data.created;
      const deliveredVersion = sync?.delivered_version ?? 0;

      // `targets resync --force` is for a target that lost its data: it gets what a target that never
      // had the user gets, user.created (its original id and body) and the newest, whatever it
      // answered 2xx to before (docs/operations.md, Resync).
      const wiped = data.force === true && newest.version >= deliveredVersion;
      // A retry of a forced run that got user.created through knows the target has version 1 (and not the rest).
      const knownVersion = wiped ? (data.force_created_sent === true ? 1 : 0) : deliveredVersion;
      // What this run's sync-state writes are conditional on: a run that goes by a target with
      // some of the user's versions is overruled by a forced resync's forget made after its read,
      // but not one that starts from user.created, which is what a forget asks for
      // (docs/delivery.md, "A forced resync and the runs around it").
      const syncBasis = knownVersion === 0 ? null : sync;
      if (newest.version <= deliveredVersion && !wiped) {
        if (probeToken) await health.releaseProbe(targetName, probeToken);
        deps.metrics?.deliveries.inc({ target: targetName, outcome: 'superseded' });
        await store.supersedeOlder(user_id, targetName, deliveredVersion);
        if (data.event.version === deliveredVersion) await store.alreadyDelivered(refOf(data.event));
        else if (data.event.version < deliveredVersion) await store.overtaken(refOf(data.event));
        log.debug({ event_id: data.event.id, target: targetName, delivered_version: deliveredVersion }, 'target already has this version');
        return { sent: [] };
      }

      // user.created first: a target that never got the creation event gets it before any update.
      // Then the latest change of status, when newer events overtook it before this target got it
      // (docs/delivery.md, "Status changes").
      const statusChange = user && !wiped ? await statusChangeToSend(user, newest, { delivered: deliveredVersion, sent: sync?.sent_version ?? 0 }, targetName) : undefined;
      const toSend = [...(knownVersion === 0 && newest.version > 1 ? [created] : []), ...(statusChange ? [statusChange] : []), newest];
      // A run that found the target without the user skips the user's latest change of status
      // (user.created, then the newest). The newest's version is recorded as sent before it goes
      // out, not only with its outcome: a run that dies or loses its job between the send and
      // the record would leave the next run to send that older change after the newer version
      // the target may have received (docs/delivery.md, "Status changes").
      const skippedChange = user && knownVersion === 0 ? statusChangeOf(user) : undefined;
      const sentBeforeNewest = skippedChange !== undefined && skippedChange.version < newest.version && toSend.length > 1;
      // The sync state's `attempts` count the attempts at bringing the target to its version (the
      // newest): a user.created or a change of status sent first counts too, since the target is no
      // nearer the newest until it goes through. For the usual run (the newest alone) that is the
      // version's Delivery row count; a replayed or recovered delivery (a new job, starting at
      // attempt 1) goes on counting. Per event: `deliveries show` (docs/contract.md, GET /users).
      const versionAttempts = (sync?.version === newest.version ? (sync.attempts ?? 0) : 0) + attemptsToRecord;
      // Delivered by this run: never dead-lettered after, when a later event of the run fails.
      const sentNow = new Set<string>();
      for (const event of toSend) {
        const isNewest = event === newest;
        await mustOwn(job, token, event, 'this run lost the job to another (its lock lapsed: a pause or a cut from Redis); sending nothing more');
        if (isNewest && sentBeforeNewest) await store.recordSync({ userId: user_id, target: targetName, organizationId: event.organization_id }, {}, { sent: event.version }, syncBasis);
        const startedAt = now();
        const outcome = await deliverCallback(target, event, { now });
        // The outcome is this run's to record only if the job is still its own: one paused through
        // the send would otherwise set back rows and sync state its successor has moved on.
        await mustOwn(job, token, event, 'this run lost the job to another during its callback; leaving the outcome to it');
        const attemptFields = { version: newest.version, attempts: versionAttempts, last_attempt_at: startedAt };
        const history = {
          deliveryId: deliveryIdOf(event.id, targetName),
          target: targetName,
          at: startedAt,
          durationMs: outcome.durationMs,
          statusCode: outcome.status,
          errorClass: errorClassOf(outcome),
          message: outcome.kind === 'success' ? null : outcome.error,
          probe: probeToken !== undefined,
        };

        if (outcome.kind === 'success') {
          // A forced resync's run got user.created through: its retries send what is still missing, not
          // user.created again. With it, a target failing every other callback took user.created and
          // refused the newest at each retry, for ever (a property test found it).
          if (wiped && event === created && !isNewest) await job.updateData({ ...job.data, force_created_sent: true }).catch(() => undefined);
          const [, , , transition] = await Promise.all([
            store.delivered(refOf(event), outcome.status, attemptsToRecord),
            store.recordSync({ userId: user_id, target: targetName, organizationId: event.organization_id }, { status: isNewest ? 'delivered' : 'pending', ...attemptFields, last_error: null }, { sent: event.version, delivered: event.version }, syncBasis),
            store.recordAttempt({ ...history, outcome: 'delivered' }),
            health.recordSuccess(targetName, probeToken),
          ]);
          probeToken = undefined;
          sentNow.add(event.id);
          // The versions a change of status overtook are settled now, not only after the newest:
          // should the newest fail, its retry starts one below it and finds nothing in between to settle.
          if (event === statusChange && event.version > deliveredVersion + 1) await store.supersedeOlder(user_id, targetName, event.version);
          logTransition(targetName, transition, 'a delivery succeeded');
          if (transition.from === 'failing' && transition.to === 'healthy') {
            // The backlog may go now: lift the queue-wide hold for every process.
            await queue.removeRateLimitKey();
          }
          deps.metrics?.deliveries.inc({ target: targetName, outcome: 'delivered' });
          // Live changes only: a resync's, replay's or recover's event is as old as the user's last change
          // (months, at times), and a fairness audit found 10,000 of them in the top buckets after one resync.
          if (!OPERATOR_JOB_ID.test(job.id ?? '')) deps.metrics?.latency.observe({ target: targetName, type: event.type }, Math.max(0, (now().getTime() - Date.parse(event.occurred_at)) / 1000));
          log.info(
            { event_id: event.id, type: event.type, version: event.version, target: targetName, status: outcome.status, duration_ms: outcome.durationMs, attempt },
            'callback delivered',
          );
          continue;
        }

        const syncRef = { userId: user_id, target: targetName, organizationId: event.organization_id };
        // The target answered (or could not be reached): failures of our own are no longer in a row.
        if (job.data.internal_failures) await job.updateData({ ...job.data, internal_failures: 0 }).catch(() => undefined);
        // The user's sync entry is about the version the target is being brought to (`newest`):
        // a failure of an event sent before it (user.created, a change of status) says so.
        const syncError = event === newest ? outcome.error : `${outcome.error} (on ${event.type}, sent first)`;

        // 410 Gone: the receiver asks to be disabled. This delivery is held with the
        // others (not dead-lettered) and goes out after `targets resume`.
        if (outcome.kind === 'permanent' && outcome.status === 410) {
          const transition = await health.setState(targetName, 'disabled', 'the receiver answered 410 Gone');
          await queue.pause();
          logTransition(targetName, transition, 'the receiver answered 410 Gone');
          await Promise.all([
            store.held(refOf(event), outcome.status, outcome.error, attemptsToRecord),
            store.recordSync(syncRef, { status: 'pending', ...attemptFields, last_error: syncError }, { sent: event.version }, syncBasis),
            store.recordAttempt({ ...history, outcome: 'held' }),
          ]);
          deps.metrics?.deliveries.inc({ target: targetName, outcome: 'held' });
          // eslint-disable-next-line @typescript-eslint/return-await -- not awaited on purpose: a hold's RateLimitError goes straight to BullMQ, past the catch below (which would release the probe lock)
          return holdJob(queue, 1000);
        }

        if (outcome.kind === 'retryable') {
          // 429/503 with Retry-After: the whole target waits that long, not just this job.
          if (outcome.retryAfterMs !== null && outcome.status !== null && TARGET_WIDE_RETRY_AFTER.has(outcome.status)) {
            const holdMs = Math.min(outcome.retryAfterMs, retryAfterCap);
            await health.holdUntil(targetName, Date.now() + holdMs);
            await queue.rateLimit(Math.max(holdMs, 1));
            log.warn({ target: targetName, status: outcome.status, hold_ms: holdMs }, `target ${targetName} asked to wait (Retry-After)`);
          }
          const wasProbe = probeToken !== undefined;
          const transition = await health.recordFailure(targetName, policy, outcome.error, probeToken);
          probeToken = undefined;
          logTransition(targetName, transition, outcome.error);
          if (transition.to === 'disabled') await queue.pause();
          // Held, not retried: a failed probe, or a last attempt while the target as a whole
          // is down. Neither spends the delivery's schedule: it waits for the target.
          if (wasProbe || (lastAttempt && transition.to !== 'healthy')) {
            await Promise.all([
              store.held(refOf(event), outcome.status, outcome.error, attemptsToRecord),
              store.recordSync(syncRef, { status: 'pending', ...attemptFields, last_error: syncError }, { sent: event.version }, syncBasis),
              store.recordAttempt({ ...history, outcome: 'held' }),
            ]);
            deps.metrics?.deliveries.inc({ target: targetName, outcome: 'held' });
            log.warn({ event_id: event.id, version: event.version, target: targetName, error: outcome.error, probe: wasProbe }, 'callback failed; held until the target recovers');
            // eslint-disable-next-line @typescript-eslint/return-await -- not awaited on purpose: a hold's RateLimitError goes straight to BullMQ, past the catch below (which would release the probe lock)
            return holdJob(queue, await health.holdMs(targetName));
          }
        }

        const dead = outcome.kind === 'permanent' || lastAttempt;
        deps.metrics?.deliveries.inc({ target: targetName, outcome: dead ? 'failed' : 'retry' });
        await Promise.all([
          dead ? store.deadLettered(refOf(event), outcome.status, outcome.error, attemptsToRecord) : store.retrying(refOf(event), outcome.status, outcome.error, attemptsToRecord),
          store.recordSync(syncRef, { status: dead ? 'failed' : 'pending', ...attemptFields, last_error: syncError }, { sent: event.version }, syncBasis),
          store.recordAttempt({ ...history, outcome: dead ? 'failed' : 'retry' }),
        ]);
        if (dead && event === statusChange) {
          // The change of status failed for good: a dead letter of its own (visible, replayable),
          // and the newest state still goes out; later runs do not send it again in front.
          log.warn({ event_id: event.id, version: event.version, target: targetName, error: outcome.error }, 'change of status failed for good: dead-lettered; sending the newest state');
          continue;
        }
        if (dead) {
          // The `created` sent first failed for good: the update this job was for is stuck
          // behind it, so it is a dead letter too (visible, and replayed with it). Not an event
          // the target has: one this run delivered, or one an earlier attempt did (the job's own
          // user.created, delivered before the update sent after it failed to the last attempt).
          for (const other of [data.event, newest]) {
            const targetHasIt = sentNow.has(other.id) || (!wiped && other.version <= deliveredVersion);
            if (other.id !== event.id && !targetHasIt) await store.deadLettered(refOf(other), null, `${outcome.error} (on ${event.type})`);
          }
          // Versions in between, whose jobs folded into this one, were overtaken by the newest.
          await store.supersedePendingBelow(user_id, targetName, newest.version);
        }
        log.warn(
          { event_id: event.id, version: event.version, target: targetName, error: outcome.error, attempt, dead_letter: dead, duration_ms: outcome.durationMs },
          dead ? 'callback failed for good: dead-lettered' : 'callback failed; will retry',
        );
        if (outcome.kind === 'permanent') throw new UnrecoverableError(outcome.error);
        throw new RetryableDeliveryError(outcome.error, outcome.retryAfterMs);
      }
      // Versions between the one the target had and the one it now has were overtaken. None when
      // the target was exactly one behind and this job was for the newest (the usual case): skip
      // the write then. A job for an older event (its fan-out ran late, after a newer version
      // was delivered) left its own row behind otherwise: pending for good, never purged. A row
      // that lands after this look is marked by its own fan-out (fan-out.ts), else by the retention pass.
      if (newest.version > deliveredVersion + 1 || data.event.version < newest.version) await store.supersedeOlder(user_id, targetName, newest.version);
      if (!sentNow.has(data.event.id) && data.event.version < newest.version) await store.overtaken(refOf(data.event));
      return { sent: toSend.map((e) => e.id) };
    } catch (err) {
      if (probeToken) await health.releaseProbe(targetName, probeToken).catch(() => undefined);
      // A lost lock: the job is another run's now, nothing to record from this one.
      if (err instanceof UnrecoverableError || err instanceof RetryableDeliveryError || err instanceof RecordedFailure || err instanceof RateLimitError || err instanceof LostJobLockError) throw err;
      // The database or something else of ours failed (MongoDB down, most often). Not the target's
      // failure, so it spends none of its retry schedule: the job goes back to wait 1 s, doubling
      // with each such failure in a row, at most `parkMs`, and runs again for as long as it takes.
      // Retried on the schedule before, a MongoDB outage of 40 minutes spent four steps: the
      // delivery's next try came 2 hours later, and the target's own failures then had 24 hours
      // left instead of 28. Made a dead letter at its last attempt earlier still, the row's write
      // failed with the database down and the delivery was owed with nothing queued (an
      // observability audit). The row stays `pending`, the job `delayed`: the target's backlog counts it.
      const message = `internal error: ${maskEmailsIn((err as Error).message ?? String(err))}`;
      deps.metrics?.deliveries.inc({ target: targetName, outcome: 'internal' });
      const failures = (job.data.internal_failures ?? 0) + 1;
      const delayMs = internalRetryDelayMs(failures, parkMs);
      // One line per target and error every 10 s, not one per job: an outage with a backlog wrote thousands.
      // Numbers aside (the driver names each connection: "connection 12 to ... closed"), or each was a line of its own.
      internalError(`${targetName} ${message.replace(/\d+/g, '#')}`, { event_id: data.event.id, target: targetName, err: message, attempt, failures_in_a_row: failures, retry_in_ms: delayMs }, 'delivery could not run (our own failure, not the target\'s)');
      if (token !== undefined) {
        // The count only sets the next wait: a park without it waits as long as the last one did.
        await job.updateData({ ...job.data, internal_failures: failures }).catch(() => undefined);
        // Redis refusing writes too (full, or down): BullMQ's own retry below, on the schedule.
        const parked = await job.moveToDelayed(Date.now() + delayMs, token).then(() => true, () => false);
        if (parked) throw new DelayedError();
      }
      throw new RecordedFailure(message);
    }
  };
}
