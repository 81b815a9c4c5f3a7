/**
 * A live delivery folded into a waiting resync job lifts that job to a live job's priority
 * (DeliveryQueues, docs/operations.md "Resync"), once: later folds leave it where it is in the
 * wait list, instead of moving it behind every live job queued since. Real Redis, no worker.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { createRedis, DeliveryQueues, RESYNC_JOB_ID_PREFIX, type DeliveryJob } from '@connect/shared';

const redis = createRedis(inject('redisUrl'), 'producer');
const queues = new DeliveryQueues(redis, `t-${inject('runId')}-lift-${randomUUID().slice(0, 6)}`, [{ name: 't' }]);
afterAll(async () => {
  await queues.get('t')!.obliterate({ force: true });
  await queues.close();
  redis.disconnect();
});

function jobFor(userId: string, version: number): DeliveryJob {
  const user = { external_provider_id: `ext-${userId}`, provider_email: `${userId}@example.com`, settings: null, created_at: '2026-12-05T00:00:00.000Z', updated_at: '2026-12-05T00:00:00.000Z', version, status: 'active' as const, deactivated_at: null };
  const event = (v: number) => ({ id: `evt-${userId}-${v}`, type: v === 1 ? ('user.created' as const) : ('user.updated' as const), occurred_at: '2026-12-05T00:00:00.000Z', organization_id: 'org-1', version: v, data: { ...user, version: v } });
  return { user_id: userId, target: 't', event: event(version), created: event(1) };
}

describe('DeliveryQueues: the lift of a resync job a live delivery folded into', () => {
  it('moves it to the wait list once; a second fold leaves it before the live jobs queued after the first', async () => {
    const queue = queues.get('t')!;
    const a = '0123456789abcdef0000000a';
    const b = '0123456789abcdef0000000b';
    const resyncId = `${RESYNC_JOB_ID_PREFIX}a-1`;
    await queues.enqueueWith('t', [{ job: jobFor(a, 1), jobId: resyncId }], { priority: 1000 });
    expect(await queue.getJobCounts('prioritized', 'wait')).toEqual({ prioritized: 1, wait: 0 });
    await queues.enqueue(jobFor(a, 2)); // folds into the resync job: lifted
    expect(await queue.getJobCounts('prioritized', 'wait')).toEqual({ prioritized: 0, wait: 1 });
    await queues.enqueue(jobFor(b, 1)); // another user's live job, after it
    const before = (await queue.getWaiting()).map((j) => j.id);
    await queues.enqueue(jobFor(a, 3)); // folds again
    expect((await queue.getWaiting()).map((j) => j.id)).toEqual(before);
    expect(before.indexOf(resyncId)).toBeGreaterThan(before.indexOf(b)); // the list is newest first: the resync job goes out first
  });
});
