import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { eventJobOf, type ProviderUserDoc } from '@connect/shared';
import { startDeliveryStack, target, type DeliveryStack } from '../support/delivery-stack.ts';
import { postUser, type TestApi } from '../support/harness.ts';
import { eventually, startReceiver, type Receiver } from './callback-receiver.ts';
import type { TestWorker } from './worker-under-test.ts';

// Real processes, FerretDB and retries: generous on a loaded two-core CI machine.
vi.setConfig({ testTimeout: 90_000 });

/**
 * docs/contract.md, Events: "Duplicates are possible; the id dedupes them", and a fan-out that
 * keeps failing is retried, never dropped (its event's published marker exists,
 * so the sweep would not publish it again).
 */

let stack: DeliveryStack;
let api: TestApi;
let worker: TestWorker;
let token: string;
let receiver: Receiver;

beforeAll(async () => {
  receiver = await startReceiver();
  stack = await startDeliveryStack({
    label: 'worker_duplicates',
    targets: [target('dictation', receiver.url, { timeout_ms: 2000 })],
    worker: { fanOutParkMs: 300 },
  });
  ({ api, worker, token } = stack);
});

afterAll(async () => {
  await stack?.close();
  await receiver?.close();
});

describe('a re-published event is not delivered twice', () => {
  it('same event id through the relay again, and as a new BullMQ job after BullMQ forgot the id: one callback', async () => {
    const id = `dup-${Date.now()}`;
    expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
    await eventually(() => expect(receiver.accepted()).toHaveLength(1));
    const doc = (await api.models.ProviderUser.findOne({ external_provider_id: id }).lean<ProviderUserDoc>())!;

    await api.deps.relay.publish(doc); // BullMQ still holds the job id: dropped there
    await api.deps.queue.add('user.created', eventJobOf(doc), { jobId: `again-${Date.now()}` }); // past BullMQ: the worker's version check
    await eventually(async () => expect(await api.deps.queue.getCompletedCount()).toBeGreaterThanOrEqual(2));
    // Both fan-outs are done and no delivery is left to run: had either duplicate been
    // enqueued, it would be waiting, active or delayed, or already at the receiver.
    await eventually(async () => {
      const backlogs = await Promise.all(worker.deps.config.downstreamTargets.map((t) => worker.deps.deliveries.backlog(t.name)));
      expect(backlogs.reduce((a, b) => a + b, 0), JSON.stringify(backlogs)).toBe(0);
    });
    expect(receiver.received).toHaveLength(1);
    const rows = await api.models.Delivery.find({ external_provider_id: id }).lean();
    expect(rows.map((r) => [r.event_id, r.status, r.attempts])).toEqual([[doc.created_event.id, 'delivered', 1]]);
  });
});

describe('a fan-out that keeps failing', () => {
  it('is parked and retried after its last attempt, not failed', async () => {
    const job = await api.deps.queue.add(
      'user.created',
      // A user id that is not an ObjectId makes every fan-out attempt throw.
      { user_id: 'not-an-object-id', event: eventJobOf((await api.models.ProviderUser.findOne().lean<ProviderUserDoc>())!).event, created: {} as never },
      { jobId: `poison-${Date.now()}`, attempts: 1 },
    );
    await eventually(() => expect(worker.logs.text.split('fan-out keeps failing').length - 1).toBeGreaterThanOrEqual(2), 10_000);
    expect(await api.deps.queue.getJobState(job.id!)).toMatch(/delayed|active|waiting/);
    expect(await api.deps.queue.getFailedCount()).toBe(0);
    await job.remove().catch(() => undefined);
  });
});
