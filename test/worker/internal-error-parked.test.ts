import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startTcpProxy, type TcpProxy } from '@connect/local-services';
import { startDeliveryStack, target, type DeliveryStack } from '../support/delivery-stack.ts';
import { databaseUrl, postUser } from '../support/harness.ts';
import { eventually, startReceiver, userOf, type Receiver } from './callback-receiver.ts';

vi.setConfig({ testTimeout: 240_000 });

/**
 * A delivery that fails on our side (the worker's MongoDB gone) is not the target's failure: it
 * spends none of the target's retry schedule and is run again within seconds (1 s doubling, at
 * most the park time), for as long as it takes, never failed (docs/delivery.md, Retries).
 * - Made a dead letter at its last attempt, the row's write failed with the database down too:
 *   the job failed, the row stayed `pending` with nothing queued, the target's backlog read 0, and
 *   it was owed until the retention pass mended it, 15 minutes or more later (an observability audit).
 * - Retried on the schedule, an outage of ours spent its steps: the next try came hours later
 *   (here the schedule's second step is an hour), and the target's own failures had less time.
 */

let link: TcpProxy;
let receiver: Receiver;
let stack: DeliveryStack;
const failFirst = new Set<string>();

beforeAll(async () => {
  // The worker reaches the database through a proxy of the test's own; the API does not.
  const url = new URL(databaseUrl('worker_internal'));
  link = await startTcpProxy(Number(url.port), url.hostname);
  const proxied = new URL(url);
  proxied.port = String(link.port);
  receiver = await startReceiver((c) => {
    // The first attempt's answer is a 500 (recorded: the database goes away after it).
    if (failFirst.delete(userOf(c))) return { status: 500 };
    return { status: 200 };
  });
  stack = await startDeliveryStack({
    label: 'worker_internal',
    api: { mongoUrl: url.toString() },
    workerEnv: { MONGO_URL: proxied.toString() },
    // A long timeout: on a loaded machine a callback cut short by it on the parked (last) attempt would be a dead letter.
    targets: [target('dictation', receiver.url, { timeout_ms: 20_000 })],
    // Three attempts: 3 s (time to cut the database once the first is recorded), then an hour; a
    // short park, so the test takes seconds.
    worker: { policy: { retryScheduleMs: [3_000, 3_600_000] }, fanOutParkMs: 500 },
  });
});

afterAll(async () => {
  await stack?.close();
  await receiver?.close();
  await link?.close();
});

describe('a delivery that fails on our side (the worker\'s MongoDB gone)', () => {
  it('spends no attempt and is run again within a second or so, however long the schedule\'s next step: delivered once the database is back, its row counting the target\'s answers only', async () => {
    const id = `internal-${Date.now()}`;
    failFirst.add(id);
    expect((await postUser(stack.api, stack.token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
    // Attempt 1, the target's 500, recorded (the API reads the row over a link of its own); then the worker's database goes.
    await eventually(async () => (await stack.api.models.Delivery.findOne({ external_provider_id: id }).lean())?.attempts === 1, 20_000, 100);
    link.cut();
    // Every run since failed on our side: three in a row at least (the warning is written once per 10 s, so at least that many).
    await eventually(() => expect(stack.worker.logs.text).toMatch(/"failures_in_a_row":([3-9]|\d{2,})[^\n]*"msg":"delivery could not run \(our own failure/), 60_000, 200);
    expect(await stack.worker.deps.metrics.registry.getSingleMetricAsString('connect_deliveries_total')).toMatch(/outcome="internal"} ([3-9]|\d{2,})(\n|$)/);
    const queue = stack.worker.deps.deliveries.get('dictation')!;
    expect(await queue.getFailedCount()).toBe(0);
    const jobs = await queue.getJobs(['delayed', 'wait', 'active', 'prioritized']);
    const job = jobs.find((j) => j.data.event.data.external_provider_id === id);
    // The 500 was an attempt; the failures of ours were not (spent, the schedule's next wait would be an hour).
    expect(job?.attemptsMade).toBe(1);

    link.restore();
    try {
      // Within seconds, not the hour of the schedule's second step.
      await eventually(() => expect(receiver.accepted().filter((c) => userOf(c) === id)).toHaveLength(1), 30_000, 200);
    } catch (err) {
      // What the worker said, for whoever reads a failure (its warnings and what it delivered).
      console.error(stack.worker.logs.lines.filter((l) => /"level":[4-6]0|callback delivered|answers again/.test(l)).join('\n'));
      throw err;
    }
    const row = await eventually(async () => {
      const r = await stack.api.models.Delivery.findOne({ external_provider_id: id }).lean();
      return r?.status === 'delivered' ? r : false;
    }, 30_000);
    expect(row.attempts).toBe(2);
    expect(await queue.getFailedCount()).toBe(0);
    expect(receiver.received.filter((c) => userOf(c) === id).map((c) => c.answered)).toEqual([500, 200]);
  });
});
