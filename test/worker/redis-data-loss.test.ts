import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { collectionsOf, outboxSlotOf, SWEEP_CURSOR_ID } from '@connect/shared';
import { startPrivateRedis, type RunningService } from '@connect/local-services';
import { startDeliveryStack, target, type DeliveryStack } from '../support/delivery-stack.ts';
import { postUser } from '../support/harness.ts';
import { eventually, startReceiver, type Receiver } from './callback-receiver.ts';

vi.setConfig({ testTimeout: 180_000 });

/**
 * Redis that lost its data (docs/delivery.md): a restart without persistence, a
 * failover to an empty replica. The events are safe in MongoDB; what only Redis
 * held was the delivery jobs of a backlog (pending Delivery rows, behind a
 * failing target) and the events jobs not yet fanned out, in slots the sweep had
 * passed. Before apps/worker/src/redis-loss-recovery.ts neither ever went out
 * (a crash audit: 300 users stuck for good until `targets resync`).
 */
let redis: RunningService;
let receiver: Receiver;
let stack: DeliveryStack;
let failing = true;

beforeAll(async () => {
  redis = await startPrivateRedis();
  receiver = await startReceiver(() => ({ status: failing ? 500 : 200 }));
  stack = await startDeliveryStack({
    label: 'redis_data_loss',
    targets: [target('dictation', receiver.url, { timeout_ms: 2000 })],
    api: { env: { REDIS_URL: `redis://127.0.0.1:${redis.port}` } },
    // Long retry waits: the backlog sits in Redis as delayed jobs when Redis loses it.
    worker: { policy: { retryScheduleMs: [60_000, 60_000, 60_000] } },
  });
});

afterAll(async () => {
  await stack?.close();
  await Promise.all([receiver?.close(), redis?.stop()]);
});

describe('Redis loses its data', () => {
  it('a backlog of pending deliveries and events not yet fanned out (the sweep past them) all reach the target, newest versions, created first', async () => {
    const { api, worker, token } = stack;
    const newest = new Map<string, number>();
    const write = async (id: string, locale?: string) => {
      const res = await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id, ...(locale ? { settings: { speech_locale: locale } } : {}) });
      expect(res.status).toBeLessThan(300);
      newest.set(id, res.body.version as number);
    };
    // The watch's first check set the marker (a first start: nothing lost).
    await eventually(async () => (await collectionsOf(api.models).relayCursors.findOne({ _id: 'redis-epoch' })) !== null);

    // 1. A backlog: the target answers 500, every delivery waits a minute before its retry.
    const backlog = Array.from({ length: 12 }, (_, i) => `loss-backlog-${i}-${Date.now()}`);
    for (const id of backlog) await write(id);
    for (const id of backlog.slice(0, 6)) await write(id, 'FRENCH_FR');
    // Fanned out (a pending row per user) and attempted until the target counts as failing.
    const { deliveries: rows, providerUsers } = collectionsOf(api.models);
    await eventually(async () => {
      const users = await providerUsers.find({ external_provider_id: { $in: backlog } }).toArray();
      const pending = await rows.distinct('user_id', { status: 'pending', user_id: { $in: users.map((u) => u._id) } });
      return pending.length === backlog.length && receiver.received.length > 0;
    }, 30_000, 200);

    // 2. Events published but not fanned out, in slots the sweep's cursor has passed.
    await worker.worker.fanOut.pause();
    const unfanned = Array.from({ length: 5 }, (_, i) => `loss-unfanned-${i}-${Date.now()}`);
    for (const id of unfanned) await write(id);
    await collectionsOf(api.models).relayCursors.updateOne({ _id: SWEEP_CURSOR_ID }, { $set: { slot_done: outboxSlotOf(Date.now()) + 100 } }, { upsert: true });

    // Redis loses everything; the target recovers. The test runs the check itself, for its result:
    // the worker's own (every 300 ms here) could recover first, and the test's check, finding the
    // marker set again, then answered undefined until it gave up (a CI run lost it that way).
    await worker.worker.redisLoss.stop();
    const client = new Redis(redis.port, '127.0.0.1');
    await client.flushall();
    await client.quit();
    failing = false;
    worker.worker.fanOut.resume();

    const recovery = await eventually(async () => (await worker.worker.redisLoss.checkNow()) ?? false, 30_000);
    expect(recovery.lostData).toBe(true);
    // A delivery in flight at the flush may finish on its own once the target answers 200,
    // or write its job back; the rest of the backlog needed the requeue.
    expect(recovery.requeued).toBeGreaterThanOrEqual(backlog.length - 2);
    expect(recovery.requeued).toBeLessThanOrEqual(recovery.pendingPairs);
    expect(recovery.pendingPairs).toBeLessThanOrEqual(backlog.length);
    expect(recovery.sweepFromSlot).toBeLessThanOrEqual(outboxSlotOf(Date.now()));

    // Everyone's newest version arrives, after its user.created, and nothing older after it, as a
    // receiver that deduplicates on request_uuid sees them: a run in flight at the flush may send one
    // callback again, with its id, after its successor's (docs/guarantees.md, "Order and duplicates").
    // Up to 90 s, past the retry delay of a minute set above: a run that wrote its job back after the
    // flush holds the pair's key, and the recovery leaves the pair to that job, which waits it out.
    // (A full run once saw a user's last callback stay at version 1 for the 60 s this waited before.)
    await eventually(() => {
      for (const [id, version] of newest) {
        const got = receiver.accepted().filter((c) => c.body.data.user.external_provider_id === id);
        const ids = new Set<string>();
        const firstCopies = got.filter((c) => !ids.has(c.body.request_uuid) && ids.add(c.body.request_uuid));
        const seen = got.map((c) => `${c.body.type} v${c.body.data.version} ${String(c.body.request_uuid).slice(0, 8)}`).join(', ');
        expect(firstCopies.at(-1)?.body.data.version, `${id}: ${seen}`).toBe(version);
        expect(got[0]!.body.type, id).toBe('user.created');
      }
      return true;
    }, 90_000, 250);
    const everyone = (await providerUsers.find({ external_provider_id: { $in: [...newest.keys()] } }).toArray()).map((u) => u._id);
    await eventually(async () => (await rows.countDocuments({ status: 'pending', user_id: { $in: everyone } })) === 0, 15_000, 200);
    // The marker is back: the next check finds nothing to do.
    expect(await worker.worker.redisLoss.checkNow()).toBeUndefined();
  });
});
