import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { deliveryPolicyFromEnv } from '@connect/shared';
import { startDeliveryStack, target, type DeliveryStack } from '../support/delivery-stack.ts';
import { postUser, type TestApi } from '../support/harness.ts';
import { eventually, sleep, startReceiver, userOf, type Receiver } from './callback-receiver.ts';
import type { TestWorker } from './worker-under-test.ts';

vi.setConfig({ testTimeout: 240_000 });

/**
 * A receiver down for 60 s while 50 changes are made (docs/delivery.md, target
 * health): with a retry schedule far shorter than the outage (1s,1s: three
 * attempts), nothing is dead-lettered, because after 3 failures the target is
 * `failing` and its deliveries are held without spending their schedule; only
 * probes reach the receiver. When it comes back, every user's newest version
 * arrives, in per-user order.
 */

const OUTAGE_MS = 60_000;
const USERS = 10;
const UPDATES_PER_USER = 4; // + 1 creation each: 50 changes

let stack: DeliveryStack;
let api: TestApi;
let worker: TestWorker;
let receiver: Receiver;
let token: string;
let down = false;

beforeAll(async () => {
  // Down: 503 without Retry-After (a generic failure; Retry-After has its own test).
  receiver = await startReceiver(() => (down ? { status: 503 } : { status: 200 }));
  stack = await startDeliveryStack({
    label: 'worker_target_outage',
    targets: [target('dictation', receiver.url, { timeout_ms: 2000 })],
    api: { env: { WORKER_RETRY_SCHEDULE: '1s,1s', TARGET_FAILURE_THRESHOLD: '3', TARGET_PROBE_INTERVAL: '1s', TARGET_PROBE_MAX_INTERVAL: '5s' } },
    // The policy exactly as the worker process reads these variables (probe interval shortened
    // from 30 s / 10 min so the test takes a minute, not an hour).
    worker: (env) => ({ policy: deliveryPolicyFromEnv(env) }),
  });
  ({ api, worker, token } = stack);
});

afterAll(async () => {
  await stack?.close();
  await receiver?.close();
});

describe('a receiver down for 60 s', () => {
  it('0 dead letters, every final version delivered after it returns, per-user order kept, only probes during the outage', async () => {
    const ids = Array.from({ length: USERS }, (_, i) => `outage-${i}-${Date.now()}`);
    const locales = ['ENGLISH_US', 'ITALIAN_IT', 'FRENCH_FR', 'GERMAN_DE', 'SPANISH_ES'];
    down = true;
    const outageStart = Date.now();
    // 50 changes spread over the first 40 s of the outage.
    let changes = 0;
    for (let round = 0; round <= UPDATES_PER_USER; round++) {
      for (const id of ids) {
        const res = await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id, settings: { speech_locale: locales[round] } });
        expect(res.status).toBe(round === 0 ? 201 : 200);
        expect(res.body.version).toBe(round + 1);
        changes++;
        await sleep(800);
      }
    }
    expect(changes).toBe(USERS * (UPDATES_PER_USER + 1));
    await eventually(async () => expect((await worker.deps.health.get('dictation')).state).toBe('failing'), 30_000);
    await sleep(Math.max(0, outageStart + OUTAGE_MS - Date.now()));
    down = false;
    const outageEnd = Date.now();
    const duringOutage = receiver.received.filter((c) => c.at >= outageStart && c.at < outageEnd).length;

    // Every user's final version (5) accepted.
    const finalVersion = UPDATES_PER_USER + 1;
    await eventually(() => ids.every((id) => receiver.accepted().some((c) => userOf(c) === id && c.body.data.version === finalVersion)), 90_000, 200);
    const drainedAt = Math.max(...ids.map((id) => receiver.accepted().find((c) => userOf(c) === id && c.body.data.version === finalVersion)!.answeredAt!));
    const deadLetters = await worker.deps.models.Delivery.countDocuments({ target: 'dictation', status: 'failed' });
    const deliveredAfter = receiver.accepted().filter((c) => c.at >= outageEnd).length;
    const probes = await worker.deps.models.DeliveryAttempt.countDocuments({ target: 'dictation', probe: true });
    console.log(
      `[target outage] changes made: ${changes}; requests that reached the dead receiver in ${OUTAGE_MS / 1000} s: ${duringOutage} (probes among all attempts: ${probes}); ` +
        `dead letters: ${deadLetters}; callbacks delivered after recovery: ${deliveredAfter}; time to drain after recovery: ${drainedAt - outageEnd} ms`,
    );

    expect(deadLetters).toBe(0);
    expect(duringOutage).toBeLessThan(60);
    for (const id of ids) {
      const seen = receiver.accepted().filter((c) => userOf(c) === id).map((c) => c.body.data.version as number);
      expect(seen[0], id).toBe(1); // user.created first
      expect(seen, id).toEqual([...seen].sort((a, b) => a - b)); // never an older version after a newer one
      expect(seen.at(-1), id).toBe(finalVersion);
    }
    expect((await worker.deps.health.get('dictation')).state).toBe('healthy');
    // Nothing left behind: no delivery of this target still pending.
    await eventually(async () => expect(await worker.deps.models.Delivery.countDocuments({ target: 'dictation', status: 'pending' })).toBe(0), 20_000);
  });
});
