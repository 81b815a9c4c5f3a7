import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { resyncTarget } from '@connect/shared';
import { startDeliveryStack, target, type DeliveryStack } from '../support/delivery-stack.ts';
import { postUser } from '../support/harness.ts';
import { eventually, startReceiver, userOf, type Receiver } from './callback-receiver.ts';

vi.setConfig({ testTimeout: 60_000 });

/**
 * `targets resync --force` sends a target that lost its data user.created, then the newest. Its
 * retries sent user.created again each time: a target that failed every other callback took
 * user.created and refused the newest at every retry, for ever (the delivery property test found
 * it, with a sick target answering ok, 503, ok, 500, ...).
 */

let failEveryOther = false;
let seen = 0;
let receiver: Receiver;
let stack: DeliveryStack;

beforeAll(async () => {
  receiver = await startReceiver(() => (failEveryOther && seen++ % 2 === 1 ? { status: 503 } : { status: 200 }));
  stack = await startDeliveryStack({ label: 'forced_retry', targets: [target('sick', receiver.url)] });
});

afterAll(async () => {
  await stack?.close();
  await receiver?.close();
});

describe('a forced resync retried', () => {
  it('sends user.created once, then only what is still missing: a target failing every other callback gets the newest on the retry', async () => {
    const { api, worker, token, clinic } = stack;
    const id = `forced-${randomUUID()}`;
    expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
    expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id, settings: { speech_locale: 'FRENCH_FR' } })).status).toBe(200);
    await eventually(() => expect(receiver.accepted().filter((c) => userOf(c) === id).map((c) => c.body.data.version)).toContain(2), 20_000);

    failEveryOther = true;
    const before = receiver.received.length;
    await resyncTarget({ store: worker.deps.store, queues: worker.deps.deliveries, targets: [{ name: 'sick' }] }, { target: 'sick', organizationId: clinic.organization._id, force: true });
    // user.created (200), the update (503), then the retry: the update alone (200).
    await eventually(() => expect(receiver.accepted().slice(before).filter((c) => userOf(c) === id && c.body.data.version === 2)).toHaveLength(1), 20_000);
    const trail = receiver.received.slice(before).filter((c) => userOf(c) === id).map((c) => `${c.body.type} v${c.body.data.version} ${c.answered}`);
    expect(trail).toEqual(['user.created v1 200', 'user.updated v2 503', 'user.updated v2 200']);
  });
});
