import { randomUUID } from 'node:crypto';
import mongoose from 'mongoose';
import { ConcurrentUpdateError, EmailConflictError, EmailMismatchError } from '../domain-errors.ts';
import type { KeyedLock } from '../keyed-lock.ts';
import { collectionOf, isDuplicateKeyError, type LastEvent, type Models, type ProviderUserDoc } from '../models/models.ts';
import { mergeSettings, sameSettings } from './merge-settings.ts';
import { RecentUsers } from './recent-users.ts';
import type { UpsertProviderUserBody } from './provider-user-schema.ts';
import { toProviderUserView } from './provider-user-view.ts';

export interface UpsertProviderUserCommand {
  organizationId: string;
  body: UpsertProviderUserBody;
}

export type UpsertOutcome = 'created' | 'updated' | 'unchanged';

export interface UpsertResult {
  outcome: UpsertOutcome;
  user: ProviderUserDoc;
}

export interface UpsertDeps {
  models: Models;
  lock: KeyedLock;
  /** Optional: lets an update skip its read when this process knows the user (see recent-users.ts). */
  recent?: RecentUsers;
  now?: () => Date;
}

const MAX_ATTEMPTS = 8;

/**
 * docs/contract.md POST /users, within one organization:
 * - no user with this external_provider_id and none with this email: create (v1, `user.created`);
 * - a user with this external_provider_id and the same email: merge settings (v+1, `user.updated`),
 *   or nothing at all when the merge changes nothing;
 * - a user with this external_provider_id and another email: EmailMismatchError;
 * - no user with this external_provider_id but another has this email: EmailConflictError.
 *
 * The change and its event are one single-document write (no transactions).
 * Races are settled by MongoDB: the unique indexes on (organization,
 * external_provider_id) and (organization, email) let exactly one insert win, and
 * updates are conditional on the version read, so a lost race re-reads and
 * re-decides. FerretDB enforces the unique indexes too but does not apply
 * updates atomically; the per-process keyed lock keeps one process's writes to a
 * user in order, which is all it can guarantee there.
 */
export async function upsertProviderUser(deps: UpsertDeps, cmd: UpsertProviderUserCommand): Promise<UpsertResult> {
  const { organizationId, body } = cmd;
  const key = RecentUsers.keyOf(organizationId, body.external_provider_id);
  return deps.lock.run(key, async () => {
    const { ProviderUser } = deps.models;
    // The driver's collection, not mongoose's query layer: the hot path, with values already validated.
    const users = collectionOf(ProviderUser);
    const emailNormalized = body.provider_email.toLowerCase();
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const now = deps.now?.() ?? new Date();
      // First attempt: what this process last knew of the user, if anything; any doubt reads again.
      const cached = attempt === 0 ? deps.recent?.get(key) : undefined;
      const existing =
        cached ??
        (await users.findOne({ organization_id: organizationId, external_provider_id: body.external_provider_id }));

      if (!existing) {
        const user = newUser(organizationId, body, emailNormalized, now);
        try {
          await users.insertOne(user);
          deps.recent?.set(key, user);
          return { outcome: 'created', user };
        } catch (err) {
          if (!isDuplicateKeyError(err)) throw err;
          // FerretDB's duplicate-key error names neither index nor key: re-read to learn which clashed.
          const byEmail = await ProviderUser.findOne({ organization_id: organizationId, email_normalized: emailNormalized })
            .select({ external_provider_id: 1 })
            .lean<Pick<ProviderUserDoc, 'external_provider_id'>>();
          if (byEmail && byEmail.external_provider_id !== body.external_provider_id) {
            const sameId = await ProviderUser.exists({ organization_id: organizationId, external_provider_id: body.external_provider_id });
            if (!sameId) throw new EmailConflictError();
          }
          continue; // someone created this external_provider_id first: decide again as an update
        }
      }

      // A user's email never changes once stored, so a cached copy decides this as well as a read.
      if (existing.email_normalized !== emailNormalized) throw new EmailMismatchError();
      if (!cached) deps.recent?.set(key, existing);

      let settings;
      try {
        settings = mergeSettings(existing.settings, body.settings);
      } catch (err) {
        if (cached) continue; // judged against a possibly stale copy: decide again on a fresh read
        throw err;
      }
      if (sameSettings(settings, existing.settings)) {
        if (cached) continue; // "nothing changed" is only ever answered from a fresh read
        return { outcome: 'unchanged', user: existing };
      }

      const version = existing.version + 1;
      const last_event: LastEvent = { id: randomUUID(), type: 'user.updated', occurred_at: now, version };
      const res = await users.updateOne(
        { _id: existing._id, version: existing.version },
        { $set: { settings, updated_at: now, version, last_event } },
      );
      if (res.matchedCount === 1) {
        const user = { ...existing, settings, updated_at: now, version, last_event };
        deps.recent?.set(key, user);
        return { outcome: 'updated', user };
      }
      // Another process changed the user since we read it (or since the cached copy): read again.
      deps.recent?.delete(key);
    }
    throw new ConcurrentUpdateError();
  });
}

function newUser(organizationId: string, body: UpsertProviderUserBody, emailNormalized: string, now: Date): ProviderUserDoc {
  const settings = mergeSettings(null, body.settings);
  const eventId = randomUUID();
  const fields = {
    provider_email: body.provider_email,
    external_provider_id: body.external_provider_id,
    settings,
    created_at: now,
    updated_at: now,
    version: 1,
  };
  return {
    _id: new mongoose.Types.ObjectId(),
    organization_id: organizationId,
    email_normalized: emailNormalized,
    ...fields,
    created_event: { id: eventId, occurred_at: now, data: toProviderUserView(fields) },
    last_event: { id: eventId, type: 'user.created', occurred_at: now, version: 1 },
  };
}
