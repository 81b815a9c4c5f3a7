import { UnknownTargetError } from '../domain-errors.ts';
import type { DeliveryQueues } from './delivery-queues.ts';
import type { TargetHealth, TargetState } from './target-health.ts';

export interface TargetAdminDeps {
  health: TargetHealth;
  queues: DeliveryQueues;
}

/** `targets list`: one row per configured target (docs/delivery.md). */
export interface TargetRow {
  name: string;
  state: TargetState;
  consecutive_failures: number;
  failing_since: string | null;
  last_success_at: string | null;
  backlog: number;
}

export async function describeTarget(deps: TargetAdminDeps, name: string): Promise<TargetRow> {
  if (!deps.queues.get(name)) throw new UnknownTargetError(name);
  const [h, backlog] = await Promise.all([deps.health.get(name), deps.queues.backlog(name)]);
  return { name, state: h.state, consecutive_failures: h.consecutive_failures, failing_since: h.failing_since, last_success_at: h.last_success_at, backlog };
}

export async function listTargets(deps: TargetAdminDeps): Promise<TargetRow[]> {
  return Promise.all([...deps.queues.byTarget.keys()].map((name) => describeTarget(deps, name)));
}

/**
 * `targets pause NAME`: the state first, then BullMQ's queue-wide pause, which
 * every worker process honours (no job of this target is started; the ones in
 * flight finish). A worker that fetched a job between the two sees the state
 * and puts the job back.
 */
export async function pauseTarget(deps: TargetAdminDeps, name: string): Promise<TargetRow & { already_paused?: true }> {
  const before = await describeTarget(deps, name);
  await deps.health.setState(name, 'paused', 'paused by an operator');
  await deps.queues.get(name)!.pause();
  const after = await describeTarget(deps, name);
  // Said as `client disable` says already_disabled: a second pause changes nothing.
  return before.state === 'paused' ? { ...after, already_paused: true } : after;
}

/**
 * `targets resume NAME`: from paused, disabled or failing back to healthy, and
 * the queue resumed with its hold (rate limit) lifted, so the backlog drains at
 * once, in per-user order, at the target's concurrency. Deliveries waiting out
 * a retry delay are part of that backlog: the operator says the target is back,
 * so they go now too, as a target-wide Retry-After the resume overrides would
 * otherwise keep the delivery that got it waiting for hours.
 */
export async function resumeTarget(deps: TargetAdminDeps, name: string): Promise<TargetRow> {
  await describeTarget(deps, name);
  await deps.health.setState(name, 'healthy');
  const q = deps.queues.get(name)!;
  await q.resume();
  await q.promoteJobs();
  await q.removeRateLimitKey();
  return describeTarget(deps, name);
}
