import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startTcpProxy, type TcpProxy } from '@connect/local-services';
import { startDeliveryStack, target, type DeliveryStack } from '../support/delivery-stack.ts';
import { databaseUrl, postUser } from '../support/harness.ts';
import { eventually, startReceiver, userOf, type Receiver } from './callback-receiver.ts';

vi.setConfig({ testTimeout: 240_000 });

/**
 * "Impossible to make lose an event": a delivery whose attempts run out on our side (the worker's
 * MongoDB gone) is parked and run again, never failed. Before, its last attempt made the row a
 * dead letter, a write that failed with the database down too: the job failed, the row stayed
 * `pending` with nothing queued, the target's backlog read 0, and it was owed until the retention
 * pass mended it, 15 minutes or more later (an observability audit).
 */

let link: TcpProxy;
let receiver: Receiver;
let stack: DeliveryStack;
const cutAfterFirst = new Set<string>();

beforeAll(async () => {
  // The worker reaches the database through a proxy of the test's own; the API does not.
  const url = new URL(databaseUrl('worker_internal'));
  link = await startTcpProxy(Number(url.port), url.hostname);
  const proxied = new URL(url);
  proxied.port = String(link.port);
  receiver = await startReceiver((c) => {
    // The first attempt's answer is a 500, and the database goes away before the worker can record it.
    if (cutAfterFirst.delete(userOf(c))) {
      link.cut();
      return { status: 500 };
    }
    return { status: 200 };
  });
  stack = await startDeliveryStack({
    label: 'worker_internal',
    api: { mongoUrl: url.toString() },
    workerEnv: { MONGO_URL: proxied.toString() },
    // A long timeout: on a loaded machine a callback cut short by it on the parked (last) attempt would be a dead letter.
    targets: [target('dictation', receiver.url, { timeout_ms: 20_000 })],
    // Two attempts, and a short park, so the test takes seconds.
    worker: { policy: { retryScheduleMs: [200] }, fanOutParkMs: 500 },
  });
});

afterAll(async () => {
  await stack?.close();
  await receiver?.close();
  await link?.close();
});

describe('a delivery whose attempts run out on our side (the worker\'s MongoDB gone)', () => {
  it('is parked, not failed: once the database is back it is delivered, and its row says so', async () => {
    const id = `internal-${Date.now()}`;
    cutAfterFirst.add(id);
    expect((await postUser(stack.api, stack.token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
    // Its last attempt failed on our side: parked (the line says so), counted as internal.
    await eventually(() => expect(stack.worker.logs.text).toMatch(/"parked":true[^\n]*"msg":"delivery could not run \(our own failure/), 60_000, 200);
    expect(await stack.worker.deps.metrics.registry.getSingleMetricAsString('connect_deliveries_total')).toMatch(/outcome="internal"} [1-9]/);
    const queue = stack.worker.deps.deliveries.get('dictation')!;
    expect(await queue.getFailedCount()).toBe(0);

    link.restore();
    try {
      await eventually(() => expect(receiver.accepted().filter((c) => userOf(c) === id)).toHaveLength(1), 120_000, 200);
    } catch (err) {
      // What the worker said, for whoever reads a failure (its warnings and what it delivered).
      console.error(stack.worker.logs.lines.filter((l) => /"level":[4-6]0|callback delivered|answers again/.test(l)).join('\n'));
      throw err;
    }
    await eventually(async () => expect((await stack.api.models.Delivery.findOne({ external_provider_id: id }).lean())?.status).toBe('delivered'), 30_000);
    expect(await queue.getFailedCount()).toBe(0);
    expect(receiver.received.filter((c) => userOf(c) === id).map((c) => c.answered)).toEqual([500, 200]);
  });
});
