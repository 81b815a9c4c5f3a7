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
/** How many of a user's first callbacks are answered 500. */
const failTimes = new Map<string, number>();

beforeAll(async () => {
  // The worker reaches the database through a proxy of the test's own; the API does not.
  const url = new URL(databaseUrl('worker_internal'));
  link = await startTcpProxy(Number(url.port), url.hostname);
  const proxied = new URL(url);
  proxied.port = String(link.port);
  receiver = await startReceiver((c) => {
    // The first attempts' answers are 500s (recorded: the database goes away after one).
    const left = failTimes.get(userOf(c)) ?? 0;
    if (left > 0) {
      failTimes.set(userOf(c), left - 1);
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
    // Three attempts: 5 s (time to cut the database once the first is recorded), then an hour; a
    // short park, so the test takes seconds.
    worker: { policy: { retryScheduleMs: [5_000, 3_600_000] }, fanOutParkMs: 500 },
  });
});

afterAll(async () => {
  await stack?.close();
  await receiver?.close();
  await link?.close();
});

async function jobOf(id: string) {
  const jobs = await stack.worker.deps.deliveries.get('dictation')!.getJobs(['delayed', 'wait', 'active', 'prioritized']);
  return jobs.find((j) => j.data.event.data.external_provider_id === id);
}

/**
 * The 500 recorded everywhere: the row (read by the API over a link of its own) and the job back
 * on the schedule. The row alone is not enough: cut while the worker's other writes of that
 * attempt were in flight, the attempt became a failure of ours, and the job had made no attempt.
 */
async function firstAttemptSettled(id: string): Promise<void> {
  await eventually(async () => (await stack.api.models.Delivery.findOne({ external_provider_id: id }).lean())?.attempts === 1, 20_000, 50);
  await eventually(async () => {
    const job = await jobOf(id);
    return job !== undefined && job.attemptsMade === 1 && (await job.getState()) === 'delayed';
  }, 5_000, 50);
}

describe('a delivery that fails on our side (the worker\'s MongoDB gone)', () => {
  it('spends no attempt and is run again within a second or so, however long the schedule\'s next step: delivered once the database is back, its row counting the target\'s answers only', async () => {
    const id = `internal-${Date.now()}`;
    failTimes.set(id, 1);
    expect((await postUser(stack.api, stack.token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
    // Attempt 1, the target's 500, recorded (the API reads the row over a link of its own); then the worker's database goes.
    await firstAttemptSettled(id);
    link.cut();
    // Every run since failed on our side: three in a row at least (the warning is written once per 10 s, so at least that many).
    await eventually(() => expect(stack.worker.logs.text).toMatch(/"failures_in_a_row":([3-9]|\d{2,})[^\n]*"msg":"delivery could not run \(our own failure/), 60_000, 200);
    expect(await stack.worker.deps.metrics.registry.getSingleMetricAsString('connect_deliveries_total')).toMatch(/outcome="internal"} ([3-9]|\d{2,})(\n|$)/);
    const queue = stack.worker.deps.deliveries.get('dictation')!;
    expect(await queue.getFailedCount()).toBe(0);
    const job = await jobOf(id);
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

  it('counts failures of its own in a row only: an answer of the target in between starts the count again, so the next wait is 1 s, not the longer one the earlier streak had reached', async () => {
    const id = `internal-again-${Date.now()}`;
    failTimes.set(id, 2);
    expect((await postUser(stack.api, stack.token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
    await firstAttemptSettled(id);
    link.cut();
    // Two failures of ours in a row at least, counted on the job.
    await eventually(async () => ((await jobOf(id))?.data.internal_failures ?? 0) >= 2, 60_000, 200);
    link.restore();
    // The run after: the target answers its second 500 (attempt 2, recorded); the schedule's next step is an hour.
    await eventually(async () => (await stack.api.models.Delivery.findOne({ external_provider_id: id }).lean())?.attempts === 2, 30_000, 100);
    const job = await eventually(async () => {
      const j = await jobOf(id);
      return j && (await j.getState()) === 'delayed' && j.attemptsMade === 2 ? j : false;
    }, 20_000, 100);
    expect(job.data.internal_failures ?? 0).toBe(0);
    expect(receiver.received.filter((c) => userOf(c) === id).map((c) => c.answered)).toEqual([500, 500]);
  });
});
