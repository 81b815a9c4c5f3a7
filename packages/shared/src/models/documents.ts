import { Types } from 'mongoose';
import { z } from 'zod';
import { API_VERSIONS } from '../api-versions.ts';
import { userEventTypeSchema } from '../events/user-event-type.ts';
import { providerUserSchema, settingsSchema, userStatusSchema } from '../provider-users/provider-user-schema.ts';

/**
 * The stored documents, one zod schema each; the TypeScript types in models.ts
 * are `z.infer` of these, so a field added here is added everywhere it is read
 * or written, and the schema can check a document read back (tests, tools).
 * Field names are the stored ones (snake_case), as in the collections.
 */
const objectId = z.instanceof(Types.ObjectId);

/** An organization, pinned to the API version used when a request names none (docs/contract.md Versioning). */
export const organizationDocSchema = z.object({
  _id: z.string(),
  name: z.string(),
  api_version: z.enum(API_VERSIONS),
  created_at: z.date(),
});

/** An OAuth client of an organization: exactly one of a public key (PEM) or a JWKS URL is set. */
export const oauthClientDocSchema = z.object({
  _id: z.string(),
  organization_id: z.string(),
  public_key_pem: z.string().nullable(),
  jwks_url: z.string().nullable(),
  enabled: z.boolean(),
  created_at: z.date(),
  disabled_at: z.date().nullable(),
});

/** The service's own access-token signing key, when TOKEN_SIGNING_KEY is not set (one document, `access-token`). */
export const signingKeyDocSchema = z.object({
  _id: z.string(),
  kid: z.string(),
  alg: z.string(),
  private_key_pem: z.string(),
  created_at: z.date(),
});

/** A client assertion's `iss:jti`, kept until the assertion expires so it is accepted once. */
export const usedAssertionDocSchema = z.object({
  _id: z.string(),
  expires_at: z.date(),
});

/** The newest event of a user, written in the same single-document write as the change. */
export const lastEventDocSchema = z.object({
  id: z.string(),
  type: userEventTypeSchema,
  occurred_at: z.date(),
  version: z.number().int(),
});

/**
 * The creation event never changes, so the document keeps it whole (a target
 * that missed it gets it first, even after an outage). Documents written before
 * the lifecycle existed hold `data` without `status`; readers add it (active).
 */
export const createdEventDocSchema = z.object({
  id: z.string(),
  occurred_at: z.date(),
  data: providerUserSchema.extend({ status: userStatusSchema.optional(), deactivated_at: z.string().nullable().optional() }),
});

/**
 * The user's latest status change (`user.deactivated` or `user.reactivated`), kept whole like
 * the creation event, written in the same write as the change: a target that was behind when
 * newer events overtook it still gets the latest change of status before them, so no receiver
 * is left believing a reactivated user deactivated (docs/delivery.md, "Status changes").
 * Absent until a user's status first changes.
 */
export const statusEventDocSchema = z.object({
  id: z.string(),
  type: z.enum(['user.deactivated', 'user.reactivated']),
  occurred_at: z.date(),
  version: z.number().int(),
  data: createdEventDocSchema.shape.data,
});

export const providerUserDocSchema = z.object({
  _id: objectId,
  organization_id: z.string(),
  external_provider_id: z.string(),
  /** As first stored (trimmed). */
  provider_email: z.string(),
  /** Lower-cased: what uniqueness and matching use. */
  email_normalized: z.string(),
  settings: settingsSchema.nullable(),
  created_at: z.date(),
  updated_at: z.date(),
  version: z.number().int(),
  /** Absent on documents written before the lifecycle existed: read as `active`. */
  status: userStatusSchema.optional(),
  deactivated_at: z.date().nullable().optional(),
  created_event: createdEventDocSchema,
  last_event: lastEventDocSchema,
  status_event: statusEventDocSchema.optional(),
  /** `updated_at` in 10 s slots (outboxSlotOf): how the outbox sweep finds recent writes (docs/delivery.md). */
  outbox_slot: z.number().int(),
});

/**
 * A resumable walk's position. A resync run's: the last user passed (`user_id`;
 * `scanned` for its progress). The outbox sweep's: `slot_done`, every outbox
 * slot up to it published.
 */
export const relayCursorDocSchema = z.object({
  _id: z.string(),
  updated_at: z.date().optional(),
  user_id: objectId.nullable().optional(),
  scanned: z.number().int().optional(),
  slot_done: z.number().int().optional(),
});

/**
 * A target an operator paused, or that was disabled (410 Gone, failing too long): the
 * held states, kept in MongoDB beside their copy in Redis so a Redis that lost its data
 * gets them back (docs/delivery.md, "Target health"). A healthy or failing target has no row.
 */
export const targetStateDocSchema = z.object({
  _id: z.string(),
  state: z.enum(['paused', 'disabled']),
  reason: z.string(),
  changed_at: z.date(),
});

/**
 * Who holds an email within an organization, when EMAIL_UNIQUENESS=claims: a create claims the
 * email here before it inserts the user, so emails stay unique without a unique index on
 * `provider_users` (which a cluster sharded on organization + external_provider_id cannot keep;
 * docs/guarantees.md, "Email claims"). Never released once its user exists (emails never change).
 */
export const emailClaimDocSchema = z.object({
  _id: objectId,
  organization_id: z.string(),
  email_normalized: z.string(),
  /** The user that holds the email, or the create in progress that claimed it. */
  external_provider_id: z.string(),
  claimed_at: z.date(),
});

export const DELIVERY_STATUSES = ['pending', 'delivered', 'failed', 'superseded'] as const;

/** One row per (user, target): the state GET /users/{id} reports in `sync`. */
export const syncStateDocSchema = z.object({
  _id: z.string(),
  organization_id: z.string(),
  user_id: objectId,
  target: z.string(),
  status: z.enum(['pending', 'delivered', 'failed']),
  /** Newest version queued for this target. */
  version: z.number().int(),
  /** Newest version this target answered 2xx to: never sent anything older afterwards. */
  delivered_version: z.number().int(),
  /**
   * Newest version sent to this target, answered or not (it may have acted on it): nothing older
   * goes after it (docs/delivery.md, "Status changes"). Absent on rows written before it existed.
   */
  sent_version: z.number().int().optional(),
  /**
   * How many times `targets resync --force` has forgotten what this target was sent. A delivery
   * run's writes apply only while it is what the run read: a run that read the row before a forget
   * must not undo it (docs/delivery.md, "A forced resync and the runs around it"). Absent until the first.
   */
  forgets: z.number().int().optional(),
  attempts: z.number().int(),
  last_attempt_at: z.date().nullable(),
  last_error: z.string().nullable(),
  updated_at: z.date(),
});

/** One row per (event, target) delivery: the execution log, dead letters included. */
export const deliveryDocSchema = z.object({
  _id: z.string(),
  event_id: z.string(),
  event_type: z.string(),
  organization_id: z.string(),
  user_id: objectId,
  external_provider_id: z.string(),
  target: z.string(),
  version: z.number().int(),
  status: z.enum(DELIVERY_STATUSES),
  attempts: z.number().int(),
  last_status_code: z.number().int().nullable(),
  last_error: z.string().nullable(),
  created_at: z.date(),
  updated_at: z.date(),
  delivered_at: z.date().nullable(),
  /** When it became a dead letter (the last time, if replayed and failed again); absent otherwise. */
  failed_at: z.date().nullable().optional(),
});

/**
 * One attempt of a delivery (insert-only: upstream FerretDB has no compare-and-set, and
 * rows that are never updated cannot lose a concurrent write; retention deletes
 * them with their delivery row, never on their own: a row still pending keeps its history). Never the user's data nor the receiver's body: a status, an
 * error class and a short message we wrote ourselves.
 */
export const deliveryAttemptDocSchema = z.object({
  _id: objectId,
  delivery_id: z.string(),
  target: z.string(),
  at: z.date(),
  duration_ms: z.number(),
  status_code: z.number().int().nullable(),
  /** `http` (an answer that is not a 2xx), `timeout`, `network`, or null on success. */
  error_class: z.enum(['http', 'timeout', 'network']).nullable(),
  message: z.string().nullable(),
  /** What the attempt led to: delivered, retry, failed (dead letter), held (target failing/disabled). */
  outcome: z.enum(['delivered', 'retry', 'failed', 'held']),
  /** Sent as the one probe of a failing target. */
  probe: z.boolean(),
});
