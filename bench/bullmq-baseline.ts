/**
 * The delivery limit: a bare BullMQ worker doing what a delivery costs in HTTP,
 * in a process of its own. Per round, N jobs (a callback body each, the shape the
 * worker sends) are added to a paused plain queue on a prefix of its own; then the
 * queue is resumed and a plain Worker, at our worker's delivery concurrency, signs
 * each body (hex HMAC-SHA256 of timestamp + body, node:crypto) and POSTs it with
 * fetch to the bench receiver. No database, no fan-out, no bookkeeping: the
 * receiver's first-to-last arrival time over N is the rate to compare ours with.
 *
 * With `databaseUrl`, the same worker also does our delivery processor's database
 * work (apps/worker/src/deliver-to-target.ts, writes as in
 * packages/shared/src/deliveries/delivery-store.ts) with the bare mongodb driver:
 * before the POST, findOne of the user document by _id and of the SyncState row by
 * _id, side by side; after it, an upsert of the Delivery row, an upsert of the
 * SyncState row and an insert of a DeliveryAttempt, with the same update shapes,
 * group-committed (GroupCommit: one unordered bulkWrite per collection of the jobs
 * that finished meanwhile). Ours batches the SyncState and DeliveryAttempt writes the
 * same way but writes its Delivery row alone, because the fan-out inserts it at the
 * same time (docs/delivery.md, "Batched writes"); here no fan-out runs, so the row is
 * batched too, and this limit is a strict one. The database holds what ours holds when its
 * processor runs, seeded before the warm-up: the users in the stored shape and their
 * `pending` Delivery rows (the fan-out's), no SyncState row (the processor is its
 * only writer, so a new user has none), the same indexes. What this rate loses
 * against the bare one is what the database alone costs (on FerretDB, every
 * operation is SQL over PostgreSQL): the limit for ours on the same server.
 */
import { createHmac, randomUUID } from 'node:crypto';
import { Queue, Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import { MongoClient, ObjectId, type AnyBulkWriteOperation, type Collection, type Db, type Document, type OptionalUnlessRequiredId } from 'mongodb';
import { DEFAULT_DELIVERY_POLICY, deliveryIdOf, deliveryJobOptions, GroupCommit } from '@connect/shared';
import { childMain, isMain } from './bench-child.ts';
import { emailOf, externalId, settingsWith, storedUser, LOCALE_A } from './bench-users.ts';

export interface BullmqBaselineSpec {
  redisUrl: string;
  /** BullMQ key prefix of its own (cleaned up by the run). */
  prefix: string;
  receiverUrl: string;
  secret: string;
  concurrency: number;
  /** Jobs per round; an unmeasured warm-up round of `warmupJobs` first. */
  jobs: number;
  warmupJobs: number;
  rounds: number;
  /** Round r's callbacks carry external_provider_id `${idPrefix}-r${r}-${i}` (warm-up: r = w). */
  idPrefix: string;
  timeoutMs: number;
  /**
   * A database of its own (with the bench's pool size in the URL): each job also does our
   * delivery processor's database work there, with the bare driver (see the header).
   */
  databaseUrl?: string;
}

export interface BullmqBaselineRound {
  /** The ids this round delivered, for the receiver's arrival times. */
  idPrefix: string;
  jobs: number;
  completed: number;
  failed: number;
  /** Epoch ms: when the queue was resumed, when the last job completed (the worker's own view). */
  resumedAt: number;
  doneAt: number;
}

interface CallbackBody {
  request_uuid: string;
  type: 'user.created';
  occurred_at: string;
  data: { organization_id: string; version: number; user: Record<string, unknown> };
}

/** A job: the callback body, and with the database work the user's id (not sent). */
type BareJob = CallbackBody & { user_id?: string };

const nowMs = () => performance.timeOrigin + performance.now();

function callbackBody(prefix: string, i: number, stored?: { eventId: string; organizationId: string; at: Date }): CallbackBody {
  const at = (stored?.at ?? new Date()).toISOString();
  return {
    request_uuid: stored?.eventId ?? randomUUID(),
    type: 'user.created',
    occurred_at: at,
    data: {
      organization_id: stored?.organizationId ?? 'bare-bullmq',
      version: 1,
      user: { provider_email: emailOf(prefix, i), external_provider_id: externalId(prefix, i), settings: settingsWith(LOCALE_A), created_at: at, updated_at: at, version: 1 },
    },
  };
}

const retention = deliveryJobOptions(DEFAULT_DELIVERY_POLICY);

/** Delivery and SyncState rows have string ids (DeliveryDoc, SyncStateDoc). */
type StringId = Document & { _id: string };

/** The one target of the database work's rows. */
const TARGET = 'bench';

/**
 * The collections our processor reads and writes, with the indexes
 * packages/shared/src/models/models.ts gives them (every write maintains them).
 */
async function deliveryCollections(db: Db) {
  const users = db.collection('provider_users');
  const rows = db.collection<StringId>('deliveries');
  const syncs = db.collection<StringId>('sync_states');
  const attempts = db.collection('delivery_attempts');
  await Promise.all([
    users.createIndex({ organization_id: 1, external_provider_id: 1 }, { unique: true }),
    users.createIndex({ organization_id: 1, email_normalized: 1 }, { unique: true }),
    users.createIndex({ outbox_slot: 1 }),
    syncs.createIndex({ user_id: 1 }),
    rows.createIndex({ status: 1, updated_at: 1 }),
    rows.createIndex({ user_id: 1, target: 1, version: 1 }),
    rows.createIndex({ target: 1, status: 1, updated_at: 1 }),
    attempts.createIndex({ delivery_id: 1, at: 1 }),
    attempts.createIndex({ at: 1 }),
  ]);
  return { users, rows, syncs, attempts };
}

/** Inserts in unordered batches of 1,000, two at a time (not measured: before the warm-up). */
async function insertAll<D extends Document>(collection: Collection<D>, docs: OptionalUnlessRequiredId<D>[]): Promise<void> {
  let next = 0;
  const lane = async () => {
    while (next < docs.length) {
      const batch = docs.slice(next, (next += 1000));
      await collection.insertMany(batch, { ordered: false });
    }
  };
  await Promise.all([lane(), lane()]);
}

/**
 * Per round, the jobs' users (stored shape, version 1) and their `pending` Delivery rows
 * (DeliveryStore.pendingRow's shape), stored; the jobs carry the stored event's id.
 */
async function seedRounds(c: Awaited<ReturnType<typeof deliveryCollections>>, organizationId: string, rounds: { idPrefix: string; jobs: number }[]): Promise<Map<string, BareJob[]>> {
  const jobs = new Map<string, BareJob[]>();
  const users: Document[] = [];
  const rows: StringId[] = [];
  const now = new Date();
  for (const { idPrefix, jobs: n } of rounds) {
    const list: BareJob[] = [];
    for (let i = 0; i < n; i++) {
      const user = storedUser(organizationId, idPrefix, i, now);
      const userId = user._id as unknown as ObjectId;
      const eventId = user.created_event.id;
      users.push(user);
      rows.push({
        _id: deliveryIdOf(eventId, TARGET),
        event_id: eventId,
        event_type: 'user.created',
        organization_id: organizationId,
        user_id: userId,
        external_provider_id: user.external_provider_id,
        target: TARGET,
        version: 1,
        status: 'pending',
        attempts: 0,
        last_status_code: null,
        last_error: null,
        created_at: now,
        updated_at: now,
        delivered_at: null,
      });
      list.push({ ...callbackBody(idPrefix, i, { eventId, organizationId, at: now }), user_id: userId.toHexString() });
    }
    jobs.set(idPrefix, list);
  }
  await insertAll(c.users, users);
  await insertAll(c.rows, rows);
  return jobs;
}

/** Our processor's reads and writes of one delivered job (apps/worker/src/deliver-to-target.ts, DeliveryStore). */
function databaseWork(c: Awaited<ReturnType<typeof deliveryCollections>>) {
  // Group commit as DeliveryStore's for the sync state and the attempt (and, with no fan-out racing
  // it here, for the row too): one unordered bulkWrite (or insertMany) per collection of the writes
  // queued while the last one ran. Nothing is refused here, so a failed batch fails its jobs.
  const rowWrites = new GroupCommit<AnyBulkWriteOperation<StringId>>(async (ops) => void (await c.rows.bulkWrite(ops, { ordered: false })));
  const syncWrites = new GroupCommit<AnyBulkWriteOperation<StringId>>(async (ops) => void (await c.syncs.bulkWrite(ops, { ordered: false })));
  const attemptWrites = new GroupCommit<Document>(async (docs) => void (await c.attempts.insertMany(docs, { ordered: false })));
  return {
    async read(job: BareJob): Promise<void> {
      const [user] = await Promise.all([c.users.findOne({ _id: new ObjectId(job.user_id) }), c.syncs.findOne({ _id: `${job.user_id}:${TARGET}` })]);
      if (!user) throw new Error(`bare bullmq: user ${job.user_id} not found`);
    },
    async write(job: BareJob, statusCode: number, startedAt: Date, durationMs: number): Promise<void> {
      const now = new Date();
      const userId = new ObjectId(job.user_id);
      const deliveryId = deliveryIdOf(job.request_uuid, TARGET);
      // DeliveryStore.delivered: $set the outcome, $setOnInsert the rest of a row, $inc attempts.
      const rowSet = { status: 'delivered', last_status_code: statusCode, last_error: null, delivered_at: now };
      // DeliveryStore.recordSync with a delivered version: its $setOnInsert keeps what $set and $max do not touch.
      const syncSet = { status: 'delivered', version: job.data.version, attempts: 1, last_attempt_at: startedAt, last_error: null };
      await Promise.all([
        rowWrites.push({
          updateOne: {
            filter: { _id: deliveryId },
            update: {
              $set: { updated_at: now, ...rowSet },
              $setOnInsert: {
                event_id: job.request_uuid,
                event_type: job.type,
                organization_id: job.data.organization_id,
                user_id: userId,
                external_provider_id: job.data.user.external_provider_id,
                target: TARGET,
                version: job.data.version,
                created_at: now,
              },
              $inc: { attempts: 1 },
            },
            upsert: true,
          },
        }),
        syncWrites.push({
          updateOne: {
            filter: { _id: `${job.user_id}:${TARGET}` },
            update: {
              $set: { updated_at: now, ...syncSet },
              $setOnInsert: { organization_id: job.data.organization_id, user_id: userId, target: TARGET },
              $max: { delivered_version: job.data.version },
            },
            upsert: true,
          },
        }),
        attemptWrites.push({
          _id: new ObjectId(),
          delivery_id: deliveryId,
          target: TARGET,
          at: startedAt,
          duration_ms: durationMs,
          status_code: statusCode,
          error_class: null,
          message: null,
          outcome: 'delivered',
          probe: false,
        }),
      ]);
    },
  };
}

export async function runBullmqBaseline(spec: BullmqBaselineSpec): Promise<{ rounds: BullmqBaselineRound[] }> {
  const labels = [...(spec.warmupJobs > 0 ? [{ label: 'w', jobs: spec.warmupJobs }] : []), ...Array.from({ length: spec.rounds }, (_, r) => ({ label: String(r), jobs: spec.jobs }))];
  const idPrefixOf = (label: string) => `${spec.idPrefix}-r${label}`;
  // The database work: a client with the bench's pool (in the URL), the rounds' users and rows stored first.
  const mongo = spec.databaseUrl ? await new MongoClient(spec.databaseUrl).connect() : undefined;
  let dbWork: ReturnType<typeof databaseWork> | undefined;
  let seeded: Map<string, BareJob[]> | undefined;
  if (mongo) {
    try {
      const c = await deliveryCollections(mongo.db());
      seeded = await seedRounds(c, `bare-db-${randomUUID().slice(0, 8)}`, labels.map((l) => ({ idPrefix: idPrefixOf(l.label), jobs: l.jobs })));
      dbWork = databaseWork(c);
    } catch (err) {
      await mongo.close();
      throw err;
    }
  }
  const queueRedis = new Redis(spec.redisUrl, { maxRetriesPerRequest: null });
  const workerRedis = new Redis(spec.redisUrl, { maxRetriesPerRequest: null });
  const queue = new Queue<BareJob>('bare-deliveries', {
    connection: queueRedis,
    prefix: spec.prefix,
    // The same retention as the worker's delivery queues, so each completion costs Redis the same
    // (the worker's own backoff type needs its strategy: a plain exponential one stands in; nothing fails here).
    defaultJobOptions: { attempts: 8, backoff: { type: 'exponential', delay: 2000 }, removeOnComplete: retention.removeOnComplete, removeOnFail: retention.removeOnFail },
  });
  await queue.pause();
  let completed = 0;
  let failed = 0;
  let doneAt = 0;
  const deliver = async (job: Job<BareJob>): Promise<void> => {
    const { user_id, ...body } = job.data;
    if (dbWork) await dbWork.read(job.data);
    const rawBody = JSON.stringify(body);
    const startedAt = new Date();
    const t0 = performance.now();
    const timestamp = startedAt.toISOString();
    const signature = createHmac('sha256', spec.secret).update(timestamp, 'utf8').update(rawBody, 'utf8').digest('hex');
    const res = await fetch(spec.receiverUrl, {
      method: 'POST',
      redirect: 'manual',
      signal: AbortSignal.timeout(10_000),
      headers: {
        'content-type': 'application/json',
        'user-agent': 'bare-bullmq-bench/1',
        'x-nabla-connect-timestamp': timestamp,
        'x-nabla-connect-signature': signature,
      },
      body: rawBody,
    });
    await res.arrayBuffer();
    if (res.status < 200 || res.status >= 300) throw new Error(`HTTP ${res.status}`);
    if (dbWork && user_id) await dbWork.write(job.data, res.status, startedAt, performance.now() - t0);
  };
  const worker = new Worker<BareJob>('bare-deliveries', deliver, { connection: workerRedis, prefix: spec.prefix, concurrency: spec.concurrency });
  worker.on('completed', () => {
    completed++;
    doneAt = nowMs();
  });
  worker.on('failed', () => {
    failed++;
    doneAt = nowMs();
  });
  worker.on('error', () => undefined);
  await worker.waitUntilReady();

  const oneRound = async (label: string, jobs: number): Promise<BullmqBaselineRound> => {
    const idPrefix = idPrefixOf(label);
    completed = 0;
    failed = 0;
    const data = seeded?.get(idPrefix) ?? Array.from({ length: jobs }, (_, i) => callbackBody(idPrefix, i));
    await queue.addBulk(data.map((d) => ({ name: 'user.created', data: d })));
    const resumedAt = nowMs();
    await queue.resume();
    const deadline = Date.now() + spec.timeoutMs;
    while (completed + failed < jobs && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    await queue.pause();
    return { idPrefix, jobs, completed, failed, resumedAt, doneAt };
  };

  try {
    const rounds: BullmqBaselineRound[] = [];
    for (const { label, jobs } of labels) {
      const round = await oneRound(label, jobs);
      if (label !== 'w') rounds.push(round);
    }
    return { rounds };
  } finally {
    await worker.close();
    await queue.obliterate({ force: true }).catch(() => undefined);
    await queue.close();
    queueRedis.disconnect();
    workerRedis.disconnect();
    await mongo?.close();
  }
}

if (isMain(import.meta.url)) await childMain(runBullmqBaseline);
