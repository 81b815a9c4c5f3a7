import { afterAll, beforeAll, describe, inject, it, vi } from 'vitest';
import { startDeliveryStack, target, type DeliveryStack } from '../support/delivery-stack.ts';
import { startReceiver, type Receiver } from '../worker/callback-receiver.ts';
import { workerUnderFault } from './fault-scenario.ts';
import { startToxiproxy, type FaultName, type Proxy, type Toxiproxy } from './toxiproxy.ts';

// Real network faults on a loaded two-core machine: generous.
vi.setConfig({ testTimeout: 240_000 });

/**
 * Toxiproxy between the worker and Redis (every connection of the worker: BullMQ's blocking
 * ones, the queues', the publisher's); the API reaches Redis directly, so the events of the
 * changes it accepts during the fault wait in the queue. Once the fault is gone the worker takes
 * them by itself, no restart, and every accepted change reaches both targets in per-user order,
 * nothing dead-lettered.
 */

let toxiproxy: Toxiproxy;
let link: Proxy;
let stack: DeliveryStack;
let a: Receiver;
let b: Receiver;

beforeAll(async () => {
  toxiproxy = await startToxiproxy();
  const proxied = await toxiproxy.link('worker-redis', inject('redisUrl'));
  link = proxied.proxy;
  [a, b] = await Promise.all([startReceiver(), startReceiver()]);
  stack = await startDeliveryStack({
    label: 'faults_worker_redis',
    targets: [target('target-a', a.url), target('target-b', b.url)],
    workerEnv: { REDIS_URL: proxied.url },
  });
});

afterAll(async () => {
  await stack?.close();
  await Promise.all([a?.close(), b?.close()]);
  await toxiproxy?.stop();
});

describe('Toxiproxy between the worker and Redis', () => {
  it.each<FaultName>(['latency2s', 'resetPeer', 'blackHole', 'trickle'])('%s: the API answers, the worker recovers by itself once the fault is gone, nothing dead-lettered or lost, order kept', async (fault) => {
    await workerUnderFault({ api: stack.api, token: stack.token, link, fault, receivers: [a, b], label: 'worker→redis', holdMs: 6000 });
  });
});
