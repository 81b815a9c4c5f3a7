import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startDeliveryStack, target, type DeliveryStack } from '../support/delivery-stack.ts';
import { postUser } from '../support/harness.ts';
import { eventually, startReceiver, userOf, type Receiver } from './callback-receiver.ts';

vi.setConfig({ testTimeout: 120_000 });

/**
 * docs/delivery.md: a slow or failing target never delays another, also when they share a host
 * and port (several targets behind one API gateway). Two targets there hold every request they get
 * unanswered, 64 each (their WORKER_CONCURRENCY); a third target there answers at once. Before,
 * the worker's one pool of 128 connections per host and port was full of the first two, and the
 * third waited for a connection with its timeout running (an audit measured 7.6 s medians).
 */

const STUCK_SLOTS = 64;
let stack: DeliveryStack;
let receiver: Receiver;

beforeAll(async () => {
  receiver = await startReceiver((c) => (c.path.startsWith('/stuck') ? { status: 200, hold: true } : { status: 200 }));
  const origin = new URL(receiver.url).origin;
  stack = await startDeliveryStack({
    label: 'worker_shared_host',
    targets: [
      target('stuck-a', `${origin}/stuck-a`, { timeout_ms: 120_000 }),
      target('stuck-b', `${origin}/stuck-b`, { timeout_ms: 120_000 }),
      target('ok', `${origin}/ok`, { timeout_ms: 5000 }),
    ],
    worker: { concurrency: STUCK_SLOTS },
  });
});

afterAll(async () => {
  // The held requests end first (their sockets closed), so the worker's stop does not wait on them.
  await receiver?.close();
  await stack?.close();
});

const create = (id: string) => postUser(stack.api, stack.token, { provider_email: `${id}@example.com`, external_provider_id: id }).then((res) => expect(res.status).toBe(201));
const held = () => receiver.received.filter((c) => c.path.startsWith('/stuck') && c.answered === null);
const okUsers = () => new Set(receiver.received.filter((c) => c.path === '/ok' && c.answered === 200).map(userOf));

describe('targets on one host and port', () => {
  it('two of them holding 128 requests unanswered, the third still receives each new user (it waited for their timeouts)', async () => {
    const stamp = Date.now();
    const first = Array.from({ length: STUCK_SLOTS }, (_, i) => `shared-host-${i}-${stamp}`);
    for (let i = 0; i < first.length; i += 8) await Promise.all(first.slice(i, i + 8).map(create));
    // Every slot of the two stuck targets is in use: 128 requests on the one host and port, unanswered.
    await eventually(() => expect(held()).toHaveLength(2 * STUCK_SLOTS), 60_000, 200);

    const later = Array.from({ length: 5 }, (_, i) => `shared-host-later-${i}-${stamp}`);
    await Promise.all(later.map(create));
    await eventually(() => expect([...later].filter((id) => !okUsers().has(id))).toEqual([]), 30_000, 200);
    expect(first.filter((id) => !okUsers().has(id))).toEqual([]);
    // The stuck ones are still held: the third target did not get through by their giving up.
    expect(held()).toHaveLength(2 * STUCK_SLOTS);
  });
});
