import { setTimeout as sleep } from 'node:timers/promises';
import mongoose from 'mongoose';
import type { Collection } from 'mongodb';
import { maskEmail } from '../logger.ts';
import { isDuplicateKeyError, type EmailClaimDoc, type ProviderUserDoc } from '../models/models.ts';

/**
 * Email uniqueness under EMAIL_UNIQUENESS=claims (docs/guarantees.md, "Email claims"): a create
 * claims its email in `email_claims` (unique on organization + email) before it inserts the
 * user, so `provider_users` needs no unique index but the one on organization +
 * external_provider_id, the shard key a sharded cluster can then use.
 *
 * A claim names the external_provider_id that holds the email. It outlives a create that died
 * between the two writes; such a claim is deleted by the next create of that email once it is
 * older than CLAIM_STALE_MS and no user of its id holds the email, and that create claims anew.
 * A create whose own process took more than half that age between its claim and its insert
 * decides again before inserting (upsert-provider-user.ts); one whose insert reached the
 * database later still (held up there) finds its claim gone after the insert and undoes it
 * (`undoInsert`).
 */
export const CLAIM_STALE_MS = 60 * 60_000;
/** How long a create waits for another create in progress on its email to finish or give up. */
export const CLAIM_SETTLE_MS = 2_000;
const CLAIM_SETTLE_POLL_MS = 50;

export interface EmailClaimScope {
  organizationId: string;
  emailNormalized: string;
  externalProviderId: string;
}

export type ClaimOutcome = 'claimed' | 'taken' | 'retry';

/** Where an error only an operator can settle goes (pino's `error` fits). */
export interface ClaimsLog {
  error(obj: object, msg: string): void;
}

export class EmailClaims {
  constructor(
    private readonly claims: Collection<EmailClaimDoc>,
    private readonly users: Collection<ProviderUserDoc>,
    private readonly log?: ClaimsLog,
    /** A monotonic clock in ms, for the time a create takes between its claim and its insert (tests move it). */
    readonly clock: () => number = () => performance.now(),
  ) {}

  /**
   * Claims the email for this create: `claimed` (ours, or already held by this same id: a
   * concurrent create of it), `taken` (another user holds it, or another create claimed it
   * less than CLAIM_STALE_MS ago), `retry` (the claim changed under us, or a dead create's claim
   * was just deleted: decide again).
   */
  async claim(scope: EmailClaimScope, now: Date): Promise<ClaimOutcome> {
    const { organizationId, emailNormalized, externalProviderId } = scope;
    const doc: EmailClaimDoc = {
      _id: new mongoose.Types.ObjectId(),
      organization_id: organizationId,
      email_normalized: emailNormalized,
      external_provider_id: externalProviderId,
      claimed_at: now,
    };
    try {
      await this.claims.insertOne(doc);
    } catch (err) {
      if (!isDuplicateKeyError(err)) throw err;
      const held = await this.claims.findOne({ organization_id: organizationId, email_normalized: emailNormalized });
      if (!held) return 'retry';
      if (held.external_provider_id !== externalProviderId) return this.heldByAnother(held, scope, now);
      // Already this id's (a concurrent create of it, or this create's own earlier claim): dated
      // now, so that it does not count as a dead create's while this create goes on.
      const refreshed = await this.claims.updateOne({ _id: held._id, external_provider_id: externalProviderId }, { $set: { claimed_at: now } });
      if (refreshed.matchedCount !== 1) return 'retry';
    }
    // A user stored before claims were kept (EMAIL_UNIQUENESS=index) has no claim: look for one,
    // and when there is, the claim becomes that user's.
    const unclaimed = await this.users.findOne(
      { organization_id: organizationId, email_normalized: emailNormalized, external_provider_id: { $ne: externalProviderId } },
      { projection: { external_provider_id: 1 } },
    );
    if (unclaimed) {
      await this.handTo(scope, unclaimed.external_provider_id, now);
      return 'taken';
    }
    return 'claimed';
  }

  /**
   * Another id's claim on this email. Its user holds the email: `taken`. Its user holds another
   * email (that create lost on its id and is releasing this claim), or it has no user and is
   * older than CLAIM_STALE_MS (its create died): deleted, by its `_id` as read, and `retry`, so
   * the unique index picks one of several creates claiming anew at once (a conditional update
   * would not on upstream FerretDB, which does not apply updates atomically). No user yet and younger: its create
   * is in progress, so wait up to CLAIM_SETTLE_MS for it to insert its user or give the claim up;
   * a claim still there with no user after that is `taken`.
   */
  private async heldByAnother(held: EmailClaimDoc, scope: EmailClaimScope, now: Date): Promise<ClaimOutcome> {
    const settleBy = Date.now() + CLAIM_SETTLE_MS;
    for (;;) {
      const holder = await this.users.findOne(
        { organization_id: scope.organizationId, external_provider_id: held.external_provider_id },
        { projection: { email_normalized: 1 } },
      );
      if (holder?.email_normalized === scope.emailNormalized) return 'taken';
      if (holder || now.getTime() - held.claimed_at.getTime() >= CLAIM_STALE_MS) {
        await this.claims.deleteOne({ _id: held._id, external_provider_id: held.external_provider_id, claimed_at: held.claimed_at });
        return 'retry';
      }
      if (Date.now() >= settleBy) return 'taken';
      await sleep(CLAIM_SETTLE_POLL_MS);
      // With the shard key of email_claims in the filter: one shard answers.
      const still = await this.claims.findOne({ organization_id: scope.organizationId, email_normalized: scope.emailNormalized, _id: held._id }, { projection: { external_provider_id: 1 } });
      if (still?.external_provider_id !== held.external_provider_id) return 'retry';
    }
  }

  /** After the insert: is the email still claimed by this create? (Not when it was taken over meanwhile.) */
  async stillHeld(scope: EmailClaimScope): Promise<boolean> {
    const held = await this.claims.findOne(
      { organization_id: scope.organizationId, email_normalized: scope.emailNormalized },
      { projection: { external_provider_id: 1 } },
    );
    return held?.external_provider_id === scope.externalProviderId;
  }

  /**
   * The user this create inserted, deleted after its claim was found taken over (the insert
   * reached the database more than CLAIM_STALE_MS after the claim). False when another request
   * has changed the user already: it then stays, two users share the email, and an error says so
   * for an operator to settle (docs/guarantees.md, "Email claims"), on `log` (the request's) or
   * this object's own.
   */
  async undoInsert(user: ProviderUserDoc, log: ClaimsLog | undefined = this.log): Promise<boolean> {
    const { deletedCount } = await this.users.deleteOne({ _id: user._id, version: 1 });
    if (deletedCount === 1) return true;
    log?.error(
      { organization_id: user.organization_id, external_provider_id: user.external_provider_id, email: maskEmail(user.provider_email) },
      'two users now share an email: a create lost its email claim while its insert was held up, and its user was changed before it could be undone',
    );
    return false;
  }

  /** This create's claim, when its user will not exist (its id turned out to hold another email). */
  async release(scope: EmailClaimScope): Promise<void> {
    await this.claims.deleteOne({ organization_id: scope.organizationId, email_normalized: scope.emailNormalized, external_provider_id: scope.externalProviderId });
  }

  /** This create's claim, given to the user found holding the email. */
  async handTo(scope: EmailClaimScope, holderId: string, now: Date): Promise<void> {
    await this.claims.updateOne(
      { organization_id: scope.organizationId, email_normalized: scope.emailNormalized, external_provider_id: scope.externalProviderId },
      { $set: { external_provider_id: holderId, claimed_at: now } },
    );
  }
}
