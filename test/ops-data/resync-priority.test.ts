/**
 * `targets resync` yields to live events (docs/operations.md, Resync): a live
 * event enqueued while a resync backlog waits goes out before that backlog. The
 * backlog is built while the target is paused, so nothing is delivered until
 * the resume and the order after it is the queue's alone: the API and a
 * worker with a concurrency of 2 in this process, FerretDB, Redis, a receiver
 * on a real port, and the CLI as a child process.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { postUser } from '../support/harness.ts';
import { startDeliveryStack, target, type DeliveryStack } from '../support/delivery-stack.ts';
import { eventually, startReceiver, userOf, type Receiver } from '../worker/callback-receiver.ts';
import { eventsFannedOut, startTestWorker, type TestWorker } from '../worker/worker-under-test.ts';
import { runCli } from '../support/cli-child.ts';

const USERS = 150;
const LIVE = 3;
const UPDATED = 3;
const CONCURRENCY = 2;
const existing: string[] = [];

let stack: DeliveryStack;
let receiver: Receiver;
let worker: TestWorker | undefined;

async function cli(...args: string[]): Promise<any> {
  const res = await runCli(stack.api.env, args);
  expect(res.code, JSON.stringify(res.json)).toBe(0);
  return res.json;
}

beforeAll(async () => {
  receiver = await startReceiver();
  // The users exist before the target does: the stack's own worker delivers to no target.
  stack = await startDeliveryStack({ label: 'resync-prio', targets: [target('late', receiver.url)], workerEnv: { DOWNSTREAM_TARGETS: '[]' } });
  for (let i = 0; i < USERS; i++) {
    const id = `rp-${i}-${randomUUID().slice(0, 8)}`;
    existing.push(id);
    expect((await postUser(stack.api, stack.token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
  }
  await eventsFannedOut(stack.worker, 60_000);
}, 300_000);

afterAll(async () => {
  await worker?.close();
  await stack?.close();
  await receiver?.close();
});

describe('targets resync: live events first', () => {
  it(`live events enqueued behind a backlog of ${USERS} resync jobs are delivered before it, once the paused target resumes: new users, and updates of users whose resync job waits`, async () => {
    expect(await cli('targets', 'pause', 'late')).toMatchObject({ name: 'late', state: 'paused' });
    await stack.worker.close();
    worker = await startTestWorker(stack.api.env, { concurrency: CONCURRENCY });

    expect(await cli('targets', 'resync', 'late')).toMatchObject({ target: 'late', users_scanned: USERS, enqueued: USERS, skipped: 0 });
    const live: string[] = [];
    for (let i = 0; i < LIVE; i++) {
      const id = `live-${i}-${randomUUID().slice(0, 8)}`;
      live.push(id);
      expect((await postUser(stack.api, stack.token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
    }
    // Live updates of users the resync queued, from the end of its backlog: BullMQ folds each
    // into that user's waiting resync job, which must then go at a live job's priority.
    const updated = existing.slice(-UPDATED);
    for (const id of updated) {
      expect((await postUser(stack.api, stack.token, { provider_email: `${id}@example.com`, external_provider_id: id, settings: { speech_locale: 'FRENCH_FR' } })).status).toBe(200);
    }
    await eventsFannedOut(worker, 30_000);
    // Every job is in the target's queue (the live ones fanned out) before the resume.
    await eventually(async () => (await cli('targets', 'list')).targets.find((t: { name: string }) => t.name === 'late')?.backlog === USERS + LIVE, 30_000, 250);
    expect(receiver.accepted()).toHaveLength(0);

    expect(await cli('targets', 'resume', 'late')).toMatchObject({ name: 'late', state: 'healthy' });
    await eventually(() => receiver.accepted().length === USERS + LIVE + UPDATED, 120_000, 200);

    const order = receiver
      .accepted()
      .sort((a, b) => a.n - b.n)
      .map(userOf);
    const livePositions = live.map((id) => order.indexOf(id));
    // Random order would put them anywhere among the USERS + LIVE; first means within the first
    // LIVE + 2 * CONCURRENCY (jobs a worker slot may already hold when the hold ends).
    console.log(`[resync priority] live events at positions ${livePositions.join(', ')} of ${order.length}`);
    for (const p of livePositions) expect(p).toBeGreaterThanOrEqual(0);
    for (const p of livePositions) expect(p).toBeLessThan(LIVE + 2 * CONCURRENCY);
    // An updated user's job sends user.created then the update: both early too.
    const updatedPositions = updated.map((id) => order.lastIndexOf(id));
    console.log(`[resync priority] updated users' last callbacks at positions ${updatedPositions.join(', ')} of ${order.length}`);
    for (const p of updatedPositions) expect(p).toBeLessThan(LIVE + 2 * UPDATED + 2 * CONCURRENCY);
  }, 240_000);

  it('a forced resync does not take the place of a live change waiting behind a running delivery: that change still goes out as a live job', async () => {
    const id = `running-${randomUUID().slice(0, 8)}`;
    const body = (locale: string) => ({ provider_email: `${id}@example.com`, external_provider_id: id, settings: { speech_locale: locale } });
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (release = resolve));
    receiver.respond = async (req) => {
      if (userOf(req) === id && req.body.data.version === 2) await gate;
      return { status: 200 };
    };
    try {
      expect((await postUser(stack.api, stack.token, body('ENGLISH_US'))).status).toBe(201);
      await eventually(() => receiver.accepted().some((c) => userOf(c) === id && c.body.data.version === 1), 30_000);
      expect((await postUser(stack.api, stack.token, body('FRENCH_FR'))).status).toBe(200);
      await eventually(() => receiver.received.some((c) => userOf(c) === id && c.body.data.version === 2), 30_000); // v2's delivery is running, held
      expect((await postUser(stack.api, stack.token, body('GERMAN_DE'))).status).toBe(200); // v3 waits behind it
      await eventsFannedOut(worker!, 30_000);
      expect(await cli('targets', 'resync', 'late', '--force')).toMatchObject({ target: 'late' });
      release();
      await eventually(() => receiver.accepted().some((c) => userOf(c) === id && c.body.data.version === 3), 120_000, 200);
      const v3 = (await stack.api.models.ProviderUser.findOne({ external_provider_id: id }).lean())!.last_event.id;
      const queue = worker!.deps.deliveries.get('late')!;
      const sentIt = (await queue.getJobs(['completed'], 0, -1)).find((j) => (j.returnvalue as { sent?: string[] } | undefined)?.sent?.includes(v3));
      expect(sentIt?.id, 'the job that sent v3').toBeDefined();
      expect(sentIt!.id!.startsWith('resync.'), `v3 went out as ${sentIt!.id} (priority ${sentIt!.priority})`).toBe(false);
    } finally {
      release();
      receiver.respond = () => ({ status: 200 });
    }
  }, 240_000);
});
