/**
 * A fan-out writes an event's pending row and its delivery job at the same time. When the job goes
 * into one already waiting for the same (user, target), that job may run, deliver a newer version
 * and settle the rows below it before this row lands: the row stayed `pending` until the retention
 * pass marked it, 15 to 25 minutes later (seen about once in 80 rounds of a concurrency fuzz). The
 * fan-out now reads the target's delivered version for such a row and supersedes it.
 * Real FerretDB, Redis, worker and receiver; the row's insert is held back by the test so that it
 * lands after the other job, as it did by chance under load.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { Job } from 'bullmq';
import { deliveryIdOf, deliveryQueueName, syncStateIdOf, type DeliveryDoc, type DeliveryStore, type UserEventJob } from '@connect/shared';
import { createFanOut } from '@connect/worker';
import { startDeliveryStack, target, type DeliveryStack } from '../support/delivery-stack.ts';
import { postUser } from '../support/harness.ts';
import { eventually, startReceiver, type Receiver } from './callback-receiver.ts';

// Three versions through a real worker, each waited for up to 30 s: on a loaded two-core CI machine the
// whole took 30.9 s once, past vitest's default.
vi.setConfig({ testTimeout: 120_000 });

let stack: DeliveryStack;
let receiver: Receiver;

beforeAll(async () => {
  receiver = await startReceiver();
  stack = await startDeliveryStack({ label: 'late_fanout_folded', targets: [target('t', receiver.url)] });
});
afterAll(async () => {
  await stack?.close();
  await receiver?.close();
});

describe('a late fan-out whose job went into one already waiting', () => {
  it('supersedes its own row when that job had already delivered a newer version (the row stayed pending until the retention pass)', async () => {
    const { api, worker, token } = stack;
    const id = `late-fold-${Date.now()}`;
    const body = (locale: string) => ({ provider_email: `${id}@example.com`, external_provider_id: id, settings: { speech_locale: locale } });
    const versionsSent = () => receiver.accepted().filter((c) => c.body.data.user.external_provider_id === id).map((c) => c.body.data.version as number);

    // Version 1 reaches the target.
    expect((await postUser(api, token, body('ENGLISH_US'))).status).toBe(201);
    await eventually(() => versionsSent().includes(1), 30_000);
    const userId = (await api.models.ProviderUser.findOne({ external_provider_id: id }).lean())!._id.toString();
    const deliveredVersion = async () => (await api.models.SyncState.findById(syncStateIdOf(userId, 't')).lean())?.delivered_version;
    await eventually(async () => (await deliveredVersion()) === 1, 30_000);

    // Versions 2 and 3: their events wait in the events queue (no fan-out), the target's queue is paused.
    await worker.worker.fanOut.pause();
    const queue = worker.deps.deliveries.get('t')!;
    await queue.pause();
    expect((await postUser(api, token, body('FRENCH_FR'))).body.version).toBe(2);
    expect((await postUser(api, token, body('ENGLISH_UK'))).body.version).toBe(3);
    const eventJob = async (version: number): Promise<Job<UserEventJob>> =>
      eventually(async () => (await worker.deps.eventsQueue.getJobs(['waiting', 'paused'])).find((j) => j.data.user_id === userId && j.data.event.version === version) ?? false, 30_000);
    const v2 = await eventJob(2);
    const v3 = await eventJob(3);

    const fanOut = (store: DeliveryStore) => createFanOut({ store, deliveries: worker.deps.deliveries, targets: worker.deps.config.downstreamTargets, log: worker.deps.log });
    // Version 3 fans out first: its row, and its job waiting in the paused queue.
    await fanOut(worker.deps.store)(v3);
    const waitingJobId = deliveryIdOf(v3.data.event.id, 't');
    expect(await queue.getJobState(waitingJobId)).toBe('waiting');

    // Then version 2's, late: its row's insert held back; its job goes into version 3's.
    let releaseRow!: () => void;
    const rowHeld = new Promise<void>((resolve) => (releaseRow = resolve));
    const store = worker.deps.store;
    const heldStore = Object.create(store, { insertPending: { value: async (docs: DeliveryDoc[]) => (await rowHeld, store.insertPending(docs)) } }) as DeliveryStore;
    const late = fanOut(heldStore)(v2);
    const lateJobId = deliveryIdOf(v2.data.event.id, 't');
    const eventsKey = `${api.env.QUEUE_PREFIX}:${deliveryQueueName('t')}:events`;
    await eventually(async () => (await worker.deps.queueRedis.xrange(eventsKey, '-', '+')).some(([, fields]) => fields.includes('deduplicated') && fields.includes(lateJobId)), 30_000);

    // Version 3's job runs: the target gets version 3 and the rows below it are settled, before version 2's row exists.
    await queue.resume();
    await eventually(async () => (await queue.getJobState(waitingJobId)) === 'completed', 30_000);
    expect(versionsSent()).toEqual([1, 3]);
    expect(await deliveredVersion()).toBe(3);
    expect(await api.models.Delivery.findById(lateJobId).lean()).toBeNull();

    releaseRow();
    await late;
    // Before: 'pending', until a retention pass 15 to 25 minutes later.
    expect((await api.models.Delivery.findById(lateJobId).lean())?.status).toBe('superseded');
    expect(versionsSent()).toEqual([1, 3]);
  });
});
