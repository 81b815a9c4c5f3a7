import { afterAll, beforeAll, describe, inject, it, vi } from 'vitest';
import { startDeliveryStack, target, type DeliveryStack } from '../support/delivery-stack.ts';
import { databaseUrl } from '../support/harness.ts';
import { startReceiver, type Receiver } from '../worker/callback-receiver.ts';
import { workerUnderFault } from './fault-scenario.ts';
import { startToxiproxy, type FaultName, type Proxy, type Toxiproxy } from './toxiproxy.ts';

// Real network faults on FerretDB over a loaded two-core machine: generous.
vi.setConfig({ testTimeout: 240_000 });

/**
 * Toxiproxy between the worker and one of its datastores; the API reaches it directly. Under each
 * fault the API keeps accepting changes (it does not depend on the worker), and once the fault is
 * gone the worker finds the datastore again by itself, no restart, and every accepted change
 * reaches both targets in per-user order, nothing dead-lettered: a failure of the worker's own
 * datastores is ours, not the targets' (docs/delivery.md, Retries).
 * - Database: until these tests, one test alone cut the worker's database link, and a MongoDB
 *   client that never found its server again after such a cut (the driver patch of
 *   docs/operations.md) showed there only, and only on a loaded machine.
 * - Redis: every connection of the worker goes through the fault (BullMQ's blocking ones, the
 *   queues', the publisher's); the events of the changes accepted meanwhile wait in the queue.
 */

describe.each([
  ['database', 'MONGO_URL', () => databaseUrl('faults_worker_db')],
  ['Redis', 'REDIS_URL', () => inject('redisUrl')],
] as const)('Toxiproxy between the worker and %s', (name, env, upstream) => {
  let toxiproxy: Toxiproxy;
  let link: Proxy;
  let stack: DeliveryStack;
  let a: Receiver;
  let b: Receiver;

  beforeAll(async () => {
    toxiproxy = await startToxiproxy();
    const direct = upstream();
    const proxied = await toxiproxy.link(`worker-${name.toLowerCase()}`, direct);
    link = proxied.proxy;
    [a, b] = await Promise.all([startReceiver(), startReceiver()]);
    stack = await startDeliveryStack({
      label: `faults_worker_${name.toLowerCase()}`,
      targets: [target('target-a', a.url), target('target-b', b.url)],
      api: env === 'MONGO_URL' ? { mongoUrl: direct } : {},
      workerEnv: { [env]: proxied.url },
    });
  });

  afterAll(async () => {
    await stack?.close();
    await Promise.all([a?.close(), b?.close()]);
    await toxiproxy?.stop();
  });

  it.each<FaultName>(['latency2s', 'resetPeer', 'blackHole', 'trickle'])('%s: the API answers, the worker recovers by itself once the fault is gone, nothing dead-lettered or lost, order kept', async (fault) => {
    await workerUnderFault({ api: stack.api, token: stack.token, link, fault, receivers: [a, b], label: `worker→${name}`, holdMs: 6000 });
  });
});
