/**
 * A Redis that went back in time (an RDB snapshot restored, a failover to a replica that lagged,
 * the tail of an AOF lost) keeps a marker, so it does not look like a data loss, yet what was
 * written after the snapshot is gone.
 * - Delivery jobs: their pending Delivery rows were owed by nobody, for good, while every gauge
 *   said the backlog was 0. The retention pass gives a pending row still owed, with no job for its
 *   (user, target), its job.
 * - Events jobs not yet fanned out, in slots the sweep had passed: never published again. The
 *   marker names the last slot the sweep passed, written before the cursor moves; one naming an
 *   earlier slot than the cursor tells the worker Redis went back (redis-loss-recovery.ts).
 * Real FerretDB, Redis and HTTP receiver; what Redis lost is removed from it by hand.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collectionsOf, deliveryIdOf, outboxSlotOf, pauseTarget, resumeTarget, SWEEP_CURSOR_ID } from '@connect/shared';
import { markSwept, redisMarkerKey } from '@connect/worker';
import { startDeliveryStack, type DeliveryStack } from '../support/delivery-stack.ts';
import { postUser } from '../support/harness.ts';
import { eventually, startReceiver, type Receiver } from './callback-receiver.ts';

let stack: DeliveryStack;
let receiver: Receiver;
const warnings = () => stack.worker.logs.lines;

beforeAll(async () => {
  receiver = await startReceiver();
  stack = await startDeliveryStack({
    label: 'redis_rollback',
    targets: [{ name: 't', url: receiver.url, secrets: ['rollback-secret'], timeout_ms: 5000 }],
    worker: { purgeIntervalMs: 3_600_000 },
  });
});
afterAll(async () => {
  await stack?.close();
  await receiver?.close();
});

describe('a pending delivery whose job Redis lost without losing its marker', () => {
  it('gets its job back from the retention pass and is delivered', async () => {
    const admin = { health: stack.worker.deps.health, queues: stack.worker.deps.deliveries };
    await pauseTarget(admin, 't');
    const id = `rollback-${Date.now()}`;
    const created = await postUser(stack.api, stack.token, { provider_email: `${id}@example.com`, external_provider_id: id });
    expect(created.status).toBe(201);
    const eventId = (await stack.api.models.ProviderUser.findOne({ external_provider_id: id }).lean())!.last_event.id;
    const queue = stack.worker.deps.deliveries.get('t')!;
    // Held behind the pause: a pending row and its waiting job (the fan-out writes both at once: either may come first).
    const job = await eventually(async () => (await queue.getJob(deliveryIdOf(eventId, 't'))) ?? false);
    await eventually(async () => expect((await stack.api.models.Delivery.findById(deliveryIdOf(eventId, 't')).lean())?.status).toBe('pending'));

    // Redis goes back to before the job: it is gone, the marker stays. The row was written an hour ago.
    await job.remove();
    expect(await queue.getDeduplicationJobId(`${job.data.user_id}:t`)).toBeFalsy();
    await stack.api.models.Delivery.updateOne({ _id: deliveryIdOf(eventId, 't') }, { $set: { updated_at: new Date(Date.now() - 3_600_000) } });
    await resumeTarget(admin, 't');

    const pass = await stack.worker.worker.purge.runOnce();
    expect(pass).toMatchObject({ requeued: 1, superseded: 0 });
    await eventually(() => expect(receiver.accepted().filter((c) => c.body.data.user.external_provider_id === id).map((c) => c.body.type)).toEqual(['user.created']));
    await eventually(async () => expect((await stack.api.models.Delivery.findById(deliveryIdOf(eventId, 't')).lean())?.status).toBe('delivered'));
  }, 60_000);
});

describe('events queued after the snapshot, in slots the sweep had passed', () => {
  it('are published again: the marker names an earlier slot than the sweep cursor, so the worker sees Redis went back and rewinds the sweep', async () => {
    const { api, worker, token } = stack;
    const redis = worker.deps.queueRedis;
    const markerKey = redisMarkerKey(api.env.QUEUE_PREFIX!);
    // The sweep had passed a slot ten minutes back (Redis told first, then the cursor): the snapshot
    // is the marker as Redis held it then. (The running sweep moves both on at once: to the slots
    // settled by now, a cursor past slots that have not ended being taken back by the sweep itself.)
    const before = outboxSlotOf(Date.now() - 10 * 60_000);
    expect(await markSwept(redis, api.env.QUEUE_PREFIX!, before, undefined)).toBe(true);
    await collectionsOf(api.models).relayCursors.updateOne({ _id: SWEEP_CURSOR_ID }, { $set: { slot_done: before } }, { upsert: true });
    const snapshot = JSON.stringify({ swept: before });
    const wentBackBefore = warnings().length;

    // Events queued but not fanned out yet, dated five minutes back as far as the sweep can tell.
    await worker.worker.fanOut.pause();
    const ids = Array.from({ length: 3 }, (_, i) => `went-back-${i}-${Date.now()}`);
    for (const id of ids) expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
    const fiveMinutesAgo = new Date(Date.now() - 5 * 60_000);
    await collectionsOf(api.models).providerUsers.updateMany(
      { external_provider_id: { $in: ids } },
      { $set: { outbox_slot: before + 30, updated_at: fiveMinutesAgo, 'last_event.occurred_at': fiveMinutesAgo, 'created_event.occurred_at': fiveMinutesAgo } },
    );
    const users = await collectionsOf(api.models).providerUsers.find({ external_provider_id: { $in: ids } }).toArray();
    const eventIds = users.map((u) => u.last_event.id);
    await eventually(async () => (await Promise.all(eventIds.map((e) => worker.deps.eventsQueue.getJob(e)))).every(Boolean));
    // The sweep passes their slots, as it does once their jobs exist: Redis is told first, then the cursor moves.
    await eventually(async () => ((await collectionsOf(api.models).relayCursors.findOne({ _id: SWEEP_CURSOR_ID }))?.slot_done ?? 0) > before + 30, 20_000);
    expect(JSON.parse((await redis.get(markerKey))!).swept).toBeGreaterThan(before + 30);

    // Redis goes back to the snapshot: the jobs are gone, the marker is the old one.
    for (const e of eventIds) await worker.deps.eventsQueue.remove(e);
    await redis.set(markerKey, snapshot);
    worker.worker.fanOut.resume();

    // Before: the marker was there, so nothing ran, and the sweep never looked at these slots again.
    await eventually(() => ids.every((id) => receiver.accepted().some((c) => c.body.data.user.external_provider_id === id && c.body.type === 'user.created')), 30_000);
    const noticed = warnings().slice(wentBackBefore).find((line) => line.includes('Redis went back in time'));
    expect(JSON.parse(noticed!)).toMatchObject({ marker_swept_slot: before, sweep_from_slot: before + 1 });
    // The marker names the cursor again: the next check finds nothing to do.
    expect(await worker.worker.redisLoss.checkNow()).toBeUndefined();
  }, 60_000);
});

describe('a sweep pass never covers what the loss check has to see', () => {
  it('with the marker gone, or naming an earlier slot than the cursor, a pass neither writes the marker nor moves the cursor, and the check recovers', async () => {
    const { api, worker } = stack;
    // This test drives both by hand (it is the last in the file).
    await Promise.all([worker.worker.sweep.stop(), worker.worker.redisLoss.stop()]);
    const redis = worker.deps.queueRedis;
    const markerKey = redisMarkerKey(api.env.QUEUE_PREFIX!);
    const cursors = collectionsOf(api.models).relayCursors;
    const cursorAt = async () => (await cursors.findOne({ _id: SWEEP_CURSOR_ID }))?.slot_done;
    const marker = async () => JSON.parse((await redis.get(markerKey)) ?? 'null') as { swept: number } | null;
    // Settled slots ahead of the cursor, for a pass to move over.
    const back = outboxSlotOf(Date.now()) - 20;
    const place = async (swept: number, cursor: number) => {
      await redis.set(markerKey, JSON.stringify({ swept }));
      await cursors.updateOne({ _id: SWEEP_CURSOR_ID }, { $set: { slot_done: cursor } }, { upsert: true });
    };
    await place(back, back);
    await worker.deps.relay.sweep();
    const moved = (await cursorAt())!;
    expect(moved).toBeGreaterThan(back);
    expect(await marker()).toEqual({ swept: moved });

    // Redis lost its data: the pass does not write a marker again (it did, 0.8 s after a FLUSHALL, before the check looked).
    await place(back, back);
    await redis.del(markerKey);
    // Nor does it ask to run again at once (it would read the same slots back to back until the check recovered).
    expect(await worker.deps.relay.sweep()).toMatchObject({ passedAll: false, more: false });
    expect(await redis.get(markerKey)).toBeNull();
    expect(await cursorAt()).toBe(back);
    expect(await worker.worker.redisLoss.checkNow()).toMatchObject({ lostData: true });

    // Redis went back in time: the pass does not raise the old marker past the cursor.
    await place(back, back + 5);
    await worker.deps.relay.sweep();
    expect(await marker()).toEqual({ swept: back });
    expect(await cursorAt()).toBe(back + 5);
    expect(await worker.worker.redisLoss.checkNow()).toMatchObject({ lostData: false, wentBack: true, sweepFromSlot: back + 1 });

    // Recovered: the next pass moves both again.
    await worker.deps.relay.sweep();
    expect(await cursorAt()).toBeGreaterThan(back);
    expect((await marker())?.swept).toBe(await cursorAt());
  });
});
