import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resyncTarget } from '@connect/shared';
import { serveDeliveryMetrics } from '@connect/worker';
import { getToken, postUser, registerTestClient, startTestApi, type TestApi } from '../support/harness.ts';
import { eventually, startReceiver, type Receiver } from './callback-receiver.ts';
import { startTestWorker, type TestWorker } from './worker-under-test.ts';

let api: TestApi;
let worker: TestWorker;
let receiver: Receiver;
let failing = true;

beforeAll(async () => {
  receiver = await startReceiver(() => (failing ? { status: 503 } : { status: 200 }));
  api = await startTestApi({ label: 'wmetrics', env: { DOWNSTREAM_TARGETS: JSON.stringify([{ name: 'dictation', url: receiver.url, secrets: ['s'] }]) } });
  worker = await startTestWorker(api.env);
});
afterAll(async () => {
  await worker?.close();
  await api?.close();
  await receiver?.close();
});

describe('Worker metrics (GET /metrics on WORKER_METRICS_PORT)', () => {
  it('count deliveries by target and outcome, the latency from the change to the 2xx, and each target’s state and backlog', async () => {
    // Port 0: the listener takes a port the kernel picks, read back from the server.
    const server = await serveDeliveryMetrics(worker.deps.metrics, 0, '127.0.0.1');
    const { port } = server.address() as AddressInfo;
    try {
      // Before any delivery, every outcome of the target is there at 0 (a series born at 1 shows no increase to an alert).
      const before = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      for (const outcome of ['delivered', 'retry', 'held', 'failed', 'superseded', 'internal']) expect(before).toContain(`connect_deliveries_total{target="dictation",outcome="${outcome}"} 0`);
      const clinic = await registerTestClient(api.models);
      const token = await getToken(api, clinic);
      const id = randomUUID();
      expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
      await eventually(() => receiver.received.length >= 1);
      failing = false;
      await eventually(() => receiver.accepted().length === 1, 20_000);
      const text = await eventually(async () => {
        const t = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
        return /connect_deliveries_total\{target="dictation",outcome="delivered"\} 1/.test(t) ? t : false;
      });
      expect(text).toMatch(/connect_deliveries_total\{target="dictation",outcome="retry"\} [1-9]/);
      expect(text).toMatch(/connect_delivery_latency_seconds_count\{target="dictation",type="user.created"\} 1/);
      // Target health and backlog, read from Redis when scraped.
      expect(text).toMatch(/connect_target_state\{target="dictation",state="healthy"\} 1/);
      expect(text).toMatch(/connect_target_state\{target="dictation",state="failing"\} 0/);
      expect(text).toMatch(/connect_target_backlog\{target="dictation"\} \d+/);
      await worker.deps.health.setState('dictation', 'paused', 'test');
      const paused = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      expect(paused).toMatch(/connect_target_state\{target="dictation",state="paused"\} 1/);
      expect(paused).toMatch(/connect_target_state\{target="dictation",state="healthy"\} 0/);
      await worker.deps.health.setState('dictation', 'healthy');
      expect((await fetch(`http://127.0.0.1:${port}/other`)).status).toBe(404);

      // A forced resync sends the user again, as old as its change: counted as delivered, left out of
      // the latency (a fairness audit found a resync's 10,000 deliveries in its top buckets).
      await resyncTarget({ store: worker.deps.store, queues: worker.deps.deliveries, targets: [{ name: 'dictation' }] }, { target: 'dictation', organizationId: clinic.organization._id, force: true });
      const resynced = await eventually(async () => {
        const t = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
        return /connect_deliveries_total\{target="dictation",outcome="delivered"\} 2/.test(t) ? t : false;
      }, 20_000);
      expect(receiver.accepted()).toHaveLength(2);
      expect(resynced).toMatch(/connect_delivery_latency_seconds_count\{target="dictation",type="user.created"\} 1\n/);
    } finally {
      await new Promise((r) => server.close(r));
    }
  });

  it('show each queue\'s jobs by state as the API does, the events waiting for fan-out included (a worker scraped alone showed only its targets)', async () => {
    const server = await serveDeliveryMetrics(worker.deps.metrics, 0, '127.0.0.1');
    const { port } = server.address() as AddressInfo;
    const scrape = async () => (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    const waitingEvents = (t: string) => [...t.matchAll(/^connect_queue_jobs\{queue="user-events",state="(?:waiting|paused)"\} (\d+)$/gm)].reduce((a, m) => a + Number(m[1]), 0);
    const eventsQueue = worker.deps.eventsQueue;
    try {
      expect(await scrape()).toMatch(/^connect_queue_jobs\{queue="deliveries.dictation",state="delayed"\} \d+$/m);
      // Fan-out stopped: the change's event waits in the events queue, and the worker's scrape says so.
      await eventsQueue.pause();
      const clinic = await registerTestClient(api.models);
      const token = await getToken(api, clinic);
      const id = randomUUID();
      expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
      await eventually(async () => waitingEvents(await scrape()) >= 1);
      await eventsQueue.resume();
      await eventually(async () => waitingEvents(await scrape()) === 0);
    } finally {
      await eventsQueue.resume();
      await new Promise((r) => server.close(r));
    }
  });
});
