import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { removeDanglingDeduplicationKey } from '@connect/shared';
import { requeueOrphanPairs } from '@connect/worker';
import { startDeliveryStack, target, type DeliveryStack } from '../support/delivery-stack.ts';
import { postUser } from '../support/harness.ts';
import { eventually, startReceiver, userOf, type Receiver } from './callback-receiver.ts';

vi.setConfig({ testTimeout: 60_000 });

/**
 * A Redis run with a `maxmemory-policy` other than `noeviction` (README: it must not be) evicts
 * job hashes and keeps the (user, target) deduplication keys, which have no expiry. A resource
 * audit (allkeys-lru under memory pressure): 161 of 200 users never reached a target again, the
 * target healthy, and neither new changes, `targets resync` nor the retention pass's repair got
 * through, each add going into the job the key named. Here the eviction is a DEL of the job's hash.
 */

let receiver: Receiver;
let stack: DeliveryStack;

beforeAll(async () => {
  receiver = await startReceiver();
  stack = await startDeliveryStack({ label: 'evicted_jobs', targets: [target('dictation', receiver.url)] });
});

afterAll(async () => {
  await stack?.close();
  await receiver?.close();
});

/** Writes a user while the target is paused, then evicts its waiting delivery job's hash: what is left is the deduplication key. */
async function userWithEvictedJob(): Promise<{ id: string; userId: string }> {
  const { api, worker, token } = stack;
  await worker.deps.health.setState('dictation', 'paused', 'test');
  const id = `evicted-${randomUUID()}`;
  expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
  const userId = (await api.models.ProviderUser.findOne({ external_provider_id: id }).lean())!._id.toString();
  const queue = worker.deps.deliveries.get('dictation')!;
  const jobId = await eventually(async () => (await queue.getDeduplicationJobId(`${userId}:dictation`)) ?? false, 20_000);
  const client = await queue.client;
  await (client as unknown as { del(key: string): Promise<number> }).del(queue.toKey(jobId));
  expect(await queue.getJob(jobId)).toBeUndefined();
  expect(await queue.getDeduplicationJobId(`${userId}:dictation`)).toBe(jobId);
  return { id, userId };
}

describe('a delivery job evicted from Redis, its deduplication key left', () => {
  it('a key is removed only while it names the very job Redis no longer holds: one naming a job that exists, or another job by now, stays', async () => {
    const queue = stack.worker.deps.deliveries.get('dictation')!;
    const client = (await queue.client) as unknown as { set(k: string, v: string): Promise<unknown>; get(k: string): Promise<string | null> };
    const pair = `pair-${randomUUID()}`;
    await client.set(`${queue.keys.de}:${pair}`, 'ghost-1');
    expect(await removeDanglingDeduplicationKey(queue, pair, 'ghost-2')).toBe(false);
    expect(await client.get(`${queue.keys.de}:${pair}`)).toBe('ghost-1');
    await client.set(queue.toKey('ghost-1'), 'a job of that id exists');
    expect(await removeDanglingDeduplicationKey(queue, pair, 'ghost-1')).toBe(false);
    await (client as unknown as { del(k: string): Promise<unknown> }).del(queue.toKey('ghost-1'));
    expect(await removeDanglingDeduplicationKey(queue, pair, 'ghost-1')).toBe(true);
    expect(await client.get(`${queue.keys.de}:${pair}`)).toBeNull();
  });

  it("the user's next change is delivered: the key naming a job Redis no longer holds is removed and the delivery added again", async () => {
    const { api, worker, token } = stack;
    const { id } = await userWithEvictedJob();
    expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id, settings: { speech_locale: 'FRENCH_FR' } })).status).toBe(200);
    await api.deps.relay.drain();
    await worker.deps.health.setState('dictation', 'healthy');
    await eventually(() => expect(receiver.accepted().filter((c) => userOf(c) === id).map((c) => c.body.data.version)).toContain(2), 30_000);
  });

  it('with no new change, the repair (the retention pass, and the recovery after a Redis loss) gives the pair a job again', async () => {
    const { worker } = stack;
    const { id, userId } = await userWithEvictedJob();
    expect(await requeueOrphanPairs(worker.deps, [{ userId, target: 'dictation' }])).toBe(1);
    await worker.deps.health.setState('dictation', 'healthy');
    await eventually(() => expect(receiver.accepted().map(userOf)).toContain(id), 30_000);
  });
});
