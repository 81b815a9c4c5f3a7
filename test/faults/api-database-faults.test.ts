import { afterAll, beforeAll, describe, it, vi } from 'vitest';
import { startDeliveryStack, target, type DeliveryStack } from '../support/delivery-stack.ts';
import { databaseUrl } from '../support/harness.ts';
import { startReceiver, type Receiver } from '../worker/callback-receiver.ts';
import { apiUnderFault } from './fault-scenario.ts';
import { startToxiproxy, type FaultName, type Proxy, type Toxiproxy } from './toxiproxy.ts';

// Real network faults on FerretDB over a loaded two-core machine: generous.
vi.setConfig({ testTimeout: 240_000 });

/**
 * Toxiproxy between the API and its database (the worker reaches the database
 * directly). Under each fault every request gets an answer within a bound
 * (2xx, or 503 service-unavailable with Retry-After), and once the fault is
 * gone every accepted change reaches every target, in order.
 */

let toxiproxy: Toxiproxy;
let link: Proxy;
let stack: DeliveryStack;
let a: Receiver;
let b: Receiver;

beforeAll(async () => {
  toxiproxy = await startToxiproxy();
  const direct = databaseUrl('faults_db');
  const proxied = await toxiproxy.link('api-database', direct);
  link = proxied.proxy;
  [a, b] = await Promise.all([startReceiver(), startReceiver()]);
  stack = await startDeliveryStack({
    label: 'faults_db',
    targets: [target('target-a', a.url), target('target-b', b.url)],
    api: { mongoUrl: proxied.url },
    workerEnv: { MONGO_URL: direct },
  });
});

afterAll(async () => {
  await stack?.close();
  await Promise.all([a?.close(), b?.close()]);
  await toxiproxy?.stop();
});

describe('Toxiproxy between the API and the database', () => {
  it.each<FaultName>(['latency2s', 'resetPeer', 'blackHole', 'trickle'])('%s: every request answered (2xx or 503 + Retry-After), nothing accepted lost, order kept, all delivered after', async (fault) => {
    await apiUnderFault({ api: stack.api, client: stack.clinic, token: stack.token, link, fault, receivers: [a, b], label: 'api→database' });
  });
});
