/**
 * Retention: the worker's purge pass against the run's real database (FerretDB
 * here, where no TTL index exists) and Redis.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { Types } from 'mongoose';
import type { CommandStartedEvent } from 'mongodb';
import { collectionOf, ensureIndexes, syncStateIdOf, type DeliveryDoc, type DeliveryStatus } from '@connect/shared';
import { ORPHANED_HISTORY_WALKED, purgeExpired, purgeLockKey, workerOptionsFromEnv } from '@connect/worker';
import { USED_ASSERTION_KEPT_MS } from '@connect/api';
import { registerTestClient, requestToken, signAssertion, startTestApi, http, type TestApi, type TestClient } from '../support/harness.ts';
import { startTestWorker, type TestWorker } from '../worker/worker-under-test.ts';
import { filtersOn, hasNoBatchIn, isIdEquality, watchCommands } from '../support/watched-commands.ts';

const DAY = 86_400_000;
let api: TestApi;
let worker: TestWorker;

beforeAll(async () => {
  api = await startTestApi({ label: 'retention' });
  // The default retention (30 days, what DELIVERY_RETENTION_DAYS unset gives), and no pass of
  // its own during the test: the test runs them.
  worker = await startTestWorker(api.env, { purgeIntervalMs: 3_600_000, deliveryRetentionMs: workerOptionsFromEnv({}).deliveryRetentionMs });
});
afterAll(async () => {
  await worker?.close();
  await api?.close();
});

function row(status: DeliveryStatus, ageMs: number): DeliveryDoc {
  const at = new Date(Date.now() - ageMs);
  const id = randomUUID();
  return {
    _id: `${id}.dictation`,
    event_id: id,
    event_type: 'user.updated',
    organization_id: 'org',
    user_id: new Types.ObjectId(),
    external_provider_id: `ret-${id}`,
    target: 'dictation',
    version: 2,
    status,
    attempts: 1,
    last_status_code: status === 'delivered' ? 200 : 500,
    last_error: null,
    created_at: at,
    updated_at: at,
    delivered_at: status === 'delivered' ? at : null,
    failed_at: status === 'failed' ? at : null,
  };
}

/** A refused reactivation past the retention that is still its user's status change (so the pass keeps it), its user stored. */
async function keptRefusedReactivation(userId = new Types.ObjectId()): Promise<DeliveryDoc> {
  const refused = { ...row('failed', 31 * DAY), user_id: userId, event_type: 'user.reactivated', version: 3 };
  await api.models.ProviderUser.collection.insertOne({ _id: userId, organization_id: 'org', external_provider_id: refused.external_provider_id, status_event: { id: refused.event_id, type: 'user.reactivated', version: 3, data: {} } } as never);
  return refused;
}

/** One purge pass (default retention) on a connection of its own whose commands are watched: the commands it sent. */
async function commandsOfOnePass(): Promise<CommandStartedEvent[]> {
  const { seen } = await watchCommands(api.env.MONGO_URL!, (models) => purgeExpired(models, { retentionMs: workerOptionsFromEnv({}).deliveryRetentionMs }));
  return seen;
}

describe('Retention (DELIVERY_RETENTION_DAYS, default 30)', () => {
  it('purges finished deliveries older than the retention with their attempt history, keeps pending ones however old and recent ones', async () => {
    const old = (['delivered', 'superseded', 'failed'] as const).flatMap((s) => [row(s, 31 * DAY), row(s, 400 * DAY)]);
    const oldPending = [row('pending', 31 * DAY), row('pending', 400 * DAY)];
    const recent = (['delivered', 'superseded', 'failed', 'pending'] as const).map((s) => row(s, 29 * DAY));
    const Delivery = collectionOf(api.models.Delivery);
    const Attempts = collectionOf(api.models.DeliveryAttempt);
    await Delivery.insertMany([...old, ...oldPending, ...recent]);
    // Two attempts of each row, as old as the row.
    await Attempts.insertMany(
      [...old, ...oldPending, ...recent].flatMap((d) =>
        [0, 1].map(() => ({
          _id: new Types.ObjectId(),
          delivery_id: d._id,
          target: d.target,
          at: d.updated_at,
          duration_ms: 5,
          status_code: d.last_status_code,
          error_class: d.status === 'delivered' ? null : ('http' as const),
          message: null,
          outcome: d.status === 'delivered' ? ('delivered' as const) : ('retry' as const),
          probe: false,
        })),
      ),
    );

    const result = await worker.worker.purge.runOnce();
    expect(result).toMatchObject({ deliveries: old.length, attempts: old.length * 2 });
    const left = new Set((await Delivery.find({}).toArray()).map((d) => d._id));
    for (const d of old) expect(left.has(d._id), `${d.status} ${d._id}`).toBe(false);
    for (const d of [...oldPending, ...recent]) expect(left.has(d._id), `${d.status} ${d._id}`).toBe(true);
    // The history goes with its row, and only with it: a pending delivery's old attempts stay.
    const history = new Set((await Attempts.find({}).toArray()).map((a) => a.delivery_id));
    for (const d of old) expect(history.has(d._id)).toBe(false);
    for (const d of [...oldPending, ...recent]) expect(history.has(d._id)).toBe(true);
  });

  it('keeps the dead letter of a refused reactivation while it is still the user\'s latest change of status (it stops it going out again), and purges it once the status changed again; a refused deactivation is purged', async () => {
    const Delivery = collectionOf(api.models.Delivery);
    const Users = api.models.ProviderUser.collection;
    const userId = new Types.ObjectId();
    const refused = { ...row('failed', 31 * DAY), user_id: userId, event_type: 'user.reactivated', version: 3 };
    const plain = { ...row('failed', 31 * DAY), user_id: userId, event_type: 'user.updated', version: 4 };
    const otherUsers = { ...row('failed', 31 * DAY), event_type: 'user.reactivated' };
    const statusEvent = { id: refused.event_id, type: 'user.reactivated', occurred_at: refused.created_at, version: 3, data: {} };
    // A refused deactivation still current guards nothing (only a reactivation can follow it, and replaces it): purged.
    const deactivatedId = new Types.ObjectId();
    const refusedDeactivation = { ...row('failed', 31 * DAY), user_id: deactivatedId, event_type: 'user.deactivated' };
    await Users.insertMany([
      { _id: userId, organization_id: 'org', external_provider_id: refused.external_provider_id, status_event: statusEvent },
      { _id: deactivatedId, organization_id: 'org', external_provider_id: refusedDeactivation.external_provider_id, status_event: { ...statusEvent, id: refusedDeactivation.event_id, type: 'user.deactivated' } },
    ]);
    await Delivery.insertMany([refused, plain, otherUsers, refusedDeactivation]);

    await worker.worker.purge.runOnce();
    let left = new Set((await Delivery.find({ _id: { $in: [refused._id, plain._id, otherUsers._id, refusedDeactivation._id] } }).toArray()).map((d) => d._id));
    // Before: all three went, and the reactivation was sent (and refused) again in front of the next update.
    expect([...left]).toEqual([refused._id]);

    // The user's status changes again: that dead letter no longer guards anything.
    await Users.updateOne({ _id: userId }, { $set: { status_event: { ...statusEvent, id: randomUUID(), type: 'user.deactivated', version: 5 } } });
    await worker.worker.purge.runOnce();
    left = new Set((await Delivery.find({ _id: refused._id }).toArray()).map((d) => d._id));
    expect(left.size).toBe(0);
  });

  it('marks superseded a pending row left below the version its target already has (nothing will send it), and leaves held and recent ones pending', async () => {
    const Delivery = collectionOf(api.models.Delivery);
    const Syncs = api.models.SyncState.collection;
    const userId = new Types.ObjectId();
    const at = (version: number, ageMs: number) => ({ ...row('pending', ageMs), user_id: userId, version });
    // The target has version 5 of this user.
    await Syncs.insertOne({ _id: syncStateIdOf(userId.toHexString(), 'dictation'), organization_id: 'org', user_id: userId, target: 'dictation', delivered_version: 5, status: 'delivered', attempts: 1, last_attempt_at: new Date(), last_error: null, updated_at: new Date() } as never);
    const leftBehind = at(3, 3_600_000);
    const heldBack = at(6, 3_600_000);
    const recent = at(4, 60_000);
    const noSyncState = { ...row('pending', 3_600_000), version: 1 };
    await Delivery.insertMany([leftBehind, heldBack, recent, noSyncState]);

    const result = await worker.worker.purge.runOnce();
    expect(result?.superseded).toBeGreaterThanOrEqual(1);
    const status = async (id: string) => (await Delivery.findOne({ _id: id }))?.status;
    expect(await status(leftBehind._id)).toBe('superseded');
    expect([await status(heldBack._id), await status(recent._id), await status(noSyncState._id)]).toEqual(['pending', 'pending', 'pending']);
  });

  it('reads sync states and users and marks rows left behind by _id one at a time, never with $in (on FerretDB a $in reads the whole collection, which grows with users, on every pass)', async () => {
    // A pass that has both kinds of work: a pending row left behind (its sync state is read) and a
    // refused reactivation past the retention that is still its user's status change (its user is read).
    const Delivery = collectionOf(api.models.Delivery);
    const userId = new Types.ObjectId();
    await api.models.SyncState.collection.insertOne({ _id: syncStateIdOf(userId.toHexString(), 'dictation'), organization_id: 'org', user_id: userId, target: 'dictation', delivered_version: 5, status: 'delivered', attempts: 1, last_attempt_at: new Date(), last_error: null, updated_at: new Date() } as never);
    const leftBehind = { ...row('pending', 3_600_000), user_id: userId, version: 2 };
    const refused = await keptRefusedReactivation(userId);
    await Delivery.insertMany([leftBehind, refused]);

    const seen = await commandsOfOnePass();
    expect((await Delivery.findOne({ _id: leftBehind._id }))?.status).toBe('superseded');
    expect(await Delivery.countDocuments({ _id: refused._id })).toBe(1);

    const reads = { sync_states: filtersOn(seen, 'sync_states', 'find'), provider_users: filtersOn(seen, 'provider_users', 'find') };
    expect(reads.sync_states.length * reads.provider_users.length).toBeGreaterThan(0);
    for (const [name, filters] of Object.entries(reads)) for (const f of filters) expect(isIdEquality(f), `${name} ${JSON.stringify(f)}`).toBe(true);
    // The row left behind is marked superseded by its own id as well: a `$in` there read every delivery row.
    const marks = filtersOn(seen, 'deliveries', 'update');
    expect(marks.length).toBeGreaterThan(0);
    for (const f of marks) expect(isIdEquality(f), `deliveries ${JSON.stringify(f)}`).toBe(true);
  });

  it('while it keeps a refused reactivation, deletes the other old rows batch by batch with their history: no attempt is left without its row', async () => {
    const Delivery = collectionOf(api.models.Delivery);
    const Attempts = collectionOf(api.models.DeliveryAttempt);
    const refused = await keptRefusedReactivation();
    const old = Array.from({ length: 5 }, () => row('delivered', 31 * DAY));
    await Delivery.insertMany([refused, ...old]);
    await Attempts.insertMany(
      [refused, ...old].map((d) => ({ _id: new Types.ObjectId(), delivery_id: d._id, target: d.target, at: d.updated_at, duration_ms: 5, status_code: 200, error_class: null, message: null, outcome: 'delivered' as const, probe: false })),
    );

    // Batches of 2: the rows take three of them.
    await purgeExpired(api.models, { retentionMs: workerOptionsFromEnv({}).deliveryRetentionMs, batchSize: 2 });
    const ids = old.map((d) => d._id);
    expect(await Delivery.countDocuments({ _id: { $in: ids } })).toBe(0);
    // Before: the first batch deleted every old row but only its own two rows' attempts; the other three stayed for good.
    expect(await Attempts.countDocuments({ delivery_id: { $in: ids } })).toBe(0);
    expect(await Delivery.countDocuments({ _id: refused._id })).toBe(1);
    expect(await Attempts.countDocuments({ delivery_id: refused._id })).toBe(1);
  });

  it('finds finished rows in one read per status and deletes them and their attempts by _id, never with a $in of several ids (on FerretDB each read every row and attempt stored, per batch)', async () => {
    const Delivery = collectionOf(api.models.Delivery);
    const Attempts = collectionOf(api.models.DeliveryAttempt);
    // A kept refused reactivation too, so the filter carries its exclusion.
    const refused = await keptRefusedReactivation();
    const old = (['delivered', 'superseded', 'failed'] as const).map((s) => row(s, 31 * DAY));
    await Delivery.insertMany([refused, ...old]);
    await Attempts.insertMany(old.map((d) => ({ _id: new Types.ObjectId(), delivery_id: d._id, target: d.target, at: d.updated_at, duration_ms: 5, status_code: 200, error_class: null, message: null, outcome: 'delivered' as const, probe: false })));

    const seen = await commandsOfOnePass();
    const ids = old.map((d) => d._id);
    expect(await Delivery.countDocuments({ _id: { $in: ids } })).toBe(0);
    expect(await Attempts.countDocuments({ delivery_id: { $in: ids } })).toBe(0);
    expect(await Delivery.countDocuments({ _id: refused._id })).toBe(1);

    const onRows = seen.filter((e) => ['find', 'delete'].includes(e.commandName) && ['deliveries', 'delivery_attempts'].includes((e.command.find ?? e.command.delete) as string));
    expect(onRows.some((e) => e.commandName === 'delete')).toBe(true);
    for (const e of onRows) {
      const filters = e.commandName === 'find' ? [e.command.filter] : (e.command.deletes as { q: unknown }[]).map((d) => d.q);
      for (const f of filters) expect(hasNoBatchIn(f), `${e.commandName} ${String(e.command.find ?? e.command.delete)} ${JSON.stringify(f)}`).toBe(true);
    }
    // Each row deleted by its _id, the rest of the filter kept from FerretDB's pushdown (a one-value $in):
    // pushed down, the status made PostgreSQL read the index entry of every row of that status, per row.
    const rowDeletes = filtersOn(seen, 'deliveries', 'delete');
    expect(rowDeletes).toHaveLength(3);
    for (const q of rowDeletes) {
      expect(isIdEquality(q), JSON.stringify(q)).toBe(true);
      expect(q.status, JSON.stringify(q)).toEqual({ $in: [expect.any(String)] });
    }
    // One read of the old rows per status (a cursor; their filter carries the kept row's exclusion), not a query per batch.
    expect(filtersOn(seen, 'deliveries', 'find').filter((f) => JSON.stringify(f).includes('$nin'))).toHaveLength(3);
  });

  it('deletes, once per database, the old attempt history an earlier release left without its row, keeps the history of rows still there and young history, and does not walk the attempts again', async () => {
    const Attempts = collectionOf(api.models.DeliveryAttempt);
    const Delivery = collectionOf(api.models.Delivery);
    const attempt = (deliveryId: string, ageMs: number) => ({ _id: new Types.ObjectId(), delivery_id: deliveryId, target: 'dictation', at: new Date(Date.now() - ageMs), duration_ms: 5, status_code: 200, error_class: null, message: null, outcome: 'delivered' as const, probe: false });
    // As an earlier release left it: the walk not yet made on this database.
    await api.models.RelayCursor.collection.deleteOne({ _id: ORPHANED_HISTORY_WALKED as never });
    const pendingRow = row('pending', 40 * DAY);
    await Delivery.insertOne(pendingRow);
    const orphan = `${randomUUID()}.dictation`;
    const young = `${randomUUID()}.dictation`;
    await Attempts.insertMany([attempt(orphan, 40 * DAY), attempt(orphan, 35 * DAY), attempt(pendingRow._id, 40 * DAY), attempt(young, 60_000)]);

    // Batches of one: the walk deletes while its cursor over the attempts is still open.
    const first = await watchCommands(api.env.MONGO_URL!, (models) => purgeExpired(models, { retentionMs: workerOptionsFromEnv({}).deliveryRetentionMs, batchSize: 1 }));
    expect(first.result.orphanedAttempts).toBeGreaterThanOrEqual(2);
    expect(await Attempts.countDocuments({ delivery_id: orphan })).toBe(0);
    expect(await Attempts.countDocuments({ delivery_id: pendingRow._id })).toBe(1);
    expect(await Attempts.countDocuments({ delivery_id: young })).toBe(1);
    // Each gone row's history deleted by its delivery_id, never a $in.
    for (const q of filtersOn(first.seen, 'delivery_attempts', 'delete')) expect(typeof q.delivery_id, JSON.stringify(q)).toBe('string');

    // Made to its end: the next pass reads no attempt but by its row (an orphan made now stays).
    const later = `${randomUUID()}.dictation`;
    await Attempts.insertOne(attempt(later, 40 * DAY));
    const second = await watchCommands(api.env.MONGO_URL!, (models) => purgeExpired(models, { retentionMs: workerOptionsFromEnv({}).deliveryRetentionMs }));
    expect(second.result.orphanedAttempts).toBe(0);
    expect(filtersOn(second.seen, 'delivery_attempts', 'find')).toEqual([]);
    expect(await Attempts.countDocuments({ delivery_id: later })).toBe(1);
    await Attempts.deleteMany({ delivery_id: { $in: [later, young, pendingRow._id] } });
    await Delivery.deleteOne({ _id: pendingRow._id });
  });

  it('the attempts index on `at` alone that earlier versions made (read by nothing) is dropped at start', async () => {
    const attempts = api.models.DeliveryAttempt.collection;
    await attempts.createIndex({ at: 1 }, { name: 'at_1' });
    await ensureIndexes(api.models);
    const names = (await attempts.indexes()).map((i) => i.name);
    expect(names).not.toContain('at_1');
    expect(names).toContain('delivery_id_1_at_1');
  });

  it('runs one pass at a time across processes: while another holds the lock, this one deletes nothing', async () => {
    const Delivery = collectionOf(api.models.Delivery);
    const stale = row('delivered', 40 * DAY);
    await Delivery.insertOne(stale);
    const redis = worker.deps.queueRedis;
    const key = purgeLockKey(api.env.QUEUE_PREFIX!);
    expect(await redis.set(key, 'another-worker', 'PX', 60_000, 'NX')).toBe('OK');
    try {
      expect(await worker.worker.purge.runOnce()).toBeUndefined();
      expect(await Delivery.countDocuments({ _id: stale._id })).toBe(1);
    } finally {
      await redis.del(key);
    }
    expect(await worker.worker.purge.runOnce()).toMatchObject({ deliveries: 1 });
    expect(await Delivery.countDocuments({ _id: stale._id })).toBe(0);
    // Released by its holder: nothing left behind.
    expect(await redis.exists(key)).toBe(0);
  });
});

describe(`Used assertion ids (database: ${inject('mongoKind')})`, () => {
  let clinic: TestClient;
  beforeAll(async () => {
    clinic = await registerTestClient(api.models);
  });

  async function tokenWith(assertion: string) {
    return http(api.tokenUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ grant_type: 'client_credentials', client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: assertion }),
    });
  }

  it('are kept an hour past exp, then purged, while an unexpired one stays and its replay is still refused', async () => {
    const assertion = await signAssertion(clinic.client._id, clinic.privateKey, api.audience);
    expect((await tokenWith(assertion)).status).toBe(200);
    expect((await tokenWith(assertion)).status).toBe(401);
    const Used = collectionOf(api.models.UsedAssertion);
    const { jti, exp } = JSON.parse(Buffer.from(assertion.split('.')[1]!, 'base64url').toString()) as { jti: string; exp: number };
    const kept = `${clinic.client._id}:${jti}`;
    // Its guard row outlives it by an hour: an API whose clock is behind the database's (which the
    // purge goes by) still takes the assertion as unexpired a while (a clock audit replayed one after
    // a purge by a worker 5 minutes ahead, when rows went at exp + 30 s).
    expect((await Used.findOne({ _id: kept }))!.expires_at.getTime()).toBe((exp + 30) * 1000 + USED_ASSERTION_KEPT_MS);
    // Two more used assertions, then their rows' expiry set back into the past.
    expect((await requestToken(api, clinic)).status).toBe(200);
    expect((await requestToken(api, clinic)).status).toBe(200);
    const mine = await Used.find({ _id: { $regex: `^${clinic.client._id}:` } }).toArray();
    expect(mine).toHaveLength(3);
    const expired = mine.filter((u) => u._id !== kept).map((u) => u._id);
    await Used.updateMany({ _id: { $in: expired } }, { $set: { expires_at: new Date(Date.now() - 1000) } });

    const result = await worker.worker.purge.runOnce();
    expect(result!.assertions).toBeGreaterThanOrEqual(2);
    expect((await Used.find({ _id: { $in: [...expired, kept] } }).toArray()).map((u) => u._id)).toEqual([kept]);
    // Still within its exp: the guard row is there and the replay is refused.
    expect((await tokenWith(assertion)).status).toBe(401);
  });
});
