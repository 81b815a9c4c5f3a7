import { afterAll, beforeAll, describe, it, vi } from 'vitest';
import { startDeliveryStack, target, type DeliveryStack } from '../support/delivery-stack.ts';
import { databaseUrl } from '../support/harness.ts';
import { startReceiver, type Receiver } from '../worker/callback-receiver.ts';
import { workerUnderFault } from './fault-scenario.ts';
import { startToxiproxy, type FaultName, type Proxy, type Toxiproxy } from './toxiproxy.ts';

// Real network faults on FerretDB over a loaded two-core machine: generous.
vi.setConfig({ testTimeout: 240_000 });

/**
 * Toxiproxy between the worker and its database; the API reaches the database directly. Under
 * each fault the API keeps accepting changes (it does not depend on the worker), and once the
 * fault is gone the worker finds its database again by itself, no restart, and every accepted
 * change reaches both targets in per-user order, nothing dead-lettered: a failure of the
 * worker's own database is ours, not the targets' (docs/delivery.md, Retries).
 *
 * The worker's database link was cut by one test only, and a MongoDB client that never found its
 * server again after such a cut (the driver patch of docs/operations.md) showed there alone, and
 * only on a loaded machine.
 */

let toxiproxy: Toxiproxy;
let link: Proxy;
let stack: DeliveryStack;
let a: Receiver;
let b: Receiver;

beforeAll(async () => {
  toxiproxy = await startToxiproxy();
  const direct = databaseUrl('faults_worker_db');
  const proxied = await toxiproxy.link('worker-database', direct);
  link = proxied.proxy;
  [a, b] = await Promise.all([startReceiver(), startReceiver()]);
  stack = await startDeliveryStack({
    label: 'faults_worker_db',
    targets: [target('target-a', a.url), target('target-b', b.url)],
    api: { mongoUrl: direct },
    workerEnv: { MONGO_URL: proxied.url },
  });
});

afterAll(async () => {
  await stack?.close();
  await Promise.all([a?.close(), b?.close()]);
  await toxiproxy?.stop();
});

describe('Toxiproxy between the worker and the database', () => {
  it.each<FaultName>(['latency2s', 'resetPeer', 'blackHole', 'trickle'])('%s: the API answers, the worker recovers by itself once the fault is gone, nothing dead-lettered or lost, order kept', async (fault) => {
    await workerUnderFault({ api: stack.api, token: stack.token, link, fault, receivers: [a, b], label: 'worker→database', holdMs: 6000 });
  });
});
