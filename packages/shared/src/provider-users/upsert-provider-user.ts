import { randomUUID } from 'node:crypto';
import mongoose from 'mongoose';
import { ConcurrentUpdateError, DomainError, EmailConflictError, EmailMismatchError, ValidationError } from '../domain-errors.ts';
import type { KeyedLock } from '../keyed-lock.ts';
import { CLAIM_STALE_MS, type EmailClaims } from './email-claims.ts';
import { emailMatchKey, lookAlikeEmailProblem } from '../email-address.ts';
import { collectionsOf, isDuplicateKeyError, outboxSlotOf, statusOf, type LastEvent, type Models, type ProviderUserDoc, type StatusEvent } from '../models/models.ts';
import { mergeSettings, sameSettings } from './merge-settings.ts';
import { RecentUsers, type UncachedRequest } from './recent-users.ts';
import type { UpsertProviderUserBody } from './provider-user-schema.ts';
import { statusEventOf, toProviderUserNextView } from './provider-user-view.ts';
import { stopIfAnswered, type WriteLog, type WritePorts } from './write-ports.ts';

export interface UpsertProviderUserCommand {
  organizationId: string;
  body: UpsertProviderUserBody;
  /** The request's logger, for what only an operator can settle (its lines then carry the request id). */
  log?: WriteLog;
  /**
   * Whether the request has its answer already (the API's 503 at its deadline): from then on no
   * write of it is sent (WriteAbandonedError). See docs/guarantees.md, "No lost update".
   */
  answered?: () => boolean;
  /**
   * When the request arrived: a write-first update lands only on a user last written before it,
   * so that, sent before a 503 and applied late, it cannot overwrite a write made after the 503.
   */
  receivedAt?: Date;
}

export type UpsertOutcome = 'created' | 'updated' | 'unchanged';

export interface UpsertResult {
  outcome: UpsertOutcome;
  /** True when the user was deactivated and this request made it active again (an `updated` outcome). */
  reactivated: boolean;
  user: ProviderUserDoc;
}

export interface UpsertDeps extends WritePorts {
  models: Models;
  lock: KeyedLock;
  /** Optional: lets an update skip its read when this process knows the user, and picks the first step when it does not (recent-users.ts). */
  recent?: RecentUsers;
  /** Set under EMAIL_UNIQUENESS=claims: creates claim their email first (email-claims.ts). */
  emailClaims?: EmailClaims;
  now?: () => Date;
}

const MAX_ATTEMPTS = 8;

/**
 * docs/contract.md POST /users, within one organization:
 * - no user with this external_provider_id and none with this email: create (v1, `user.created`);
 * - a user with this external_provider_id and the same email: merge settings (v+1, `user.updated`),
 *   or nothing at all when the merge changes nothing;
 * - the same, on a deactivated user: reactivate it and merge (v+1, `user.reactivated`), even when
 *   the settings stay as they were (docs/api-lifecycle.md);
 * - a user with this external_provider_id and another email: EmailMismatchError;
 * - no user with this external_provider_id but another has this email: EmailConflictError.
 *
 * The change and its event are one single-document write (no transactions).
 * Races are settled by MongoDB: the unique indexes on (organization,
 * external_provider_id) and (organization, email) let exactly one insert win (under
 * EMAIL_UNIQUENESS=claims the email's claim stands in for the second; email-claims.ts), and
 * updates are conditional on the version read, so a lost race re-reads and
 * re-decides (or, writing first, one findOneAndUpdate whose filter holds the whole decision:
 * updateInOneStep), which the database applies atomically, filter included (MongoDB, and our
 * FerretDB build: docs/guarantees.md). The per-process keyed lock keeps one process's writes
 * to a user in order, which saves those retries (and is all upstream FerretDB can guarantee).
 *
 * A written change's event is handed to the publisher here, and every outcome is
 * counted here, so no caller can forget either.
 */
export async function upsertProviderUser(deps: UpsertDeps, cmd: UpsertProviderUserCommand): Promise<UpsertResult> {
  let result: UpsertResult;
  try {
    result = await decideAndWrite(deps, cmd);
  } catch (err) {
    if (err instanceof EmailMismatchError || err instanceof EmailConflictError) deps.metrics?.upsert('conflict');
    // Not a decision of ours: the database failed or did not answer, and a write sent may yet land.
    if (!(err instanceof DomainError)) deps.publisher.recheckLater?.({ organizationId: cmd.organizationId, externalProviderId: cmd.body.external_provider_id }, cmd.log);
    throw err;
  }
  deps.metrics?.upsert(result.reactivated ? 'reactivated' : result.outcome);
  if (result.outcome !== 'unchanged') deps.publisher.publishSoon(result.user, cmd.log);
  return result;
}

async function decideAndWrite(deps: UpsertDeps, cmd: UpsertProviderUserCommand): Promise<UpsertResult> {
  const { organizationId, body } = cmd;
  const key = RecentUsers.keyOf(organizationId, body.external_provider_id);
  return deps.lock.run(key, async () => {
    // Its turn may come after its answer (held behind writes of the same user, or a slow database).
    stopIfAnswered(cmd.answered);
    const recent = deps.recent;
    const held = recent?.get(key);
    if (!recent || held) return readAndDecide(deps, cmd, key, held);
    // A user this process does not hold: the first step is chosen by what such requests have been lately.
    let was: UncachedRequest = 'other';
    try {
      const step = recent.next;
      // Under EMAIL_UNIQUENESS=claims a create claims its email before its insert: it reads first.
      const insertFirst = step === 'insert' && !deps.emailClaims && !createNeedsChecks(body.provider_email);
      const user = step === 'write' ? await updateInOneStep(deps, cmd) : insertFirst ? await createInOneStep(deps, cmd) : null;
      if (user) {
        was = step === 'write' ? 'plain-update' : 'create';
        recent.set(key, user);
        return { outcome: step === 'write' ? 'updated' : 'created', reactivated: false, user };
      }
      const result = await readAndDecide(deps, cmd, key, undefined);
      was = result.outcome === 'created' ? 'create' : result.outcome === 'updated' && !result.reactivated ? 'plain-update' : 'other';
      return result;
    } finally {
      recent.noteUncached(was);
    }
  });
}

/**
 * A create in one round trip, without reading first (docs/guarantees.md, "One-step writes"):
 * the insert itself. The unique indexes on (organization, external_provider_id) and
 * (organization, email) let it land only where the read would have decided "create" (no user
 * with this id, none with this email, deactivated ones included). Returns the user as
 * written, or null when either index refused it: the read path then decides as ever.
 */
async function createInOneStep(deps: UpsertDeps, cmd: UpsertProviderUserCommand): Promise<ProviderUserDoc | null> {
  const user = newUser(cmd.organizationId, cmd.body, emailMatchKey(cmd.body.provider_email), deps.now?.() ?? new Date());
  try {
    await collectionsOf(deps.models).providerUsers.insertOne(user);
    return user;
  } catch (err) {
    if (isDuplicateKeyError(err)) return null;
    throw err;
  }
}

/** Reads the user (unless `held`, this process's copy, is trusted for a first try), decides and writes. */
async function readAndDecide(deps: UpsertDeps, cmd: UpsertProviderUserCommand, key: string, held: ProviderUserDoc | undefined): Promise<UpsertResult> {
  const { organizationId, body } = cmd;
  const users = collectionsOf(deps.models).providerUsers;
  const emailNormalized = emailMatchKey(body.provider_email);
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    const now = deps.now?.() ?? new Date();
    // First attempt: what this process last knew of the user, if anything; any doubt reads again.
    const cached = attempt === 0 ? held : undefined;
    const existing =
      cached ??
      (await users.findOne({ organization_id: organizationId, external_provider_id: body.external_provider_id }));

    if (!existing) {
      if (createNeedsChecks(body.provider_email)) await checkNewAddress(deps, cmd, emailNormalized);
      const user = newUser(organizationId, body, emailNormalized, now);
      const claims = deps.emailClaims;
      const scope = { organizationId, emailNormalized, externalProviderId: body.external_provider_id };
      if (claims) {
        const claimedAt = claims.clock();
        const claim = await claims.claim(scope, new Date());
        if (claim === 'taken') throw new EmailConflictError();
        if (claim === 'retry') continue;
        // This process was held up so long that the claim may count as a dead create's: decide
        // again (a create of this id by another process may have gone on meanwhile); claiming
        // again dates the claim anew. Not released: that other create's user may hold it now.
        if (claims.clock() - claimedAt > CLAIM_STALE_MS / 2) continue;
      }
      stopIfAnswered(cmd.answered);
      try {
        await users.insertOne(user);
      } catch (err) {
        if (!isDuplicateKeyError(err)) throw err;
        // FerretDB's duplicate-key error names neither index nor key: re-read to learn which clashed.
        const byEmail = await users.findOne<Pick<ProviderUserDoc, 'external_provider_id'>>(
          { organization_id: organizationId, email_normalized: emailNormalized },
          { projection: { external_provider_id: 1 } },
        );
        const emailHeldElsewhere = byEmail !== null && byEmail.external_provider_id !== body.external_provider_id;
        const sameId =
          emailHeldElsewhere || claims
            ? await users.findOne<Pick<ProviderUserDoc, 'email_normalized'>>(
                { organization_id: organizationId, external_provider_id: body.external_provider_id },
                { projection: { email_normalized: 1 } },
              )
            : null;
        if (emailHeldElsewhere && !sameId) {
          await claims?.handTo(scope, byEmail!.external_provider_id, now);
          throw new EmailConflictError();
        }
        // Someone created this external_provider_id first: decide again as an update. With
        // another email than ours, it will never hold the email this create claimed.
        if (claims && sameId && sameId.email_normalized !== emailNormalized) await claims.release(scope);
        continue;
      }
      // The insert reached the database after the claim's age and another create took the email: undo.
      if (claims && !(await claims.stillHeld(scope)) && (await claims.undoInsert(user, cmd.log))) throw new EmailConflictError();
      deps.recent?.set(key, user);
      return { outcome: 'created', reactivated: false, user };
    }

    // A user's email never changes once stored, so a cached copy decides this as well as a read.
    // Keys stored before they were composed (NFC) are composed to compare: the same spelling still matches.
    if (existing.email_normalized !== emailNormalized && emailMatchKey(existing.email_normalized) !== emailNormalized) throw new EmailMismatchError();
    if (!cached) deps.recent?.set(key, existing);

    let settings;
    try {
      settings = mergeSettings(existing.settings, body.settings);
    } catch (err) {
      if (cached) continue; // judged against a possibly stale copy: decide again on a fresh read
      throw err;
    }
    const reactivated = statusOf(existing) === 'deactivated';
    if (!reactivated && sameSettings(settings, existing.settings)) {
      if (cached) continue; // "nothing changed" is only ever answered from a fresh read
      return { outcome: 'unchanged', reactivated: false, user: existing };
    }

    const version = existing.version + 1;
    const type = reactivated ? 'user.reactivated' : 'user.updated';
    const last_event: LastEvent = { id: randomUUID(), type, occurred_at: now, version };
    const state = { settings, updated_at: now, outbox_slot: outboxSlotOf(now), version, status: 'active' as const, deactivated_at: null, last_event };
    const change = reactivated ? { ...state, status_event: statusEventOf(last_event, { ...existing, ...state }) } : { ...state, ...statusEventLeftBehind(existing) };
    stopIfAnswered(cmd.answered);
    const res = await users.updateOne({ _id: existing._id, version: existing.version }, { $set: change });
    if (res.matchedCount === 1) {
      const user = { ...existing, ...change };
      deps.recent?.set(key, user);
      return { outcome: 'updated', reactivated, user };
    }
    // Another process changed the user since we read it (or since the cached copy): read again.
    deps.recent?.delete(key);
  }
  throw new ConcurrentUpdateError();
}

/**
 * A create whose address is not plain ASCII: it may look like another (lookAlikeEmailProblem), or
 * be held by a user stored before keys were composed under this very spelling. Both are checked
 * on the read path (checkNewAddress); ASCII addresses, nearly all, skip them.
 */
function createNeedsChecks(address: string): boolean {
  return !/^[\x20-\x7e]*$/.test(address);
}

/**
 * Before a user is created with a non-ASCII address: refused (400) when it looks like another
 * address; a conflict (409) when a user of another id holds it under the key an earlier version
 * stored, the address lower-cased only (docs/operations.md, Upgrading): the unique index knows
 * that key, not this one's composed form, and would let a second user take the same spelling.
 */
async function checkNewAddress(deps: UpsertDeps, cmd: UpsertProviderUserCommand, emailNormalized: string): Promise<void> {
  const problem = lookAlikeEmailProblem(cmd.body.provider_email);
  if (problem) throw new ValidationError([{ path: 'provider_email', message: problem }]);
  const earlierKey = cmd.body.provider_email.toLowerCase();
  if (earlierKey === emailNormalized) return;
  const holder = await collectionsOf(deps.models).providerUsers.findOne<Pick<ProviderUserDoc, 'external_provider_id'>>(
    { organization_id: cmd.organizationId, email_normalized: earlierKey },
    { projection: { external_provider_id: 1 } },
  );
  if (holder && holder.external_provider_id !== cmd.body.external_provider_id) throw new EmailConflictError();
}

const PLAIN_LAST_EVENTS = ['user.created', 'user.updated'];

/**
 * A plain update in one round trip, without reading first (docs/guarantees.md, "One-step
 * updates"): one findOneAndUpdate whose filter holds every condition under which the read
 * path would decide "update" as this one does, and whose change is the merge written as
 * field updates (mergeSettings' rules: `speech_locale` replaced, `specialty` and
 * `secondary_speech_locale` replaced when sent). The version goes up by one, and with it
 * the last event's, which every writer keeps equal to it. Returns the user as written, or
 * null when the filter matched nothing: no such user, another email, deactivated, no
 * settings yet, nothing would change, the kept secondary locale would equal the new
 * primary, or a status event of an older release to carry over (statusEventLeftBehind).
 * The read path then decides as ever. On MongoDB the filter and the change are one atomic
 * step, as the read path's version-conditional write is.
 */
async function updateInOneStep(deps: UpsertDeps, cmd: UpsertProviderUserCommand): Promise<ProviderUserDoc | null> {
  const { organizationId, body } = cmd;
  const input = body.settings;
  if (!input) return null; // without settings only a reactivation changes anything
  const changed: Record<string, unknown>[] = [{ 'settings.speech_locale': { $ne: input.speech_locale } }];
  const set: Record<string, unknown> = { 'settings.speech_locale': input.speech_locale };
  if (input.specialty === null) {
    changed.push({ 'settings.specialty': { $ne: null } });
    set['settings.specialty'] = null;
  } else if (input.specialty !== undefined) {
    const specialty = { kind: input.specialty.kind, other_specialty_name: input.specialty.other_specialty_name ?? null };
    changed.push({ 'settings.specialty.kind': { $ne: specialty.kind } }, { 'settings.specialty.other_specialty_name': { $ne: specialty.other_specialty_name } });
    set['settings.specialty'] = specialty;
  }
  const secondary: Record<string, unknown> = {};
  if (input.secondary_speech_locale === undefined) {
    secondary['settings.secondary_speech_locale'] = { $ne: input.speech_locale };
  } else {
    changed.push({ 'settings.secondary_speech_locale': { $ne: input.secondary_speech_locale } });
    set['settings.secondary_speech_locale'] = input.secondary_speech_locale;
  }
  const now = deps.now?.() ?? new Date();
  const users = collectionsOf(deps.models).providerUsers;
  const user = await users.findOneAndUpdate(
    {
      organization_id: organizationId,
      external_provider_id: body.external_provider_id,
      // A one-value $in: FerretDB would push a second equality down and combine two indexes (docs/guarantees.md).
      email_normalized: { $in: [emailMatchKey(body.provider_email)] },
      // Not over a write made after this request arrived: applied late (after a 503), it would undo it.
      ...(cmd.receivedAt ? { updated_at: { $lt: cmd.receivedAt } } : {}),
      status: { $ne: 'deactivated' },
      'settings.speech_locale': { $exists: true },
      ...secondary,
      $and: [{ $or: changed }, { $or: [{ status_event: { $exists: true } }, { 'last_event.type': { $in: PLAIN_LAST_EVENTS } }] }],
    },
    {
      $set: {
        ...set,
        updated_at: now,
        outbox_slot: outboxSlotOf(now),
        status: 'active',
        deactivated_at: null,
        'last_event.id': randomUUID(),
        'last_event.type': 'user.updated',
        'last_event.occurred_at': now,
      },
      $inc: { version: 1, 'last_event.version': 1 },
    },
    { returnDocument: 'after' },
  );
  if (user && user.last_event.version !== user.version) {
    // A document no writer of this release left (each keeps the two equal): set it right before the event goes out.
    await users.updateOne({ _id: user._id, version: user.version }, { $set: { 'last_event.version': user.version } });
    user.last_event.version = user.version;
  }
  return user;
}

/**
 * A release before `status_event` wrote a change of status as the last event only (docs/operations.md,
 * Upgrading). While that change is still the user's last event it is the user's status event as well:
 * kept as such by the update that replaces it, or it would be coalesced away behind the update for a
 * target that has not heard it (docs/delivery.md, "Status changes"). The document is as the change left it.
 */
function statusEventLeftBehind(existing: ProviderUserDoc): { status_event?: StatusEvent } {
  const e = existing.last_event;
  if (existing.status_event || !e || e.version !== existing.version) return {};
  if (e.type !== 'user.reactivated' && e.type !== 'user.deactivated') return {};
  return { status_event: statusEventOf(e, existing) };
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
    status: 'active' as const,
    deactivated_at: null,
  };
  return {
    _id: new mongoose.Types.ObjectId(),
    organization_id: organizationId,
    email_normalized: emailNormalized,
    ...fields,
    created_event: { id: eventId, occurred_at: now, data: toProviderUserNextView(fields) },
    last_event: { id: eventId, type: 'user.created', occurred_at: now, version: 1 },
    outbox_slot: outboxSlotOf(now),
  };
}
