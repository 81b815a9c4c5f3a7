/**
 * A Redis snapshot restored brings back, as active, the jobs that were active when it was taken:
 * their worker is gone and their lock has expired. A delivery job among them holds its (user,
 * target)'s deduplication key, so every newer version folds into it and waits with it until
 * BullMQ's stalled check frees it (one or two WORKER_STALLED_INTERVAL_MS later; 30 to 120 s in a
 * real-Redis audit). The recovery puts such jobs back to waiting at once (redis-loss-recovery.ts).
 * Real FerretDB, Redis and HTTP receiver; the abandoned job is made by a bare BullMQ worker that
 * takes it and vanishes, its lock deleted as its expiry would.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Worker } from 'bullmq';
import { deliveryIdOf } from '@connect/shared';
import { redisMarkerKey } from '@connect/worker';
import { startDeliveryStack, type DeliveryStack } from '../support/delivery-stack.ts';
import { postUser } from '../support/harness.ts';
import { eventually, startReceiver, type Receiver } from './callback-receiver.ts';
import { startTestWorker, type TestWorker } from './worker-under-test.ts';

let stack: DeliveryStack;
let receiver: Receiver;
let second: TestWorker | undefined;

beforeAll(async () => {
  receiver = await startReceiver();
  stack = await startDeliveryStack({
    label: 'rollback_active',
    targets: [{ name: 't', url: receiver.url, secrets: ['rollback-active-secret'], timeout_ms: 5000 }],
    // No stalled check within the test: only the recovery can free the job.
    worker: { purgeIntervalMs: 3_600_000, stalledIntervalMs: 600_000 },
  });
});
afterAll(async () => {
  await second?.close();
  await stack?.close();
  await receiver?.close();
});

describe('a delivery job active in a restored snapshot, its worker gone', () => {
  it('goes back to waiting at the recovery, so the user, and the newer version folded into that job, are delivered without waiting for the stalled check', async () => {
    const { api, worker, token } = stack;
    const queue = worker.deps.deliveries.get('t')!;
    // This worker delivers nothing more (its fan-out goes on): the job below is for the bare worker to take.
    await worker.worker.deliveries.get('t')!.close();
    const id = `active-${randomUUID()}`;
    expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
    const user = (await api.models.ProviderUser.findOne({ external_provider_id: id }).lean())!;
    const jobId = deliveryIdOf(user.last_event.id, 't');
    await eventually(async () => expect(await queue.getJobState(jobId)).toBe('waiting'));

    const bare = new Worker(queue.name, null, { connection: worker.deps.queueRedis.duplicate(), prefix: queue.opts.prefix, autorun: false });
    try {
      expect((await bare.getNextJob(randomUUID()))?.id).toBe(jobId);
    } finally {
      await bare.close(true);
    }
    // Its lock expired with the snapshot's worker.
    await worker.deps.queueRedis.del(`${queue.toKey(jobId)}:lock`);
    expect(await queue.getJobState(jobId)).toBe('active');

    // A newer version: its job folds into the active one (the pair's deduplication key names it).
    expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id, settings: { speech_locale: 'FRENCH_FR' } })).status).toBe(200);
    const newest = (await api.models.ProviderUser.findById(user._id).lean())!.last_event.id;
    await eventually(async () => expect((await api.models.Delivery.findById(deliveryIdOf(newest, 't')).lean())?.status).toBe('pending'));
    expect(await queue.getJob(deliveryIdOf(newest, 't'))).toBeUndefined();

    // A worker that delivers to the target (no stalled check within the test either), and Redis
    // seen to have gone back: here the marker is simply gone, a loss to the check; the recovery is the same.
    second = await startTestWorker(stack.api.env, { purgeIntervalMs: 3_600_000, stalledIntervalMs: 600_000 });
    await worker.deps.queueRedis.del(redisMarkerKey(api.env.QUEUE_PREFIX!));
    // Whichever worker's check runs the recovery (one at a time, under a lock).
    await second.worker.redisLoss.checkNow();
    // Before: nothing reached the receiver until the stalled check (ten minutes away here).
    await eventually(() => expect(receiver.accepted().filter((c) => c.body.data.user.external_provider_id === id).map((c) => c.body.type)).toEqual(['user.created', 'user.updated']), 30_000);
    expect([...worker.logs.lines, ...second.logs.lines].some((line) => line.includes('put back to waiting'))).toBe(true);
  }, 60_000);
});
