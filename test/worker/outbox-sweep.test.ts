import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger, OutboxRelay, SWEEP_CURSOR_ID, type ProviderUserDoc } from '@connect/shared';
import { startOutboxSweep } from '@connect/worker';
import { getToken, postUser, registerTestClient, startTestApi, type TestApi } from '../support/harness.ts';
import { eventually, sleep } from './callback-receiver.ts';

/**
 * The outbox sweep (docs/delivery.md), on its own: it publishes what the relay missed, moves its
 * cursor only past users older than the safety lag, and — the part a benchmark
 * caught — does not re-read a full batch in a tight loop while the cursor cannot
 * move (every user younger than the lag, writes still coming in).
 */

let api: TestApi;
const ids: string[] = [];
const silent = createLogger('silent', 'sweep-test');

beforeAll(async () => {
  api = await startTestApi({ label: 'outbox_sweep' });
  const client = await registerTestClient(api.models);
  const token = await getToken(api, client);
  for (let i = 0; i < 6; i++) {
    const id = `sweep-${i}-${Date.now()}`;
    ids.push(id);
    expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
  }
  await api.deps.relay.drain();
});

afterAll(async () => {
  await api?.close();
});

const relayAt = (offsetMs: number) => new OutboxRelay({ models: api.models, queue: api.deps.queue, log: silent, now: () => new Date(Date.now() + offsetMs) });
const cursor = () => api.models.RelayCursor.findById(SWEEP_CURSOR_ID).lean();

describe('outbox sweep', () => {
  it('with every user inside the safety lag: reads a batch, publishes nothing twice, leaves the cursor, and does not spin', async () => {
    await api.models.RelayCursor.deleteMany({});
    const first = await relayAt(0).sweep(2);
    expect(first).toEqual({ scanned: 2, published: 0, failed: false, passedAll: false });
    expect(await cursor()).toBeNull();

    // A full batch it cannot pass must wait for the interval, not run again at once.
    let passes = 0;
    const relay = relayAt(0);
    const counting = { sweep: (n: number) => (passes++, relay.sweep(n)) } as unknown as OutboxRelay;
    const sweep = startOutboxSweep(counting, silent, 200, 2);
    await sleep(1000);
    await sweep.stop();
    console.log(`[outbox sweep] ${passes} passes in 1 s at a 200 ms interval with a full batch inside the lag`);
    expect(passes).toBeGreaterThanOrEqual(2);
    expect(passes).toBeLessThanOrEqual(8);
    expect(await cursor()).toBeNull();
  });

  it('past the lag: passes full batches back to back until it has seen every user, and republishes an event whose job is gone', async () => {
    await api.models.RelayCursor.deleteMany({});
    const victim = (await api.models.ProviderUser.findOne({ external_provider_id: ids[3] }).lean<ProviderUserDoc>())!;
    // As if Redis had lost it: the job is the only record that the event was published.
    await (await api.deps.queue.getJob(victim.last_event.id))!.remove();
    expect(await api.deps.relay.publishedAmong([victim.last_event.id])).toEqual(new Set());

    const later = relayAt(60_000);
    const one = await later.sweep(2);
    expect(one).toMatchObject({ scanned: 2, failed: false, passedAll: true });

    let passes = 0;
    const counting = { sweep: (n: number) => (passes++, later.sweep(n)) } as unknown as OutboxRelay;
    const sweep = startOutboxSweep(counting, silent, 60_000, 2);
    const last = (await api.models.ProviderUser.find().sort({ updated_at: -1, _id: -1 }).limit(1).lean<ProviderUserDoc[]>())[0]!;
    await eventually(async () => expect(String((await cursor())?.user_id)).toBe(String(last._id)), 10_000);
    await sweep.stop();
    // 6 users, 2 already passed, batches of 2: two more full passes and one that finds the end.
    expect(passes).toBeGreaterThanOrEqual(2);
    expect((await api.deps.queue.getJob(victim.last_event.id))?.data.event.id).toBe(victim.last_event.id);
    expect(await api.deps.relay.publishedAmong([victim.last_event.id, 'never-published'])).toEqual(new Set([victim.last_event.id]));
  });
});
