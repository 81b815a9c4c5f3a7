import { afterAll, beforeAll, describe, it, vi } from 'vitest';
import { databaseUrl, getToken, registerTestClient, startTestApi, type TestApi, type TestClient } from '../support/harness.ts';
import { startReceiver, type Receiver } from '../worker/callback-receiver.ts';
import { startTestWorker, type TestWorker } from '../worker/worker-under-test.ts';
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
let api: TestApi;
let worker: TestWorker;
let clinic: TestClient;
let token: string;
let a: Receiver;
let b: Receiver;

beforeAll(async () => {
  toxiproxy = await startToxiproxy();
  const direct = new URL(databaseUrl('faults_db'));
  link = await toxiproxy.proxy('api-database', direct.host);
  const proxied = new URL(direct);
  proxied.host = link.listen;
  [a, b] = await Promise.all([startReceiver(), startReceiver()]);
  const targets = [
    { name: 'target-a', url: a.url, secrets: ['a-secret'], timeout_ms: 5000 },
    { name: 'target-b', url: b.url, secrets: ['b-secret'], timeout_ms: 5000 },
  ];
  api = await startTestApi({ label: 'faults_db', mongoUrl: proxied.toString(), env: { DOWNSTREAM_TARGETS: JSON.stringify(targets) } });
  worker = await startTestWorker({ ...api.env, MONGO_URL: direct.toString() });
  clinic = await registerTestClient(api.models);
  token = await getToken(api, clinic);
});

afterAll(async () => {
  await worker?.close();
  await api?.close();
  await Promise.all([a?.close(), b?.close()]);
  await toxiproxy?.stop();
});

describe('Toxiproxy between the API and the database', () => {
  it.each<FaultName>(['latency2s', 'resetPeer', 'blackHole', 'trickle'])('%s: every request answered (2xx or 503 + Retry-After), nothing accepted lost, order kept, all delivered after', async (fault) => {
    await apiUnderFault({ api, client: clinic, token, link, fault, receivers: [a, b], label: 'api→database' });
  });
});
