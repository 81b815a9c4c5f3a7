import { randomUUID } from 'node:crypto';
import { ConcurrentUpdateError, DomainError, NotFoundError } from '../domain-errors.ts';
import type { KeyedLock } from '../keyed-lock.ts';
import { collectionsOf, outboxSlotOf, statusOf, type LastEvent, type Models, type ProviderUserDoc } from '../models/models.ts';
import { statusEventOf } from './provider-user-view.ts';
import { RecentUsers } from './recent-users.ts';
import { stopIfAnswered, type WriteLog, type WritePorts } from './write-ports.ts';

export interface DeactivateProviderUserCommand {
  organizationId: string;
  externalProviderId: string;
  /** The request's logger: lines about this write then carry its request id. */
  log?: WriteLog;
  /** Whether the request has its answer already: from then on no write of it is sent (upsert-provider-user.ts). */
  answered?: () => boolean;
}

export interface DeactivateResult {
  /** `unchanged`: the user was already deactivated; nothing written, no event. */
  outcome: 'deactivated' | 'unchanged';
  user: ProviderUserDoc;
}

export interface DeactivateDeps extends WritePorts {
  models: Models;
  lock: KeyedLock;
  recent?: RecentUsers;
  now?: () => Date;
}

const MAX_ATTEMPTS = 8;

/**
 * DELETE {base}/users/{external_provider_id} (preview, docs/api-lifecycle.md): the
 * user is kept (its email stays taken, a later POST reactivates it) and marked
 * deactivated, with a new version and a `user.deactivated` event written in the
 * same single-document write, like every other change, so the outbox delivers
 * it in order after the user's earlier events. Deactivating a deactivated user
 * changes nothing and emits nothing. Same race rules as the upsert: the write is
 * conditional on the version read, and a lost race reads again.
 */
export async function deactivateProviderUser(deps: DeactivateDeps, cmd: DeactivateProviderUserCommand): Promise<DeactivateResult> {
  let result: DeactivateResult;
  try {
    result = await decideAndWrite(deps, cmd);
  } catch (err) {
    if (err instanceof NotFoundError) deps.metrics?.deactivate('not_found');
    // The database failed or did not answer: a write sent may yet land (upsert-provider-user.ts).
    if (!(err instanceof DomainError)) deps.publisher.recheckLater?.({ organizationId: cmd.organizationId, externalProviderId: cmd.externalProviderId }, cmd.log);
    throw err;
  }
  deps.metrics?.deactivate(result.outcome);
  if (result.outcome === 'deactivated') deps.publisher.publishSoon(result.user, cmd.log);
  return result;
}

async function decideAndWrite(deps: DeactivateDeps, cmd: DeactivateProviderUserCommand): Promise<DeactivateResult> {
  const { organizationId, externalProviderId } = cmd;
  const key = RecentUsers.keyOf(organizationId, externalProviderId);
  return deps.lock.run(key, async () => {
    stopIfAnswered(cmd.answered);
    const users = collectionsOf(deps.models).providerUsers;
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const now = deps.now?.() ?? new Date();
      // Always a fresh read: deactivation is rare, and "already deactivated" must not come from a stale copy.
      const existing = await users.findOne({ organization_id: organizationId, external_provider_id: externalProviderId });
      if (!existing) throw new NotFoundError('This organization has no user with this external_provider_id.');
      if (statusOf(existing) === 'deactivated') return { outcome: 'unchanged', user: existing };

      const version = existing.version + 1;
      const last_event: LastEvent = { id: randomUUID(), type: 'user.deactivated', occurred_at: now, version };
      // The outbox slot moves with updated_at: the outbox sweep finds unpublished events by it.
      const state = { status: 'deactivated' as const, deactivated_at: now, updated_at: now, outbox_slot: outboxSlotOf(now), version, last_event };
      const change = { ...state, status_event: statusEventOf(last_event, { ...existing, ...state }) };
      stopIfAnswered(cmd.answered);
      const res = await users.updateOne({ _id: existing._id, version: existing.version }, { $set: change });
      if (res.matchedCount === 1) {
        const user = { ...existing, ...change };
        deps.recent?.set(key, user);
        return { outcome: 'deactivated', user };
      }
      deps.recent?.delete(key);
    }
    throw new ConcurrentUpdateError();
  });
}
