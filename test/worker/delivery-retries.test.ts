import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { listDeliveries, replayAllFailed, replayDelivery } from '@connect/shared';
import { startDeliveryStack, type DeliveryStack } from '../support/delivery-stack.ts';
import { getUser, postUser, type TestApi } from '../support/harness.ts';
import { eventually, startReceiver, userOf, type Answer, type Receiver } from './callback-receiver.ts';
import type { TestWorker } from './worker-under-test.ts';

// Real processes, FerretDB and retries: generous on a loaded two-core CI machine.
vi.setConfig({ testTimeout: 90_000 });

/**
 * docs/contract.md, Events, retries: 2xx is success; 408, 425, 429, 5xx, timeouts and network
 * errors are retried with backoff, honouring Retry-After; other 4xx fail at once
 * and are dead-lettered, visible and replayable.
 */

let stack: DeliveryStack;
let api: TestApi;
let worker: TestWorker;
let token: string;
let receiver: Receiver;
/** Per external_provider_id: the answers to give, in order; once used up, 200. */
const script = new Map<string, Answer[]>();

const callsFor = (id: string) => receiver.received.filter((c) => userOf(c) === id);
let seq = 0;
const nextId = (label: string) => `${label}-${++seq}-${Date.now()}`;
const replayDeps = () => ({ store: worker.deps.store, queues: worker.deps.deliveries, targets: worker.deps.config.downstreamTargets });

beforeAll(async () => {
  receiver = await startReceiver((c) => script.get(userOf(c))?.shift() ?? { status: 200 });
  stack = await startDeliveryStack({
    label: 'worker_retries',
    targets: [{ name: 'dictation', url: receiver.url, secrets: ['retry-secret'], timeout_ms: 1000 }],
    // 4 attempts, the largest step 2.5 s: Retry-After is honoured up to an hour whatever the steps (the 3 s Retry-After test below).
    worker: { policy: { retryScheduleMs: [200, 400, 2500] } },
  });
  ({ api, worker, token } = stack);
});

afterAll(async () => {
  await stack?.close();
  await receiver?.close();
});

async function createUser(id: string): Promise<void> {
  const res = await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id });
  expect(res.status).toBe(201);
}

const rowOf = async (id: string) => (await worker.deps.models.Delivery.find({ external_provider_id: id }).lean())[0];

describe('retryable answers are retried with backoff', () => {
  it('500, 500, then 200: delivered on the third attempt, attempts recorded, same event id each time', async () => {
    const id = nextId('flaky');
    script.set(id, [{ status: 500 }, { status: 503 }]);
    await createUser(id);
    await eventually(async () => expect((await rowOf(id))?.status).toBe('delivered'));
    const calls = callsFor(id);
    expect(calls.map((c) => c.answered)).toEqual([500, 503, 200]);
    expect(new Set(calls.map((c) => c.body.request_uuid)).size).toBe(1);
    expect(calls[1]!.at - calls[0]!.at).toBeGreaterThanOrEqual(100); // backoff base 200 ms, jitter down to half
    const row = (await rowOf(id))!;
    expect(row).toMatchObject({ status: 'delivered', attempts: 3, last_status_code: 200, last_error: null });
    // The Delivery row is written first, then SyncState: GET catches up a moment later.
    await eventually(async () =>
      expect((await getUser(api, token, id)).body.sync).toEqual([
        { target: 'dictation', status: 'delivered', version: 1, attempts: 3, last_attempt_at: expect.any(String), last_error: null },
      ]),
    );
  });

  it("a user.created that keeps failing while the user moves to version 2: the user's sync is about version 2 and says the failures were on user.created, sent first", async () => {
    const id = nextId('created-failing');
    script.set(id, [{ status: 500 }, { status: 500 }, { status: 500 }]);
    await createUser(id);
    await eventually(async () => expect(callsFor(id).length).toBeGreaterThanOrEqual(1));
    const update = await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id, settings: { speech_locale: 'FRENCH_FR' } });
    expect(update.status).toBe(200);
    // Between the third failure and the fourth attempt (2.5 s): the runs now aim at version 2.
    await eventually(async () =>
      expect((await getUser(api, token, id)).body.sync[0]).toMatchObject({ status: 'pending', version: 2, last_error: 'HTTP 500 (on user.created, sent first)' }),
    );
    await eventually(async () => expect((await getUser(api, token, id)).body.sync[0]).toMatchObject({ status: 'delivered', version: 2, last_error: null }), 15_000);
    expect(callsFor(id).map((c) => [c.body.type, c.answered])).toEqual([
      ['user.created', 500],
      ['user.created', 500],
      ['user.created', 500],
      ['user.created', 200],
      ['user.updated', 200],
    ]);
  });

  it('a timeout is retried like a 5xx', async () => {
    const id = nextId('slow');
    script.set(id, [{ status: 200, delayMs: 1500 }]);
    await createUser(id);
    await eventually(async () => expect((await rowOf(id))?.status).toBe('delivered'));
    expect(callsFor(id)).toHaveLength(2);
    expect((await rowOf(id))!.attempts).toBe(2);
  });

  it('429 with Retry-After: 3 waits at least 3 s before the next attempt, longer than any step of the schedule', async () => {
    const id = nextId('throttled');
    script.set(id, [{ status: 429, headers: { 'retry-after': '3' } }]);
    await createUser(id);
    await eventually(async () => expect((await rowOf(id))?.status).toBe('delivered'), 10_000);
    const [first, second] = callsFor(id);
    expect(first!.answered).toBe(429);
    expect(second!.answered).toBe(200);
    expect(second!.at - first!.answeredAt!).toBeGreaterThanOrEqual(3000);
  });

  it('after the last attempt the delivery is dead-lettered (failed), with the last error', async () => {
    const id = nextId('down-for-good');
    script.set(id, Array.from({ length: 4 }, () => ({ status: 502 })));
    await createUser(id);
    await eventually(async () => expect((await rowOf(id))?.status).toBe('failed'), 10_000);
    expect(callsFor(id)).toHaveLength(4);
    expect(await rowOf(id)).toMatchObject({ attempts: 4, last_status_code: 502, last_error: 'HTTP 502' });
    await eventually(async () =>
      expect((await getUser(api, token, id)).body.sync[0]).toMatchObject({ status: 'failed', version: 1, attempts: 4, last_error: 'HTTP 502' }),
    );
  });

  it("replayed, the dead letter's attempts go on counting: the user's sync says 4, as `deliveries show` does, not the replay job's 1", async () => {
    // A success first: the test before left the target 4 failures in a row, one short of failing (held, not dead-lettered).
    const ok = nextId('healthy-again');
    await createUser(ok);
    await eventually(async () => expect((await rowOf(ok))?.status).toBe('delivered'), 10_000);
    const id = nextId('replay-counted');
    script.set(id, [{ status: 502 }, { status: 502 }, { status: 400 }]);
    await createUser(id);
    await eventually(async () => expect((await rowOf(id))?.status).toBe('failed'), 10_000);
    expect(await rowOf(id)).toMatchObject({ attempts: 3 });
    await replayDelivery(replayDeps(), (await rowOf(id))!._id);
    await eventually(async () => expect((await rowOf(id))?.status).toBe('delivered'), 10_000);
    expect(await rowOf(id)).toMatchObject({ attempts: 4 });
    await eventually(async () => expect((await getUser(api, token, id)).body.sync[0]).toMatchObject({ status: 'delivered', version: 1, attempts: 4, last_error: null }));
    // A new version starts its own count.
    expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id, settings: { speech_locale: 'GERMAN_DE' } })).body.version).toBe(2);
    await eventually(async () => expect((await getUser(api, token, id)).body.sync[0]).toMatchObject({ status: 'delivered', version: 2, attempts: 1 }));
  });
});

describe('other 4xx fail at once and are dead-lettered, then replayable', () => {
  it('400: no retry, listed as failed, delivered by replayDelivery once the receiver is fixed', async () => {
    const id = nextId('refused');
    script.set(id, [{ status: 400 }, { status: 400 }, { status: 400 }]);
    await createUser(id);
    await eventually(async () => expect((await rowOf(id))?.status).toBe('failed'));
    const failed = await listDeliveries(worker.deps.store, { status: 'failed' });
    const dead = failed.find((d) => d.external_provider_id === id)!;
    // No retry is coming: BullMQ holds the job as failed (a retry would keep it delayed).
    await eventually(async () => expect(await worker.deps.deliveries.get('dictation')!.getJobState(dead.id)).toBe('failed'));
    expect(callsFor(id).map((c) => c.answered)).toEqual([400]);
    expect(dead).toMatchObject({ status: 'failed', target: 'dictation', event_type: 'user.created', version: 1, attempts: 1, last_status_code: 400, last_error: 'HTTP 400' });
    expect(JSON.stringify(failed)).not.toContain('@example.com');

    script.set(id, []); // the receiver is fixed
    const replayed = await replayDelivery(replayDeps(), dead.id);
    expect(replayed.status).toBe('pending');
    await eventually(async () => expect((await rowOf(id))?.status).toBe('delivered'));
    const calls = callsFor(id);
    expect(calls.map((c) => c.answered)).toEqual([400, 200]);
    expect(calls[1]!.body.request_uuid).toBe(calls[0]!.body.request_uuid);
    expect((await listDeliveries(worker.deps.store, { status: 'failed' })).some((d) => d.id === dead.id)).toBe(false);
    await eventually(async () => expect((await getUser(api, token, id)).body.sync[0]).toMatchObject({ status: 'delivered', version: 1 }));
    await expect(replayDelivery(replayDeps(), dead.id)).rejects.toThrow(/only failed deliveries/);
  });

  it('replayAllFailed re-sends every dead letter, from the user’s current document', async () => {
    const id = nextId('refused-all');
    script.set(id, [{ status: 404 }]);
    await createUser(id);
    await eventually(async () => expect((await rowOf(id))?.status).toBe('failed'));
    const result = await replayAllFailed(replayDeps());
    expect(result.replayed.map((d) => d.external_provider_id)).toContain(id);
    await eventually(async () => expect((await rowOf(id))?.status).toBe('delivered'));
    expect(callsFor(id).map((c) => c.answered)).toEqual([404, 200]);
  });
});

describe('docs/contract.md, Events, order: user.created before any update, even through dead letters', () => {
  it('a target that refused user.created gets it again before the update; both are dead letters, replayed in order', async () => {
    const id = nextId('created-first');
    script.set(id, [{ status: 400 }, { status: 400 }]);
    await createUser(id);
    await eventually(async () => expect((await rowOf(id))?.status).toBe('failed'));
    const updated = await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id, settings: { speech_locale: 'ITALIAN_IT' } });
    expect(updated.body.version).toBe(2);
    const rows = async () => (await worker.deps.models.Delivery.find({ external_provider_id: id }).sort({ version: 1 }).lean()).map((r) => [r.version, r.status]);
    await eventually(async () => expect(await rows()).toEqual([[1, 'failed'], [2, 'failed']]));
    // The update was never sent: its job tried user.created first, and that was refused.
    expect(callsFor(id).map((c) => [c.body.type, c.answered])).toEqual([['user.created', 400], ['user.created', 400]]);

    await replayAllFailed(replayDeps());
    await eventually(async () => expect(await rows()).toEqual([[1, 'delivered'], [2, 'delivered']]));
    // A later update, delivered after anything still due for this user and target, closes the list.
    expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id, settings: { speech_locale: 'ENGLISH_US' } })).body.version).toBe(3);
    await eventually(async () => expect(await rows()).toEqual([[1, 'delivered'], [2, 'delivered'], [3, 'delivered']]));
    expect(callsFor(id).map((c) => [c.body.type, c.body.data.version, c.answered])).toEqual([
      ['user.created', 1, 400],
      ['user.created', 1, 400],
      ['user.created', 1, 200],
      ['user.updated', 2, 200],
      ['user.updated', 3, 200],
    ]);
  });
});
