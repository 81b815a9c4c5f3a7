import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger, OutboxRelay, outboxSlotOf, SWEEP_CURSOR_ID, SWEEP_GRACE_MS, type ProviderUserDoc } from '@connect/shared';
import { startOutboxSweep } from '@connect/worker';
import { getToken, LogCapture, postUser, registerTestClient, startTestApi, type TestApi } from '../support/harness.ts';
import type { CommandStartedEvent } from 'mongodb';
import { filtersOn, watchCommands } from '../support/watched-commands.ts';
import { eventually, sleep } from './callback-receiver.ts';

/**
 * The outbox sweep (docs/delivery.md), on its own: it publishes what the relay missed, moves its
 * cursor only past slots that ended before the safety lag, does not re-read the same users in a
 * tight loop while the cursor cannot move (every user younger than the lag, writes still coming
 * in), and works through a backlog of days in passes back to back, jumping over empty stretches.
 */

let api: TestApi;
const ids: string[] = [];
const silent = createLogger('silent', 'sweep-test');

beforeAll(async () => {
  api = await startTestApi({ label: 'outbox_sweep' });
  const client = await registerTestClient(api.models);
  const token = await getToken(api, client);
  for (let i = 0; i < 6; i++) {
    const id = `sweep-${i}-${Date.now()}`;
    ids.push(id);
    expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
  }
  await api.deps.relay.drain();
});

afterAll(async () => {
  await api?.close();
});

const relayAt = (offsetMs: number) => new OutboxRelay({ models: api.models, queue: api.deps.queue, log: silent, now: () => new Date(Date.now() + offsetMs) });
const cursor = () => api.models.RelayCursor.findById(SWEEP_CURSOR_ID).lean();

describe('outbox sweep', () => {
  it('with every user inside the safety lag: reads their slots, publishes nothing twice, leaves the cursor, and does not spin', async () => {
    await api.models.RelayCursor.deleteMany({});
    const first = await relayAt(0).sweep(ids.length);
    expect(first).toMatchObject({ published: 0, failed: false, passedAll: false, more: false });
    expect(first.scanned).toBeGreaterThanOrEqual(ids.length);
    expect(await cursor()).toBeNull();
    // Slots are read whole: asked for one user, a pass reads every user of the oldest slot. (The six
    // were written within a second or two, in one slot or across a 10 s boundary into two.)
    const users = await api.models.ProviderUser.find({ external_provider_id: { $in: ids } }).lean<ProviderUserDoc[]>();
    const oldestSlot = Math.min(...users.map((u) => u.outbox_slot));
    expect((await relayAt(0).sweep(1)).scanned).toBe(users.filter((u) => u.outbox_slot === oldestSlot).length);
    expect(await cursor()).toBeNull();

    // A pass it cannot carry to the end must wait for the interval, not run again at once.
    let passes = 0;
    const relay = relayAt(0);
    const counting = { sweep: (n: number) => (passes++, relay.sweep(n)), backfillSlots: (n: number) => relay.backfillSlots(n) } as unknown as OutboxRelay;
    const sweep = startOutboxSweep(counting, silent, 200, 2);
    await sleep(1000);
    await sweep.stop();
    console.log(`[outbox sweep] ${passes} passes in 1 s at a 200 ms interval with every user inside the lag`);
    expect(passes).toBeGreaterThanOrEqual(2);
    expect(passes).toBeLessThanOrEqual(8);
    expect(await cursor()).toBeNull();
  });

  it('leaves an event younger than SWEEP_GRACE_MS to the API (read between its write and its enqueue, it would be fanned out twice), and publishes it once older', async () => {
    await api.models.RelayCursor.deleteMany({});
    const client = await registerTestClient(api.models);
    const id = `sweep-young-${Date.now()}`;
    expect((await postUser(api, await getToken(api, client), { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
    await api.deps.relay.drain();
    const young = (await api.models.ProviderUser.findOne({ external_provider_id: id }).lean<ProviderUserDoc>())!;
    // As between the write and the API's enqueue: no job yet.
    await (await api.deps.queue.getJob(young.last_event.id))!.remove();
    const writtenAt = young.last_event.occurred_at.getTime();
    const sweepAt = (ms: number) => new OutboxRelay({ models: api.models, queue: api.deps.queue, log: silent, now: () => new Date(ms) }).sweep(500);

    const within = await sweepAt(writtenAt + SWEEP_GRACE_MS - 1000);
    expect(within.scanned).toBeGreaterThanOrEqual(1);
    expect(await api.deps.relay.publishedAmong([young.last_event.id])).toEqual(new Set());
    const after = await sweepAt(writtenAt + SWEEP_GRACE_MS + 1000);
    expect(after.published).toBeGreaterThanOrEqual(1);
    expect(await api.deps.relay.publishedAmong([young.last_event.id])).toEqual(new Set([young.last_event.id]));
  });

  it('past the lag: republishes an event whose job is gone, and moves the cursor over the settled slots', async () => {
    await api.models.RelayCursor.deleteMany({});
    const victim = (await api.models.ProviderUser.findOne({ external_provider_id: ids[3] }).lean<ProviderUserDoc>())!;
    expect(victim.outbox_slot).toBe(outboxSlotOf(victim.updated_at));
    // As if Redis had lost it: the job is the only record that the event was published.
    await (await api.deps.queue.getJob(victim.last_event.id))!.remove();
    expect(await api.deps.relay.publishedAmong([victim.last_event.id])).toEqual(new Set());

    // A clock stopped a minute ahead: the expected cursor is computed from the same instant the
    // sweep saw (read apart, a 10 s slot boundary between them made this fail by one slot).
    const at = Date.now() + 60_000;
    const later = new OutboxRelay({ models: api.models, queue: api.deps.queue, log: silent, now: () => new Date(at) });
    const pass = await later.sweep(500);
    expect(pass).toMatchObject({ published: 1, failed: false });
    expect(pass.scanned).toBeGreaterThanOrEqual(ids.length);
    // Every slot up to the one that ended before now + 60 s - 30 s is passed, the victim's included.
    expect((await cursor())?.slot_done).toBe(outboxSlotOf(at - 30_000) - 1);
    expect((await api.deps.queue.getJob(victim.last_event.id))?.data.event.id).toBe(victim.last_event.id);
    expect(await api.deps.relay.publishedAmong([victim.last_event.id, 'never-published'])).toEqual(new Set([victim.last_event.id]));
  });

  it('a cursor ahead of the clock (moved by a clock that ran a month ahead, set right since): it warns, reads the last hour again, and publishes an event written since in a slot it had passed (a clock audit found such events never published)', async () => {
    // A clock stopped a minute ahead, as in the test above: the users are past the grace and the lag.
    const now = Date.now() + 60_000;
    const ahead = outboxSlotOf(now + 31 * 24 * 3600_000);
    await api.models.RelayCursor.updateOne({ _id: SWEEP_CURSOR_ID }, { $set: { slot_done: ahead } }, { upsert: true });
    const victim = (await api.models.ProviderUser.findOne({ external_provider_id: ids[2] }).lean<ProviderUserDoc>())!;
    await api.deps.queue.getJob(victim.last_event.id).then((job) => job?.remove());
    expect(await api.deps.relay.publishedAmong([victim.last_event.id])).toEqual(new Set());

    const logs = new LogCapture();
    const relay = new OutboxRelay({ models: api.models, queue: api.deps.queue, log: createLogger('debug', 'sweep-test', logs), now: () => new Date(now) });
    const pass = await relay.sweep(500);
    expect(pass).toMatchObject({ failed: false });
    expect((await api.deps.queue.getJob(victim.last_event.id))?.data.event.id).toBe(victim.last_event.id);
    const warned = logs.lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => String(l.msg).startsWith('the outbox sweep had passed slots that have not ended'));
    expect(warned).toEqual([expect.objectContaining({ level: 40, slot_done: ahead, rewound_to: outboxSlotOf(now - 3600_000) - 1 })]);
    // Back where the clock says: the slots that have settled, not a month ahead.
    expect((await cursor())?.slot_done).toBe(outboxSlotOf(now - 30_000) - 1);
    // The next pass has nothing to say about it.
    await relay.sweep(500);
    expect(logs.lines.filter((l) => l.includes('the outbox sweep had passed slots'))).toHaveLength(1);
  });

  it('a backlog of settled slots (a worker down for days): passes back to back, jumps over empty stretches, and publishes what is behind them', async () => {
    // The cursor three days back: 25,920 slots to cover, nearly all empty. One user's unpublished
    // write sits two hours back (its slot set directly, as if written then), the rest are recent.
    const now = Date.now();
    await api.models.RelayCursor.updateOne({ _id: SWEEP_CURSOR_ID }, { $set: { slot_done: outboxSlotOf(now - 3 * 24 * 3600_000) } }, { upsert: true });
    const old = (await api.models.ProviderUser.findOne({ external_provider_id: ids[4] }).lean<ProviderUserDoc>())!;
    await api.models.ProviderUser.updateOne({ _id: old._id }, { $set: { outbox_slot: outboxSlotOf(now - 2 * 3600_000) } });
    const recent = (await api.models.ProviderUser.findOne({ external_provider_id: ids[5] }).lean<ProviderUserDoc>())!;
    for (const user of [old, recent]) await (await api.deps.queue.getJob(user.last_event.id))!.remove();

    let passes = 0;
    // A clock stopped a minute ahead, as in the test above: with a running clock the last pass's
    // end could fall after a 10 s slot boundary, leaving the cursor one slot short of an expectation
    // read later, with the next pass a 60 s interval away (fresh-clone CI failed so, by two slots).
    const at = now + 60_000;
    const later = new OutboxRelay({ models: api.models, queue: api.deps.queue, log: silent, now: () => new Date(at) });
    const counting = { sweep: (n: number) => (passes++, later.sweep(n)), backfillSlots: (n: number) => later.backfillSlots(n) } as unknown as OutboxRelay;
    // Batches of one user and a 60 s interval: only passes that run back to back reach the end within the test.
    const sweep = startOutboxSweep(counting, silent, 60_000, 1);
    await eventually(async () => expect((await cursor())?.slot_done).toBe(outboxSlotOf(at - 30_000) - 1), 20_000);
    await sweep.stop();
    console.log(`[outbox sweep] 3 days of slots covered in ${passes} passes`);
    // At least: up to the two-hour-old user, then on to the recent ones. Not one pass per hour of slots (72).
    expect(passes).toBeGreaterThanOrEqual(2);
    expect(passes).toBeLessThan(20);
    for (const user of [old, recent]) expect((await api.deps.queue.getJob(user.last_event.id))?.data.event.id).toBe(user.last_event.id);
  });

  it('runs the slot backfill on its first pass, and again only while the last run found users without a slot', async () => {
    const calls = { sweep: 0, backfill: 0 };
    let found = 2;
    const stub = {
      sweep: async () => (calls.sweep++, { scanned: 0, published: 0, failed: false, passedAll: false, more: false }),
      backfillSlots: async () => (calls.backfill++, { backfilled: found > 0 ? found-- : 0, toSweep: 0 }),
    } as unknown as OutboxRelay;
    // A backfill interval of 0: every pass would run it, were it not for the stop after an empty run.
    const sweep = startOutboxSweep(stub, silent, 20, 10, 0);
    await eventually(async () => expect(calls.sweep).toBeGreaterThanOrEqual(8), 5_000);
    await sweep.stop();
    // It found 2, then 1, then none: three runs, and none in the five or more passes after.
    expect(calls.backfill).toBe(3);
  });

  it('users written without a slot (by an earlier version): the worker gives each one, and publishes the event that never reached the queue', async () => {
    const token = await getToken(api, await registerTestClient(api.models));
    const stamp = Date.now();
    const [lost, safe, old] = [`legacy-lost-${stamp}`, `legacy-safe-${stamp}`, `legacy-old-${stamp}`];
    for (const id of [lost, safe, old]) expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
    await api.deps.relay.drain();
    // As an earlier version left them: no outbox_slot. "lost": its job is gone (Redis lost it before the
    // upgrade). "safe": its job is there. "old": written an hour ago, before the earlier version's sweep
    // cursor (which stored the updated_at of the last user it passed), its job long trimmed.
    const users = api.models.ProviderUser.collection;
    await users.updateMany({ external_provider_id: { $in: [lost, safe, old] } }, { $unset: { outbox_slot: '' } });
    await users.updateOne({ external_provider_id: old }, { $set: { updated_at: new Date(stamp - 3600_000) } });
    const read = async (id: string) => (await api.models.ProviderUser.findOne({ external_provider_id: id }).lean<ProviderUserDoc>())!;
    const [lostUser, safeUser, oldUser] = [await read(lost), await read(safe), await read(old)];
    expect(lostUser.outbox_slot).toBeUndefined();
    for (const u of [lostUser, oldUser]) await (await api.deps.queue.getJob(u.last_event.id))!.remove();
    const later = relayAt(60_000);
    await api.models.RelayCursor.collection.updateOne(
      { _id: SWEEP_CURSOR_ID as never },
      { $set: { updated_at: new Date(stamp - 1800_000), slot_done: outboxSlotOf(Date.now() + 60_000 - 30_000) - 1 } },
      { upsert: true },
    );

    // The sweep alone never finds them: they are in no slot.
    expect(await later.sweep(500)).toMatchObject({ failed: false });
    expect(await api.deps.queue.getJob(lostUser.last_event.id)).toBeUndefined();

    // The worker's sweep loop gives them a slot on its first pass, then publishes the lost event.
    const sweep = startOutboxSweep(later, silent, 200, 500);
    await eventually(async () => expect((await api.deps.queue.getJob(lostUser.last_event.id))?.data.event.id).toBe(lostUser.last_event.id), 20_000);
    await sweep.stop();
    const [lostAfter, safeAfter, oldAfter] = [await read(lost), await read(safe), await read(old)];
    // The unpublished one got a slot of "now" (+60 s here), which no pass could have passed before;
    // the published ones their own slots, behind the cursor, so they are not read again: "old" is
    // taken as published (the earlier sweep passed it) and not published a second time.
    expect(lostAfter.outbox_slot).toBeGreaterThan(outboxSlotOf(lostUser.updated_at));
    expect(safeAfter.outbox_slot).toBe(outboxSlotOf(safeUser.updated_at));
    expect(oldAfter.outbox_slot).toBe(outboxSlotOf(oldUser.updated_at));
    expect(await api.deps.queue.getJob(oldUser.last_event.id)).toBeUndefined();
    expect(await api.models.ProviderUser.countDocuments({ outbox_slot: null })).toBe(0);
    // Nothing else changed in any of them.
    for (const [before, after] of [[lostUser, lostAfter], [safeUser, safeAfter], [oldUser, oldAfter]] as const) expect({ ...after, outbox_slot: undefined }).toEqual({ ...before, outbox_slot: undefined });
  });

  it('the unpublished count with the cursor a day behind (workers stopped): its seeks over empty stretches are made once and reused by the counts that follow, which still see a later write', async () => {
    const now = Date.now();
    await api.models.RelayCursor.updateOne({ _id: SWEEP_CURSOR_ID }, { $set: { slot_done: outboxSlotOf(now - 24 * 3600_000) } }, { upsert: true });
    const seeksIn = (seen: CommandStartedEvent[]) =>
      filtersOn(seen, api.models.ProviderUser.collection.collectionName, 'find').filter((f) => typeof f.outbox_slot === 'object' && f.outbox_slot !== null && '$gte' in f.outbox_slot);
    const fresh = () => new OutboxRelay({ models: api.models, queue: api.deps.queue, log: silent }).unpublishedCount();

    const { result, seen } = await watchCommands(api.env.MONGO_URL!, async (models) => {
      const relay = new OutboxRelay({ models, queue: api.deps.queue, log: silent });
      const counts = [await relay.unpublishedCount()];
      // A command that marks where the first count's commands end.
      await models.RelayCursor.collection.findOne({ _id: 'first-count-done' as never });
      counts.push(await relay.unpublishedCount());
      // A write after the seeks, its job gone: in a slot no kept seek covers (not settled then).
      const token = await getToken(api, await registerTestClient(api.models));
      const id = `sweep-count-${Date.now()}`;
      expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
      await api.deps.relay.drain();
      const written = (await api.models.ProviderUser.findOne({ external_provider_id: id }).lean<ProviderUserDoc>())!;
      await (await api.deps.queue.getJob(written.last_event.id))!.remove();
      counts.push(await relay.unpublishedCount());
      return counts;
    });
    const firstDone = seen.findIndex((e) => e.commandName === 'find' && (e.command.filter as { _id?: unknown })?._id === 'first-count-done');
    expect(firstDone).toBeGreaterThan(0);
    // The first count sought at least once (a day of slots, nearly all empty); the later ones never.
    expect(seeksIn(seen.slice(0, firstDone)).length).toBeGreaterThanOrEqual(1);
    expect(seeksIn(seen.slice(firstDone))).toEqual([]);
    // And their answers are those of a count that kept nothing: the same before the write, one more after.
    expect(result[1]).toEqual(result[0]);
    expect(result[2]).toEqual({ count: result[0]!.count + 1, capped: false });
    expect(result[2]).toEqual(await fresh());
  });
});
