import { eventJobOf } from '../events/user-event.ts';
import { NotFoundError } from '../domain-errors.ts';
import type { DeliveryAttemptDoc, DeliveryDoc, DeliveryStatus } from '../models/models.ts';
import type { DeliveryQueues } from './delivery-queues.ts';
import type { DeliveryFilter, DeliveryStore } from './delivery-store.ts';

export interface ReplayDeps {
  store: DeliveryStore;
  queues: DeliveryQueues;
  targets: readonly { name: string }[];
}

/** A Delivery row as operators see it: ids, status and error, never the user's data (emails). */
export interface DeliveryView {
  id: string;
  event_id: string;
  event_type: string;
  organization_id: string;
  external_provider_id: string;
  target: string;
  version: number;
  status: DeliveryStatus;
  attempts: number;
  last_status_code: number | null;
  last_error: string | null;
  created_at: string;
  updated_at: string;
  delivered_at: string | null;
  /** When it was dead-lettered; null if it never was. */
  failed_at: string | null;
}

export interface AttemptView {
  at: string;
  duration_ms: number;
  status_code: number | null;
  error_class: DeliveryAttemptDoc['error_class'];
  message: string | null;
  outcome: DeliveryAttemptDoc['outcome'];
  probe: boolean;
}

export function deliveryViewOf(d: DeliveryDoc): DeliveryView {
  return {
    id: d._id,
    event_id: d.event_id,
    event_type: d.event_type,
    organization_id: d.organization_id,
    external_provider_id: d.external_provider_id,
    target: d.target,
    version: d.version,
    status: d.status,
    attempts: d.attempts ?? 0,
    last_status_code: d.last_status_code ?? null,
    last_error: d.last_error ?? null,
    created_at: d.created_at.toISOString(),
    updated_at: d.updated_at.toISOString(),
    delivered_at: d.delivered_at ? d.delivered_at.toISOString() : null,
    failed_at: d.failed_at ? d.failed_at.toISOString() : null,
  };
}

function attemptViewOf(a: DeliveryAttemptDoc): AttemptView {
  return { at: a.at.toISOString(), duration_ms: a.duration_ms, status_code: a.status_code ?? null, error_class: a.error_class ?? null, message: a.message ?? null, outcome: a.outcome, probe: a.probe === true };
}

export class ReplayError extends Error {}

/** `deliveries list [--target] [--status]`: oldest change first. */
export async function listDeliveries(store: DeliveryStore, filter: DeliveryFilter = {}): Promise<DeliveryView[]> {
  return (await store.list(filter)).map(deliveryViewOf);
}

/**
 * `deliveries show ID` ("with attempts"): the row with `attempts`, every attempt oldest first, in
 * place of the count a listed row has; the count is `attempt_count` (it also counts an attempt a
 * worker died in, which left no record).
 */
export async function showDelivery(store: DeliveryStore, id: string): Promise<Omit<DeliveryView, 'attempts'> & { attempts: AttemptView[]; attempt_count: number }> {
  const row = await store.get(id);
  if (!row) throw new NotFoundError(`No delivery ${id}.`);
  const { attempts: attemptCount, ...view } = deliveryViewOf(row);
  return { ...view, attempt_count: attemptCount, attempts: (await store.attemptsOf(id)).map(attemptViewOf) };
}

/**
 * `deliveries replay ID`: sends a dead-lettered delivery again, built from the
 * user's current document, so the target gets the newest state (the old event
 * is then marked superseded if a newer one went out). The row turns `pending`
 * before the job exists, conditionally on still being `failed`, so a replay run
 * twice enqueues once. SyncState is left to the delivery processor (its only
 * writer); GET /users shows `failed` until the replayed job's first attempt.
 */
export async function replayDelivery(deps: ReplayDeps, id: string): Promise<DeliveryView> {
  const row = await deps.store.get(id);
  if (!row) throw new NotFoundError(`No delivery ${id}.`);
  if (row.status !== 'failed') throw new ReplayError(`Delivery ${id} is ${row.status}; only failed deliveries are replayed.`);
  if (!deps.targets.some((t) => t.name === row.target)) throw new ReplayError(`Target ${row.target} is no longer configured.`);
  const user = await deps.store.collections.providerUsers.findOne({ _id: row.user_id });
  if (!user) throw new NotFoundError(`The user of delivery ${id} no longer exists.`);

  const claimedAt = new Date();
  if (!(await deps.store.claimForReplay(id, claimedAt))) throw new ReplayError(`Delivery ${id} is being replayed already.`);
  try {
    const { event, created } = eventJobOf(user);
    // A job id of its own: the original one may still sit in BullMQ's failed set.
    await deps.queues.enqueue({ user_id: user._id.toString(), target: row.target, event, created }, `replay.${id}.${Date.now()}`);
  } catch (err) {
    await deps.store.releaseReplayClaim(id);
    throw err;
  }
  // What this call did (the row as it left it): a re-read could already show the
  // replayed job's outcome, which the caller learns from `deliveries list`.
  return deliveryViewOf({ ...row, status: 'pending', updated_at: claimedAt });
}

/**
 * `deliveries replay --all-failed`: every dead letter it could replay, and one item per dead
 * letter it could not, built by `describe` from the error (its message by default; the CLI
 * adds the error's kind). With `signal` aborted it stops between two dead letters (never between
 * a row's claim and its job) and says `interrupted`; running it again replays the rest.
 */
export async function replayAllFailed<E extends object = { error: string }>(
  deps: ReplayDeps,
  describe: (err: unknown) => E = (err) => ({ error: (err as Error).message }) as E,
  signal?: AbortSignal,
): Promise<{ replayed: DeliveryView[]; errors: ({ id: string } & E)[]; interrupted?: true }> {
  const failed = await listDeliveries(deps.store, { status: 'failed', limit: 100_000 });
  const replayed: DeliveryView[] = [];
  const errors: ({ id: string } & E)[] = [];
  for (const d of failed) {
    if (signal?.aborted) return { replayed, errors, interrupted: true };
    try {
      replayed.push(await replayDelivery(deps, d.id));
    } catch (err) {
      errors.push({ id: d.id, ...describe(err) });
    }
  }
  return { replayed, errors };
}
