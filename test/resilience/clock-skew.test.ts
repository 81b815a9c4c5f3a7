import { randomUUID } from 'node:crypto';
import { Types } from 'mongoose';
import { afterAll, beforeAll, describe, expect, inject, it, vi } from 'vitest';
import { collectionsOf, outboxSlotOf, SWEEP_CURSOR_ID, type DeliveryDoc } from '@connect/shared';
import { startPrivateRedis, type RunningService } from '@connect/local-services';
import { startDeliveryStack, target, type DeliveryStack } from '../support/delivery-stack.ts';
import { http, postUser } from '../support/harness.ts';
import { eventually, startReceiver, type Receiver } from '../worker/callback-receiver.ts';

vi.setConfig({ testTimeout: 90_000 });

/**
 * Machines whose clocks disagree (docs/guarantees.md, Clocks), as a clock audit ran them under
 * libfaketime: a worker whose clock is 5 minutes ahead, an API whose clock is 2 minutes behind.
 * Here each process's own clock is skewed through the reference clock's `local` (what it would
 * read from the machine); the database's clock is the real one. Before, the worker's sweep cursor
 * ran 5 minutes ahead and the API dated its writes 2 minutes back, so an event the API could not
 * hand to Redis fell in a slot the sweep had passed, and was never published; and the retention
 * purge went by the worker's clock.
 */

const WORKER_AHEAD_MS = 5 * 60_000;
const API_BEHIND_MS = 2 * 60_000;
const RETENTION_MS = 3 * 60_000;

let receiver: Receiver;
let apiRedis: RunningService;
let stack: DeliveryStack;

beforeAll(async () => {
  receiver = await startReceiver();
  // The API's own Redis, stopped once the API is up: no event of the API's reaches the worker's queue.
  apiRedis = await startPrivateRedis();
  stack = await startDeliveryStack({
    label: 'clock_skew',
    targets: [target('dictation', receiver.url)],
    api: { env: { REDIS_URL: apiRedis.url }, clock: { local: () => Date.now() - API_BEHIND_MS } },
    workerEnv: { REDIS_URL: inject('redisUrl') },
    worker: { clock: { local: () => Date.now() + WORKER_AHEAD_MS }, deliveryRetentionMs: RETENTION_MS, purgeIntervalMs: 3_600_000 },
  });
  await apiRedis.stop();
});

afterAll(async () => {
  await stack?.close();
  await receiver?.close();
});

describe('clocks apart: writes, the outbox sweep and the retention purge go by the database clock', () => {
  it("an API 2 minutes behind whose event cannot reach Redis, a worker 5 minutes ahead: the write is dated by the database's clock, the sweep publishes its event, and it is delivered", async () => {
    const { api, worker, token } = stack;
    // The sweep's cursor a minute back, as a running deployment has it; the worker's next pass moves it
    // to the last settled slot by its clock (with the machine's clock, 5 minutes ahead: a 4.5 minute lead).
    const start = outboxSlotOf(Date.now() - 60_000);
    await api.models.RelayCursor.updateOne({ _id: SWEEP_CURSOR_ID }, { $set: { slot_done: start } }, { upsert: true });
    await eventually(async () => expect((await api.models.RelayCursor.findById(SWEEP_CURSOR_ID).lean())!.slot_done).toBeGreaterThan(start), 20_000);
    const id = `clock-${randomUUID()}`;
    const before = Date.now();
    const res = await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id });
    expect(res.status).toBe(201);
    const stored = (await api.models.ProviderUser.findOne({ external_provider_id: id }).lean())!;
    // Dated by the database's clock (the real one here), not 2 minutes back.
    expect(stored.updated_at.getTime()).toBeGreaterThanOrEqual(before - 2000);
    expect(stored.updated_at.getTime()).toBeLessThanOrEqual(Date.now() + 2000);
    expect(stored.outbox_slot).toBe(outboxSlotOf(stored.updated_at));

    await eventually(() => expect(receiver.accepted().map((c) => c.body?.data?.user?.external_provider_id)).toContain(id), 60_000);
    // The cursor follows the database's clock: not 5 minutes ahead.
    const cursor = await api.models.RelayCursor.findById(SWEEP_CURSOR_ID).lean();
    expect(cursor!.slot_done!).toBeLessThanOrEqual(outboxSlotOf(Date.now()));
    expect(worker.logs.text).toContain('outbox sweep published events');
  });

  it('each process says its clock is apart from the database clock, at warn, and exports the offset as connect_clock_offset_seconds', async () => {
    const { api, worker } = stack;
    const warning = (text: string, words: RegExp) =>
      text
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as { level: number; msg: string; clock_offset_ms?: number })
        .find((l) => words.test(l.msg));
    const workerLine = warning(worker.logs.text, /^this machine's clock is [\d.]+ s ahead of the database's/);
    expect(workerLine).toMatchObject({ level: 40 });
    expect(Math.abs(workerLine!.clock_offset_ms! + WORKER_AHEAD_MS)).toBeLessThan(2000);
    const apiLine = warning(api.logs.text, /^this machine's clock is [\d.]+ s behind the database's/);
    expect(apiLine).toMatchObject({ level: 40 });
    expect(Math.abs(apiLine!.clock_offset_ms! - API_BEHIND_MS)).toBeLessThan(2000);

    const scraped = (await http(`${api.origin}/metrics`)).text as string;
    const apiOffset = Number(/^connect_clock_offset_seconds (\S+)$/m.exec(scraped)?.[1]);
    expect(Math.abs(apiOffset - API_BEHIND_MS / 1000)).toBeLessThan(2);
    const workerMetrics = await worker.deps.metrics.registry.getSingleMetricAsString('connect_clock_offset_seconds');
    const workerOffset = Number(/^connect_clock_offset_seconds (\S+)$/m.exec(workerMetrics)?.[1]);
    expect(Math.abs(workerOffset + WORKER_AHEAD_MS / 1000)).toBeLessThan(2);
  });

  it("the retention purge of a worker 5 minutes ahead, with 3 minutes' retention: a dead letter a minute old stays, one 4 minutes old goes", async () => {
    const { api, worker } = stack;
    const { deliveries } = collectionsOf(api.models);
    const row = (ageMs: number): DeliveryDoc =>
      ({
        _id: `${randomUUID()}.dictation`,
        event_id: randomUUID(),
        event_type: 'user.updated',
        user_id: new Types.ObjectId(),
        target: 'dictation',
        status: 'failed',
        created_at: new Date(Date.now() - ageMs),
        updated_at: new Date(Date.now() - ageMs),
      }) as unknown as DeliveryDoc;
    const recent = row(60_000);
    const old = row(4 * 60_000);
    await deliveries.insertMany([recent, old]);
    await worker.worker.purge.runOnce();
    const left = (await deliveries.find({ _id: { $in: [recent._id, old._id] } }).toArray()).map((d) => d._id);
    expect(left).toEqual([recent._id]);
  });
});
