import type { Collection } from 'mongodb';
import mongoose, { type Connection, Schema } from 'mongoose';
import type { z } from 'zod';
import type { EmailUniqueness } from '../config.ts';
import type { UserStatus } from '../provider-users/provider-user-schema.ts';
import type {
  createdEventDocSchema,
  statusEventDocSchema,
  deliveryAttemptDocSchema,
  deliveryDocSchema,
  DELIVERY_STATUSES,
  emailClaimDocSchema,
  lastEventDocSchema,
  oauthClientDocSchema,
  organizationDocSchema,
  providerUserDocSchema,
  relayCursorDocSchema,
  signingKeyDocSchema,
  syncStateDocSchema,
  targetStateDocSchema,
  usedAssertionDocSchema,
} from './documents.ts';

/**
 * The collections (docs/guarantees.md, Data access). Mongoose only declares
 * them, their indexes and owns the connection: models are built per connection
 * (not on the global mongoose) so the API, the worker, the CLI and each test
 * file can hold their own. Every read and write in product code goes through
 * the typed driver collections of `collectionsOf(models)`, each typed by a
 * document type that is `z.infer` of one zod schema in documents.ts. The
 * driver does nothing implicitly (no defaults, no casting, no timestamps), so
 * every write sets every field its schema requires.
 */

export type OrganizationDoc = z.infer<typeof organizationDocSchema>;
export type OAuthClientDoc = z.infer<typeof oauthClientDocSchema>;
export type LastEvent = z.infer<typeof lastEventDocSchema>;
export type CreatedEvent = z.infer<typeof createdEventDocSchema>;
export type StatusEvent = z.infer<typeof statusEventDocSchema>;
export type ProviderUserDoc = z.infer<typeof providerUserDocSchema>;
export type SigningKeyDoc = z.infer<typeof signingKeyDocSchema>;
export type UsedAssertionDoc = z.infer<typeof usedAssertionDocSchema>;
export type RelayCursorDoc = z.infer<typeof relayCursorDocSchema>;
export type TargetStateDoc = z.infer<typeof targetStateDocSchema>;
export type EmailClaimDoc = z.infer<typeof emailClaimDocSchema>;

export type DeliveryStatus = (typeof DELIVERY_STATUSES)[number];
export type SyncStateDoc = z.infer<typeof syncStateDocSchema>;
export type DeliveryDoc = z.infer<typeof deliveryDocSchema>;
export type DeliveryAttemptDoc = z.infer<typeof deliveryAttemptDocSchema>;

const base = { versionKey: false, strict: 'throw', autoIndex: false, autoCreate: false } as const;

const organizationSchema = new Schema<OrganizationDoc>(
  { _id: String, name: { type: String, required: true }, api_version: { type: String, required: true }, created_at: Date },
  { ...base, collection: 'organizations' },
);

const oauthClientSchema = new Schema<OAuthClientDoc>(
  {
    _id: String,
    organization_id: { type: String, required: true, index: true },
    public_key_pem: { type: String, default: null },
    jwks_url: { type: String, default: null },
    enabled: { type: Boolean, default: true },
    created_at: Date,
    disabled_at: { type: Date, default: null },
  },
  { ...base, collection: 'oauth_clients' },
);

const providerUserSchema = new Schema<ProviderUserDoc>(
  {
    organization_id: { type: String, required: true },
    external_provider_id: { type: String, required: true },
    provider_email: { type: String, required: true },
    email_normalized: { type: String, required: true },
    settings: { type: Schema.Types.Mixed, default: null },
    created_at: Date,
    updated_at: Date,
    version: Number,
    status: { type: String, enum: ['active', 'deactivated'] },
    deactivated_at: { type: Date, default: null },
    created_event: Schema.Types.Mixed,
    last_event: Schema.Types.Mixed,
    status_event: Schema.Types.Mixed,
    outbox_slot: Number,
  },
  { ...base, collection: 'provider_users' },
);
// One user per EHR id; under EMAIL_UNIQUENESS=claims also the shard key of a sharded cluster. The
// email index, unique or not by EMAIL_UNIQUENESS, is made by ensureIndexes below.
providerUserSchema.index({ organization_id: 1, external_provider_id: 1 }, { unique: true });
// The outbox sweep reads recent writes one 10 s slot at a time, each an equality lookup
// (docs/delivery.md: on FerretDB a range or a sort reads the whole collection). GET /users
// pages through an organization by external_provider_id, on the unique index above.
providerUserSchema.index({ outbox_slot: 1 });

const signingKeySchema = new Schema<SigningKeyDoc>(
  { _id: String, kid: String, alg: String, private_key_pem: String, created_at: Date },
  { ...base, collection: 'signing_keys' },
);

const usedAssertionSchema = new Schema<UsedAssertionDoc>(
  { _id: String, expires_at: Date },
  { ...base, collection: 'used_assertions' },
);

const relayCursorSchema = new Schema<RelayCursorDoc>(
  { _id: String, updated_at: Date, user_id: { type: Schema.Types.ObjectId, default: null }, scanned: Number, slot_done: Number },
  { ...base, collection: 'relay_cursors' },
);

const targetStateSchema = new Schema<TargetStateDoc>(
  { _id: String, state: String, reason: String, changed_at: Date },
  { ...base, collection: 'target_states' },
);

const emailClaimSchema = new Schema<EmailClaimDoc>(
  { organization_id: String, email_normalized: String, external_provider_id: String, claimed_at: Date },
  { ...base, collection: 'email_claims' },
);
emailClaimSchema.index({ organization_id: 1, email_normalized: 1 }, { unique: true });

const syncStateSchema = new Schema<SyncStateDoc>(
  {
    _id: String,
    organization_id: String,
    user_id: Schema.Types.ObjectId,
    target: String,
    status: String,
    version: Number,
    delivered_version: Number,
    sent_version: Number,
    forgets: Number,
    attempts: Number,
    last_attempt_at: Date,
    last_error: String,
    updated_at: Date,
  },
  { ...base, collection: 'sync_states' },
);
syncStateSchema.index({ user_id: 1 });

const deliverySchema = new Schema<DeliveryDoc>(
  {
    _id: String,
    event_id: String,
    event_type: String,
    organization_id: String,
    user_id: Schema.Types.ObjectId,
    external_provider_id: String,
    target: String,
    version: Number,
    status: String,
    attempts: Number,
    last_status_code: Number,
    last_error: String,
    created_at: Date,
    updated_at: Date,
    delivered_at: Date,
    failed_at: Date,
  },
  { ...base, collection: 'deliveries' },
);
deliverySchema.index({ status: 1, updated_at: 1 });
// The delivery processor's settle: a user's older rows for one target.
deliverySchema.index({ user_id: 1, target: 1, version: 1 });

const deliveryAttemptSchema = new Schema<DeliveryAttemptDoc>(
  {
    delivery_id: String,
    target: String,
    at: Date,
    duration_ms: Number,
    status_code: Number,
    error_class: String,
    message: String,
    outcome: String,
    probe: Boolean,
  },
  { ...base, collection: 'delivery_attempts' },
);
// Attempts are read and deleted by their delivery only: no index on `at` alone (every attempt written kept one up for nothing).
deliveryAttemptSchema.index({ delivery_id: 1, at: 1 });
// `deliveries list --target`.
deliverySchema.index({ target: 1, status: 1, updated_at: 1 });

export function createModels(conn: Connection) {
  return {
    Organization: conn.model<OrganizationDoc>('Organization', organizationSchema),
    OAuthClient: conn.model<OAuthClientDoc>('OAuthClient', oauthClientSchema),
    ProviderUser: conn.model<ProviderUserDoc>('ProviderUser', providerUserSchema),
    SigningKey: conn.model<SigningKeyDoc>('SigningKey', signingKeySchema),
    UsedAssertion: conn.model<UsedAssertionDoc>('UsedAssertion', usedAssertionSchema),
    RelayCursor: conn.model<RelayCursorDoc>('RelayCursor', relayCursorSchema),
    TargetState: conn.model<TargetStateDoc>('TargetState', targetStateSchema),
    EmailClaim: conn.model<EmailClaimDoc>('EmailClaim', emailClaimSchema),
    SyncState: conn.model<SyncStateDoc>('SyncState', syncStateSchema),
    Delivery: conn.model<DeliveryDoc>('Delivery', deliverySchema),
    DeliveryAttempt: conn.model<DeliveryAttemptDoc>('DeliveryAttempt', deliveryAttemptSchema),
  };
}
export type Models = ReturnType<typeof createModels>;

export function isDuplicateKeyError(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === 11000;
}

/** An unordered insertMany that failed only because some documents were there already. */
export function isOnlyDuplicateKeyError(err: unknown): boolean {
  const writeErrors = (err as { writeErrors?: unknown }).writeErrors;
  const list = Array.isArray(writeErrors) ? writeErrors : writeErrors ? [writeErrors] : [];
  return list.length > 0 ? list.every((e) => isDuplicateKeyError(e)) : isDuplicateKeyError(err);
}

/**
 * Connection options of the API and the worker. At most 20 operations in flight
 * per process unless MONGO_URL says otherwise (`maxPoolSize=`): FerretDB 1.24
 * holds one of its 50 PostgreSQL connections for an update's read while it
 * waits for a second one to write, so 50 updates in flight at once can wait on
 * each other for ever; one API and one worker at 20 each stay under that. On
 * MongoDB 20 per process is plenty at these latencies; scale out with processes.
 */
export function mongoConnectionOptions(mongoUrl: string): mongoose.ConnectOptions {
  const fromUrl = /[?&]maxPoolSize=/i.test(mongoUrl);
  return { ...(fromUrl ? {} : { maxPoolSize: 20 }), serverSelectionTimeoutMS: 10_000 };
}

/** A user's lifecycle status; documents from before the lifecycle have none and are active. */
/** The outbox slot's length: the sweep reads one slot per lookup (docs/delivery.md). */
export const OUTBOX_SLOT_MS = 10_000;

/** The slot of a write made at `at`: written with every change, beside `updated_at`. */
export function outboxSlotOf(at: Date | number): number {
  return Math.floor((typeof at === 'number' ? at : at.getTime()) / OUTBOX_SLOT_MS);
}

export function statusOf(doc: Pick<ProviderUserDoc, 'status'>): UserStatus {
  return doc.status ?? 'active';
}

/**
 * Creates the collections and indexes. Start-up never depends on what FerretDB
 * refuses (TTL indexes, partial indexes, collations: code 238), so the TTL index
 * on used assertions is attempted and its absence tolerated. Without it (FerretDB)
 * expired rows stay until a retention purge removes them: harmless for security,
 * since an assertion past its exp is refused before its jti is looked at.
 * `emailUniqueness` (EMAIL_UNIQUENESS) decides the users' email index and whether
 * `email_claims` is made (docs/guarantees.md, "Email claims"); every process that
 * calls this must pass the mode the deployment runs with.
 */
export async function ensureIndexes(
  models: Models,
  log?: { warn: (obj: object, msg: string) => void },
  emailUniqueness: EmailUniqueness = 'index',
): Promise<void> {
  for (const model of Object.values(models)) {
    if (model === models.EmailClaim && emailUniqueness !== 'claims') continue;
    await model.createCollection().catch((err: { code?: number }) => {
      if (err.code !== 48) throw err; // 48: NamespaceExists
    });
    await model.createIndexes();
  }
  await ensureEmailIndex(collectionOf(models.ProviderUser), emailUniqueness, log);
  // Made by earlier versions and read by nothing: every attempt written kept it up for nothing.
  await models.DeliveryAttempt.collection.dropIndex('at_1').catch(() => undefined);
  try {
    await models.UsedAssertion.collection.createIndex({ expires_at: 1 }, { name: 'expires_at_ttl', expireAfterSeconds: 0 });
  } catch (err) {
    log?.warn({ err: (err as Error).message }, 'TTL index refused (FerretDB?); expired assertion ids stay until purged');
    await models.UsedAssertion.collection.createIndex({ expires_at: 1 }, { name: 'expires_at' });
  }
}

const EMAIL_INDEX = { organization_id: 1, email_normalized: 1 } as const;
const EMAIL_INDEX_NAME = 'organization_id_1_email_normalized_1';

/**
 * The index on a user's (organization, email): unique under EMAIL_UNIQUENESS=index, what keeps
 * emails unique; under `claims` the email claims do that, and the index only serves lookups, so
 * it is made plain when missing and an existing unique one is left for the operator to drop
 * before sharding (docs/guarantees.md, "Email claims").
 */
async function ensureEmailIndex(users: Collection<ProviderUserDoc>, mode: EmailUniqueness, log?: { warn: (obj: object, msg: string) => void }): Promise<void> {
  const emailIndex = async () => (await users.listIndexes().toArray()).find((i) => JSON.stringify(i.key) === JSON.stringify(EMAIL_INDEX));
  const existing = await emailIndex();
  if (mode === 'claims') {
    if (existing?.unique === true) {
      log?.warn({ index: existing.name }, 'EMAIL_UNIQUENESS=claims with the unique email index still in place: drop it before sharding on organization + external_provider_id (docs/guarantees.md, "Email claims")');
    }
    if (!existing) await users.createIndex(EMAIL_INDEX, { name: EMAIL_INDEX_NAME });
    return;
  }
  const refuse = (name: unknown) =>
    new Error(
      `provider_users has a non-unique email index (${String(name)}), left by EMAIL_UNIQUENESS=claims: keep EMAIL_UNIQUENESS=claims, or go back as docs/guarantees.md, "Email claims", says`,
    );
  // Looked at, not left to createIndex: FerretDB answers ok to a unique index whose name a plain one has.
  if (existing && existing.unique !== true) throw refuse(existing.name);
  if (existing) return;
  await users.createIndex(EMAIL_INDEX, { name: EMAIL_INDEX_NAME, unique: true });
  // A process in claims mode may have made the plain one meanwhile (FerretDB again answers ok).
  const made = await emailIndex();
  if (made?.unique !== true) throw refuse(made?.name);
}

/** The driver collection of a model, typed with its document (mongoose types it as `Document`). */
export function collectionOf<T extends { _id: unknown }>(model: mongoose.Model<T>): Collection<T> {
  return model.collection as unknown as Collection<T>;
}

/** The one way product code reads and writes: a typed driver collection per stored document type. */
export interface Collections {
  organizations: Collection<OrganizationDoc>;
  oauthClients: Collection<OAuthClientDoc>;
  providerUsers: Collection<ProviderUserDoc>;
  signingKeys: Collection<SigningKeyDoc>;
  usedAssertions: Collection<UsedAssertionDoc>;
  relayCursors: Collection<RelayCursorDoc>;
  targetStates: Collection<TargetStateDoc>;
  emailClaims: Collection<EmailClaimDoc>;
  syncStates: Collection<SyncStateDoc>;
  deliveries: Collection<DeliveryDoc>;
  deliveryAttempts: Collection<DeliveryAttemptDoc>;
}

const collectionSets = new WeakMap<Models, Collections>();

/** The typed collections of a connection's models (built once per `Models`). */
export function collectionsOf(models: Models): Collections {
  let set = collectionSets.get(models);
  if (!set) {
    set = {
      organizations: collectionOf(models.Organization),
      oauthClients: collectionOf(models.OAuthClient),
      providerUsers: collectionOf(models.ProviderUser),
      signingKeys: collectionOf(models.SigningKey),
      usedAssertions: collectionOf(models.UsedAssertion),
      relayCursors: collectionOf(models.RelayCursor),
      targetStates: collectionOf(models.TargetState),
      emailClaims: collectionOf(models.EmailClaim),
      syncStates: collectionOf(models.SyncState),
      deliveries: collectionOf(models.Delivery),
      deliveryAttempts: collectionOf(models.DeliveryAttempt),
    };
    collectionSets.set(models, set);
  }
  return set;
}
