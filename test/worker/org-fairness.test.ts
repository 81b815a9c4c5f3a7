import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { BULK_AFTER, BULK_PRIORITY } from '@connect/shared';
import { target } from '../support/delivery-stack.ts';
import { getToken, postUser, registerTestClient, startTestApi, type TestApi } from '../support/harness.ts';
import { eventually, startReceiver, userOf, type Receiver } from './callback-receiver.ts';
import { startTestWorker, type TestWorker } from './worker-under-test.ts';

vi.setConfig({ testTimeout: 120_000 });

/**
 * One organization's burst does not hold up another's changes (docs/delivery.md, One
 * organization's burst). A fairness audit: while organization A imported 10,000 users, B's
 * callbacks took 88 s at the median on the fastest target, queued behind A's in the events queue
 * and in the target's queue, first come, first served. Here A's burst and B's one change are all
 * in the events queue before the worker starts, B's last, and the worker delivers one at a time.
 */

const BURST = 3 * BULK_AFTER;

let receiver: Receiver;
let api: TestApi;
let worker: TestWorker | undefined;

beforeAll(async () => {
  receiver = await startReceiver();
  api = await startTestApi({ label: 'org_fairness', env: { RATE_LIMIT_PER_CLIENT_PER_MINUTE: '0', DOWNSTREAM_TARGETS: JSON.stringify([target('dictation', receiver.url)]) } });
});

afterAll(async () => {
  await worker?.close();
  await api?.close();
  await receiver?.close();
});

describe('fairness between organizations', () => {
  it(`an organization publishing over ${BULK_AFTER} events in 10 s is put after the others: B's change, written after A's burst of ${BURST}, is delivered before most of A's`, async () => {
    const [a, b] = await Promise.all([registerTestClient(api.models, { name: 'Bulk clinic' }), registerTestClient(api.models, { name: 'Quiet clinic' })]);
    const [tokenA, tokenB] = await Promise.all([getToken(api, a), getToken(api, b)]);
    // B is publishing too (an organization alone is never put after anyone: no one to be fair to).
    const earlier = `quiet-first-${randomUUID()}`;
    expect((await postUser(api, tokenB, { provider_email: `${earlier}@example.com`, external_provider_id: earlier })).status).toBe(201);
    const ids = Array.from({ length: BURST }, (_, i) => `bulk-${i}-${randomUUID()}`);
    for (let i = 0; i < ids.length; i += 10) {
      await Promise.all(ids.slice(i, i + 10).map(async (id) => expect((await postUser(api, tokenA, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201)));
    }
    const quiet = `quiet-${randomUUID()}`;
    expect((await postUser(api, tokenB, { provider_email: `${quiet}@example.com`, external_provider_id: quiet })).status).toBe(201);
    await api.deps.relay.drain();
    // A's events past its first BULK_AFTER or so wait at the bulk priority; B's, the last published, at none.
    const counts = await api.deps.queue.getJobCounts('wait', 'prioritized');
    expect(counts.prioritized).toBeGreaterThanOrEqual(BURST - BULK_AFTER - 10);
    expect(counts.wait! + counts.prioritized!).toBe(BURST + 2);
    const bulkJobs = await api.deps.queue.getJobs(['prioritized'], 0, 0);
    expect(bulkJobs[0]?.priority).toBe(BULK_PRIORITY);

    worker = await startTestWorker(api.env, { concurrency: 1 });
    await eventually(() => expect(receiver.accepted()).toHaveLength(BURST + 2), 90_000);
    const order = receiver.accepted().map(userOf).filter((u) => u !== earlier);
    const quietAt = order.indexOf(quiet);
    console.log(`[fairness] B's change delivered ${quietAt + 1}th of ${BURST + 1} (A's burst of ${BURST} written before it)`);
    // First come, first served it was last; now it goes with A's first, live, events.
    expect(quietAt).toBeLessThan(BULK_AFTER + 20);
    // A's own events still all arrive, each once.
    expect(new Set(order.filter((u) => u !== quiet))).toEqual(new Set(ids));
  });
});
