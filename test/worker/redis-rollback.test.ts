/**
 * A Redis that went back in time (an RDB snapshot restored, a failover to a replica that lagged,
 * the tail of an AOF lost) keeps the marker that tells a data loss, so the recovery of
 * redis-loss-recovery.ts does not run, yet jobs written after the snapshot are gone: their
 * pending Delivery rows were owed by nobody, for good, while every gauge said the backlog was 0.
 * The retention pass gives a pending row still owed, with no job for its (user, target), its job.
 * Real FerretDB, Redis and HTTP receiver; the lost job is removed from Redis by hand.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deliveryIdOf, pauseTarget, resumeTarget } from '@connect/shared';
import { startDeliveryStack, type DeliveryStack } from '../support/delivery-stack.ts';
import { postUser } from '../support/harness.ts';
import { eventually, startReceiver, type Receiver } from './callback-receiver.ts';

let stack: DeliveryStack;
let receiver: Receiver;

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
    // Held behind the pause: a pending row and its waiting job.
    const job = await eventually(async () => (await queue.getJob(deliveryIdOf(eventId, 't'))) ?? false);
    expect((await stack.api.models.Delivery.findById(deliveryIdOf(eventId, 't')).lean())?.status).toBe('pending');

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
