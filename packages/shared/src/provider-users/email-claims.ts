import mongoose from 'mongoose';
import type { Collection } from 'mongodb';
import { isDuplicateKeyError, type EmailClaimDoc, type ProviderUserDoc } from '../models/models.ts';

/**
 * Email uniqueness under EMAIL_UNIQUENESS=claims (docs/guarantees.md, "Email claims"): a create
 * claims its email in `email_claims` (unique on organization + email) before it inserts the
 * user, so `provider_users` needs no unique index but the one on organization +
 * external_provider_id, the shard key a sharded cluster can then use.
 *
 * A claim names the external_provider_id that holds the email. It outlives a create that died
 * between the two writes; such a claim is deleted by the next create of that email once it is
 * older than CLAIM_STALE_MS and no user of its id holds the email, and that create claims anew. A create checks after its
 * insert that the claim is still its own, and undoes its insert if it is not (it was paused past
 * that age and lost the claim), so two users never keep one email.
 */
export const CLAIM_STALE_MS = 60_000;

export interface EmailClaimScope {
  organizationId: string;
  emailNormalized: string;
  externalProviderId: string;
}

export type ClaimOutcome = 'claimed' | 'taken' | 'retry';

export class EmailClaims {
  constructor(
    private readonly claims: Collection<EmailClaimDoc>,
    private readonly users: Collection<ProviderUserDoc>,
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
      if (held.external_provider_id !== externalProviderId) {
        const holder = await this.users.findOne(
          { organization_id: organizationId, external_provider_id: held.external_provider_id },
          { projection: { email_normalized: 1 } },
        );
        if (holder?.email_normalized === emailNormalized) return 'taken';
        // No user of that id yet: its create is in progress, unless it died long enough ago.
        if (!holder && now.getTime() - held.claimed_at.getTime() < CLAIM_STALE_MS) return 'taken';
        // Taken over by deleting that very claim (its _id, as read) and claiming anew: the unique
        // index then picks one of several creates doing this at once. A conditional update would
        // not, on FerretDB, which does not apply updates atomically.
        await this.claims.deleteOne({ _id: held._id, external_provider_id: held.external_provider_id, claimed_at: held.claimed_at });
        return 'retry';
      }
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

  /** After the insert: is the email still claimed by this create? (Not when it was taken over meanwhile.) */
  async stillHeld(scope: EmailClaimScope): Promise<boolean> {
    const held = await this.claims.findOne(
      { organization_id: scope.organizationId, email_normalized: scope.emailNormalized },
      { projection: { external_provider_id: 1 } },
    );
    return held?.external_provider_id === scope.externalProviderId;
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
