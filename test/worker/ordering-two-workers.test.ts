import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { getToken, postUser, registerTestClient, startTestApi, type TestApi, type TestClient } from '../support/harness.ts';
import { eventually, startReceiver, type Receiver } from './callback-receiver.ts';
import { startTestWorker, type TestWorker } from './worker-under-test.ts';

// Real processes, FerretDB and retries: generous on a loaded two-core CI machine.
vi.setConfig({ testTimeout: 90_000 });

/**
 * docs/contract.md, Events, order with more than one worker process: deliveries for one (user,
 * target) never run at the same time (BullMQ deduplication per user and target),
 * so a target never sees an older version after a newer one, whichever worker
 * picks which job.
 */

let api: TestApi;
let workers: TestWorker[] = [];
let clinic: TestClient;
let token: string;
let receiver: Receiver;

beforeAll(async () => {
  // Random small delays so the two workers' jobs interleave differently on every run.
  receiver = await startReceiver(() => ({ status: 200, delayMs: 20 + Math.floor(Math.random() * 25) }));
  const targets = [{ name: 'dictation', url: receiver.url, secrets: ['order-secret'], timeout_ms: 5000 }];
  api = await startTestApi({ label: 'worker_ordering', env: { DOWNSTREAM_TARGETS: JSON.stringify(targets) } });
  // One delivery at a time per worker: while one worker holds a user's callback, the other
  // users' jobs wait in the queue for the other worker, so both take part (asserted below).
  workers = await Promise.all([startTestWorker(api.env, { concurrency: 1 }), startTestWorker(api.env, { concurrency: 1 })]);
  clinic = await registerTestClient(api.models);
  token = await getToken(api, clinic);
});

afterAll(async () => {
  await Promise.all(workers.map((w) => w.close()));
  await api?.close();
  await receiver?.close();
});

describe('two workers, three users updated 12 times each, all at once', () => {
  it('each user’s versions never go back, created first, ending at 13', async () => {
    const ids = [0, 1, 2].map((i) => `order-${i}-${Date.now()}`);
    for (const id of ids) expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
    await Promise.all(
      ids.flatMap((id) =>
        Array.from({ length: 12 }, (_, i) =>
          postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id, settings: { speech_locale: i % 2 ? 'ENGLISH_UK' : 'ENGLISH_US', specialty: { kind: 'OTHER', other_specialty_name: `s${i}` } } }),
        ),
      ),
    );
    const versionsOf = (id: string) => receiver.received.filter((c) => c.body.data.user.external_provider_id === id).map((c) => c.body.data.version as number);
    await eventually(() => {
      for (const id of ids) expect(versionsOf(id).at(-1)).toBe(13);
    }, 20_000);
    for (const id of ids) {
      const calls = receiver.received.filter((c) => c.body.data.user.external_provider_id === id);
      const v = versionsOf(id);
      expect(v[0]).toBe(1);
      // Never older after newer; a repeat is only an at-least-once duplicate of the same event id.
      for (let i = 1; i < v.length; i++) {
        expect(v[i], JSON.stringify(v)).toBeGreaterThanOrEqual(v[i - 1]!);
        if (v[i] === v[i - 1]) expect(calls[i]!.body.request_uuid).toBe(calls[i - 1]!.body.request_uuid);
      }
    }
    const sentBy = (w: TestWorker) => w.logs.lines.filter((l) => l.includes('callback delivered')).length;
    // A worker logs a delivery just after the receiver answered it: wait for the last log lines.
    await eventually(() => expect(sentBy(workers[0]!) + sentBy(workers[1]!)).toBe(receiver.received.length), 10_000);
    const perWorker = workers.map(sentBy);
    console.log(`[ordering] callbacks per user (of 13 versions, the rest coalesced): ${ids.map((id) => versionsOf(id).length).join(', ')}; sent per worker: ${perWorker.join(', ')}`);
    // The title's "two workers": each of them delivered some of these callbacks, and together all of them.
    expect(perWorker.every((n) => n > 0), `sent per worker: ${perWorker.join(', ')}`).toBe(true);

  });
});
