/**
 * Two of the delivery processor's outcome writes (the sync state, the attempt) are shared by
 * the deliveries that finish at the same time: one bulkWrite per collection per batch. The
 * Delivery row is written alone, because the fan-out inserts it at the same time
 * (docs/delivery.md, "Batched writes"). Real FerretDB (or the MONGO_URL given); the commands
 * are observed with the driver's command monitoring, not mocked.
 */
import { randomUUID } from 'node:crypto';
import mongoose, { Types } from 'mongoose';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { CommandStartedEvent, CommandSucceededEvent } from 'mongodb';
import { bulkWriteEach, collectionsOf, createModels, DeliveryStore, ensureIndexes, mongoConnectionOptions, syncStateIdOf, type DeliveryRef, type Models } from '@connect/shared';
import { databaseUrl } from '../support/harness.ts';

let conn: mongoose.Connection;
let models: Models;
const started: CommandStartedEvent[] = [];
const succeeded: CommandSucceededEvent[] = [];

beforeAll(async () => {
  const url = new URL(databaseUrl('store_writes'));
  url.searchParams.set('monitorCommands', 'true');
  // The worker's own pool (20): FerretDB can deadlock with many more writes in flight (models.ts).
  conn = await mongoose.createConnection(url.toString(), mongoConnectionOptions(url.toString())).asPromise();
  models = createModels(conn);
  await ensureIndexes(models);
  conn.getClient().on('commandStarted', (e) => started.push(e));
  conn.getClient().on('commandSucceeded', (e) => succeeded.push(e));
});
afterAll(async () => {
  await conn?.close();
});

function refOf(n: number): DeliveryRef {
  const userId = new Types.ObjectId().toString();
  const event = {
    id: randomUUID(),
    type: 'user.created' as const,
    occurred_at: new Date().toISOString(),
    version: 1,
    organization_id: 'org-store-writes',
    data: { external_provider_id: `ext-${n}` },
  } as unknown as DeliveryRef['event'];
  return { event, target: 'dictation', userId };
}

/** Update replies since `from` (an index into `succeeded`) that carried a duplicate-key write error: upserts that lost a race to an insert. */
const duplicateKeyErrorsSince = (from: number) =>
  succeeded
    .slice(from)
    .filter((e) => e.commandName === 'update')
    .flatMap((e) => (e.reply as { writeErrors?: { code: number }[] }).writeErrors ?? [])
    .filter((w) => w.code === 11000).length;

/** The commands of one kind ("update", "insert") sent to one collection since `from`. */
const commandsOn = (name: string, collection: string, from = 0) => started.slice(from).filter((e) => e.commandName === name && e.command[name] === collection);

describe('DeliveryStore: outcome writes of deliveries finishing together', () => {
  it('twenty outcomes at once are one update of the sync states and one insert of the attempts (and one update per row), and each is stored', async () => {
    const refs = Array.from({ length: 20 }, (_, i) => refOf(i));
    const store = new DeliveryStore(models);
    const from = started.length;
    await Promise.all(
      refs.map(async (ref, i) => {
        await Promise.all([
          store.delivered(ref, 200, 1),
          store.recordSync({ userId: ref.userId, target: ref.target, organizationId: ref.event.organization_id }, { status: 'delivered', version: 1, attempts: 1, last_attempt_at: new Date(), last_error: null }, { sent: 1, delivered: 1 }, null),
          store.recordAttempt({ deliveryId: `${ref.event.id}.dictation`, target: 'dictation', at: new Date(), durationMs: i, statusCode: 200, errorClass: null, message: null, outcome: 'delivered', probe: false }),
        ]);
      }),
    );
    expect(commandsOn('update', 'deliveries', from)).toHaveLength(20);
    expect(commandsOn('update', 'sync_states', from)).toHaveLength(1);
    expect(commandsOn('insert', 'delivery_attempts', from)).toHaveLength(1);

    const { deliveries, syncStates, deliveryAttempts } = collectionsOf(models);
    for (const ref of refs) {
      const row = await deliveries.findOne({ _id: `${ref.event.id}.dictation` });
      expect(row).toMatchObject({ status: 'delivered', attempts: 1, last_status_code: 200, version: 1, external_provider_id: ref.event.data.external_provider_id });
      expect(await syncStates.findOne({ _id: syncStateIdOf(ref.userId, 'dictation') })).toMatchObject({ status: 'delivered', delivered_version: 1 });
      expect(await deliveryAttempts.countDocuments({ delivery_id: `${ref.event.id}.dictation` })).toBe(1);
    }
  });

  it('a sync state write applies only while the row is as its run read it: a forced resync\'s forget made after the read stands', async () => {
    const store = new DeliveryStore(models);
    const ref = refOf(3000);
    const sync = { userId: ref.userId, target: ref.target, organizationId: ref.event.organization_id };
    const outcome = (version: number) => [{ status: 'delivered' as const, version, attempts: 1, last_attempt_at: new Date(), last_error: null }, { sent: version, delivered: version }] as const;
    const row = () => store.readSync(ref.userId, ref.target);
    // No row yet: the first write makes it.
    await store.recordSync(sync, ...outcome(1), null);
    const read = await row();
    expect(read).toMatchObject({ delivered_version: 1, sent_version: 1 });
    expect(read).not.toHaveProperty('forgets');
    // A run that read it (never forgotten) writes it.
    await store.recordSync(sync, ...outcome(2), read);
    expect(await row()).toMatchObject({ delivered_version: 2, sent_version: 2 });
    // Forgotten after that run read it: the run's write is dropped, the forget stands.
    await store.forgetWhatWasSent([ref.userId], ref.target);
    await store.recordSync(sync, ...outcome(3), read);
    expect(await row()).toMatchObject({ delivered_version: 0, sent_version: 0, forgets: 1 });
    // A run that read it after the forget writes it.
    await store.recordSync(sync, ...outcome(3), await row());
    expect(await row()).toMatchObject({ delivered_version: 3, sent_version: 3, forgets: 1 });
  });

  it('an outcome written while the fan-out inserts the same pending row is never lost, never overwritten by pending, and never stalls the database', async () => {
    const store = new DeliveryStore(models);
    const refs = Array.from({ length: 200 }, (_, i) => refOf(1000 + i));
    const from = succeeded.length;
    await Promise.all(refs.map((ref) => Promise.all([store.insertPending([store.pendingRow(ref)]), store.delivered(ref, 200, 1)])));
    const rows = await collectionsOf(models)
      .deliveries.find({ _id: { $in: refs.map((r) => `${r.event.id}.dictation`) } })
      .toArray();
    expect(rows).toHaveLength(200);
    expect(rows.filter((r) => r.status !== 'delivered')).toEqual([]);
    // A stall fails this test at its timeout. How often the upsert lost the race to the insert and was
    // applied again (DeliveryStore's retry on a duplicate key): the duplicate-key errors in the replies
    // to the row updates. Printed, not asserted: it depends on timing.
    const lost = duplicateKeyErrorsSince(from);
    console.log(`delivery-store-writes: ${lost} of 200 outcome upserts lost the race to the pending insert and were applied again (${inject('mongoKind')})`);
  });

  it('a row marked superseded while the fan-out inserts it pending ends superseded (it stayed pending, until the retention pass mended it, when the insert landed between the upsert\'s read and its insert)', async () => {
    const store = new DeliveryStore(models);
    const refs = Array.from({ length: 300 }, (_, i) => refOf(2000 + i));
    const from = succeeded.length;
    await Promise.all(refs.map((ref) => Promise.all([store.insertPending([store.pendingRow(ref)]), store.overtaken(ref)])));
    const rows = await collectionsOf(models)
      .deliveries.find({ _id: { $in: refs.map((r) => `${r.event.id}.dictation`) } })
      .toArray();
    expect(rows).toHaveLength(300);
    expect(rows.filter((r) => r.status !== 'superseded').map((r) => `${r._id}: ${r.status}`)).toEqual([]);
    const lost = duplicateKeyErrorsSince(from);
    console.log(`delivery-store-writes: ${lost} of 300 superseded upserts lost the race to the pending insert (${inject('mongoKind')})`);

    // A delivered row stays delivered: the refused insert is not taken for a row to settle.
    const done = refOf(3000);
    await store.delivered(done, 200, 1);
    await store.overtaken(done);
    expect(await collectionsOf(models).deliveries.findOne({ _id: `${done.event.id}.dictation` })).toMatchObject({ status: 'delivered' });
  });
});

describe('bulkWriteEach', () => {
  it("fails only the operation that was refused, with the server's code, and applies the others", async () => {
    const things = conn.getClient().db().collection<{ _id: string; n: number }>(`things_${randomUUID().slice(0, 8)}`);
    await things.insertOne({ _id: 'taken', n: 0 });
    const outcomes = await bulkWriteEach(things, [
      { insertOne: { document: { _id: 'a', n: 1 } } },
      { insertOne: { document: { _id: 'taken', n: 2 } } },
      { updateOne: { filter: { _id: 'b' }, update: { $set: { n: 3 } }, upsert: true } },
    ]);
    expect(outcomes[0]).toBeUndefined();
    expect(outcomes[1]).toMatchObject({ code: 11000 });
    expect(outcomes[2]).toBeUndefined();
    expect(await things.find().sort({ _id: 1 }).toArray()).toEqual([
      { _id: 'a', n: 1 },
      { _id: 'b', n: 3 },
      { _id: 'taken', n: 0 },
    ]);
  });

  it("throws an error that is not one operation's write error (here the driver refuses the batch before sending it), and applies nothing", async () => {
    const things = conn.getClient().db().collection<{ _id: string; n: number }>(`things_${randomUUID().slice(0, 8)}`);
    const from = started.length;
    // An update without operators: the driver refuses the whole bulkWrite, no operation is sent.
    await expect(
      bulkWriteEach(things, [{ insertOne: { document: { _id: 'a', n: 1 } } }, { updateOne: { filter: { _id: 'b' }, update: { n: 2 } as never } }]),
    ).rejects.toThrow(/atomic operators/);
    expect(commandsOn('insert', things.collectionName, from)).toHaveLength(0);
  });

  it('when the second bulkWrite (the upserts applied again) fails as a whole, only those upserts fail: the first bulkWrite stands', async () => {
    const things = conn.getClient().db().collection<{ _id: string; n: number }>(`things_${randomUUID().slice(0, 8)}`);
    await things.insertOne({ _id: 'x', n: 0 });
    // Fault injection on a real collection: its first bulkWrite goes to the server, the second fails as a dropped connection would.
    let calls = 0;
    const failingSecond = new Proxy(things, {
      get(target, prop, receiver) {
        if (prop !== 'bulkWrite') return Reflect.get(target, prop, receiver) as unknown;
        return (...args: Parameters<typeof things.bulkWrite>) => (++calls === 1 ? target.bulkWrite(...args) : Promise.reject(new Error('connection closed')));
      },
    });
    const outcomes = await bulkWriteEach(failingSecond, [{ updateOne: { filter: { _id: 'x', n: 99 }, update: { $set: { n: 1 } }, upsert: true } }, { insertOne: { document: { _id: 'y', n: 2 } } }]);
    expect(calls).toBe(2);
    expect(outcomes[0]).toMatchObject({ message: 'connection closed' });
    expect(outcomes[1]).toBeUndefined();
    expect(await things.findOne({ _id: 'y' })).toEqual({ _id: 'y', n: 2 });
  });

  it('applies an upsert that met a duplicate key once more, and reports the error if it meets it again', async () => {
    const things = conn.getClient().db().collection<{ _id: string; n: number }>(`things_${randomUUID().slice(0, 8)}`);
    await things.insertOne({ _id: 'x', n: 0 });
    const from = started.length;
    // The filter does not match the stored 'x', so the upsert inserts 'x' again: a duplicate key, twice.
    const outcomes = await bulkWriteEach(things, [{ updateOne: { filter: { _id: 'x', n: 99 }, update: { $set: { n: 1 } }, upsert: true } }, { insertOne: { document: { _id: 'y', n: 2 } } }]);
    expect(outcomes[0]).toMatchObject({ code: 11000 });
    expect(outcomes[1]).toBeUndefined();
    const updates = commandsOn('update', things.collectionName, from);
    expect(updates).toHaveLength(2);
    expect(commandsOn('insert', things.collectionName, from)).toHaveLength(1);
  });
});
