/**
 * A delivery run that lost its job's lock (its worker paused, or cut from Redis, longer than
 * the lock: BullMQ's stalled check then gives the job to another run) must not send anything
 * more from what it read before: another run may have sent newer versions meanwhile
 * (docs/delivery.md, "One delivery at a time"). The lock is taken from the run here by deleting
 * its key in Redis while the receiver holds the run's first callback, as an expiry would.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pauseTarget, resumeTarget } from '@connect/shared';
import { startDeliveryStack, target, type DeliveryStack } from '../support/delivery-stack.ts';
import { http, postUser } from '../support/harness.ts';
import { eventually, startReceiver, userOf, type Receiver } from './callback-receiver.ts';
import { eventsFannedOut } from './worker-under-test.ts';

let stack: DeliveryStack;
let receiver: Receiver;
let releaseFirst: () => void = () => undefined;
const firstHeld = new Promise<void>((resolve) => (releaseFirst = resolve));

beforeAll(async () => {
  // The first callback (the stale run's user.created) is answered only when the test says so.
  receiver = await startReceiver(async (req) => {
    if (req.n === 1) await firstHeld;
    return { status: 200 };
  });
  stack = await startDeliveryStack({
    label: 'lost_lock',
    targets: [target('t', receiver.url, { timeout_ms: 60_000 })],
    worker: { lockDurationMs: 4000, stalledIntervalMs: 500 },
  });
});

afterAll(async () => {
  releaseFirst();
  await stack?.close();
  await receiver?.close();
});

describe('a delivery run whose job lock lapsed', () => {
  it('sends nothing more once another run has the job: no older version after the newer ones that run sent', async () => {
    const admin = { health: stack.worker.deps.health, queues: stack.worker.deps.deliveries };
    const queue = stack.worker.deps.deliveries.get('t')!;
    const id = `lock-${Date.now().toString(36)}`;
    const body = (locale: string) => ({ provider_email: `${id}@example.com`, external_provider_id: id, settings: { speech_locale: locale } });
    // v1 and v2 wait together, so the run sends user.created (v1), then v2.
    await pauseTarget(admin, 't');
    expect((await postUser(stack.api, stack.token, body('ENGLISH_US'))).status).toBe(201);
    expect((await postUser(stack.api, stack.token, body('SPANISH_ES'))).status).toBe(200);
    await resumeTarget(admin, 't');
    await eventually(() => receiver.received.length === 1, 30_000);
    // The run waits on its first callback; its lock goes, as an expiry would take it.
    const [active] = await queue.getActive();
    expect(active).toBeDefined();
    await (await queue.client).del(`${queue.toKey(active!.id!)}:lock`);
    // The stalled check gives the job to a second run, which sends user.created and v2 itself.
    await eventually(() => receiver.accepted().some((c) => c.body.data.version === 2), 30_000);
    // A newer change goes out after it.
    expect((await postUser(stack.api, stack.token, body('FRENCH_FR'))).status).toBe(200);
    await eventually(() => receiver.accepted().some((c) => c.body.data.version === 3), 30_000);
    // The first run's callback is answered now: it must stop there, not send its v2.
    releaseFirst();
    await eventually(
      () => stack.worker.logs.lines.some((l) => l.includes('lost the job to another')) || receiver.received.filter((c) => c.body.data.version === 2).length > 1,
      30_000,
    );
    // Its failure handling (BullMQ finds the lock gone) is done once the job is settled again.
    await eventually(async () => (await queue.getJobCounts('active')).active === 0, 30_000);
    const versions = receiver.received.filter((c) => userOf(c) === id).map((c) => c.body.data.version as number);
    const afterV3 = versions.slice(versions.indexOf(3) + 1);
    expect(afterV3.filter((v) => v < 3), `versions in arrival order: ${versions.join(', ')}`).toEqual([]);
    expect(versions.filter((v) => v === 2)).toHaveLength(1);
    // Nor does it record the outcome of the callback it had in flight: the target's record stays
    // where the run that owns the job left it (delivered, v3), not set back to its stale v2.
    const user = (await stack.api.models.ProviderUser.findOne({ external_provider_id: id }).lean())!;
    const sync = await stack.worker.deps.store.readSync(user._id.toString(), 't');
    expect(sync).toMatchObject({ status: 'delivered', version: 3, delivered_version: 3 });
  });
});

describe('a run that found the target without the user, whose lock lapses while its newest event is out', () => {
  it('has recorded that newest as sent: the next run never sends the change of status it skipped after it', async () => {
    // docs/delivery.md, "Status changes": the run sends user.created and the newest version, not
    // the user's reactivation in between. Losing the job during the newest's callback, it records
    // no outcome; the run that takes the job over finds the target at version 1 and must still
    // know the newer version went out, or it sends the reactivation (v3) after v4.
    const admin = { health: stack.worker.deps.health, queues: stack.worker.deps.deliveries };
    const queue = stack.worker.deps.deliveries.get('t')!;
    const next = { 'x-nabla-api-version': 'x-nabla-next' };
    const id = `lock-status-${Date.now().toString(36)}`;
    const body = (locale: string) => ({ provider_email: `${id}@example.com`, external_provider_id: id, settings: { speech_locale: locale } });
    let releaseNewest!: () => void;
    const newestHeld = new Promise<void>((resolve) => (releaseNewest = resolve));
    let held = false;
    receiver.respond = async (req) => {
      if (userOf(req) === id && req.body.data.version === 4 && !held) {
        held = true;
        await newestHeld;
      }
      return { status: 200 };
    };
    const lostBefore = stack.worker.logs.lines.filter((l) => l.includes('lost the job to another')).length;
    await pauseTarget(admin, 't');
    try {
      expect((await postUser(stack.api, stack.token, body('ENGLISH_US'), next)).status).toBe(201);
      const del = await http(`${stack.api.baseUrl}/users/${encodeURIComponent(id)}`, { method: 'DELETE', headers: { authorization: `Bearer ${stack.token}`, ...next } });
      expect(del.body.version).toBe(2);
      expect((await postUser(stack.api, stack.token, body('ENGLISH_US'), next)).body).toMatchObject({ version: 3, status: 'active' });
      expect((await postUser(stack.api, stack.token, body('GERMAN_DE'), next)).body.version).toBe(4);
      await eventsFannedOut(stack.worker, 30_000);
      await resumeTarget(admin, 't');
      await eventually(() => held, 30_000);
      // The run waits on the newest's callback; its lock goes, as an expiry (or a killed worker) would take it.
      const [active] = await queue.getActive();
      expect(active).toBeDefined();
      await (await queue.client).del(`${queue.toKey(active!.id!)}:lock`);
      // The run that takes the job over sends v4 again (the first one was never answered).
      await eventually(() => receiver.accepted().some((c) => userOf(c) === id && c.body.data.version === 4), 30_000);
      releaseNewest();
      // The first run stops once its callback is answered: it no longer owns the job.
      await eventually(() => stack.worker.logs.lines.filter((l) => l.includes('lost the job to another')).length > lostBefore, 30_000);
      await eventually(async () => (await queue.getJobCounts('active')).active === 0, 30_000);
      expect(receiver.received.filter((c) => userOf(c) === id).map((c) => [c.body.type, c.body.data.version, c.answered])).toEqual([
        ['user.created', 1, 200],
        ['user.updated', 4, 200],
        ['user.updated', 4, 200],
      ]);
      const user = (await stack.api.models.ProviderUser.findOne({ external_provider_id: id }).lean())!;
      await eventually(async () => expect(await stack.worker.deps.store.readSync(user._id.toString(), 't')).toMatchObject({ status: 'delivered', version: 4, delivered_version: 4, sent_version: 4 }), 10_000);
    } finally {
      releaseNewest();
      await resumeTarget(admin, 't');
      receiver.respond = () => ({ status: 200 });
    }
  });
});
