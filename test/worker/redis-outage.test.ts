import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startDeliveryStack, target, type DeliveryStack } from '../support/delivery-stack.ts';
import { postUser, type TestApi } from '../support/harness.ts';
import { startPrivateRedis, startTcpProxy, type RunningService, type TcpProxy } from '@connect/local-services';
import { eventually, startReceiver, type Receiver } from './callback-receiver.ts';
import type { TestWorker } from './worker-under-test.ts';

// Real processes, FerretDB and retries: generous on a loaded two-core CI machine.
vi.setConfig({ testTimeout: 90_000 });

/**
 * "No event is lost" (docs/guarantees.md): with Redis down, the API still answers and keeps
 * each event in the user document; once Redis is back the worker's outbox sweep
 * publishes them and every target gets each event exactly once.
 */

let redis: RunningService;
/** What the API and the worker reach Redis through: cut for the outage, so Redis itself never restarts on a freed port. */
let redisLink: TcpProxy;
let stack: DeliveryStack;
let api: TestApi;
let worker: TestWorker;
let token: string;
let a: Receiver;
let b: Receiver;

beforeAll(async () => {
  redis = await startPrivateRedis();
  redisLink = await startTcpProxy(redis.port);
  [a, b] = await Promise.all([startReceiver(), startReceiver()]);
  stack = await startDeliveryStack({
    label: 'worker_redis_outage',
    targets: [target('target-a', a.url, { timeout_ms: 2000 }), target('target-b', b.url, { timeout_ms: 2000 })],
    api: { env: { REDIS_URL: `redis://127.0.0.1:${redisLink.port}` } },
  });
  ({ api, worker, token } = stack);
});

afterAll(async () => {
  await stack?.close();
  await Promise.all([a?.close(), b?.close(), redisLink?.close(), redis?.stop()]);
});

describe('Redis down while users are created', () => {
  it('answers 201 to all 20 (the worker metrics answering meanwhile), then delivers every event exactly once per target after Redis returns', async () => {
    const warm = `warm-${Date.now()}`;
    expect((await postUser(api, token, { provider_email: `${warm}@example.com`, external_provider_id: warm })).status).toBe(201);
    await eventually(() => expect(a.accepted().length + b.accepted().length).toBe(2));

    // A scrape while Redis answers (Prometheus scrapes all along): the values a later one keeps.
    expect(await worker.deps.metrics.registry.metrics()).toMatch(/^connect_target_state\{target="target-a",state="healthy"\} 1$/m);
    redisLink.cut();
    const ids = Array.from({ length: 20 }, (_, i) => `outage-${i}-${Date.now()}`);
    const started = Date.now();
    const answers = await Promise.all(ids.map((id) => postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })));
    expect(answers.map((r) => r.status)).toEqual(ids.map(() => 201));
    console.log(`[redis outage] 20 creates answered in ${Date.now() - started} ms with Redis down`);
    expect(a.received.length + b.received.length).toBe(2); // nothing went out while Redis was away
    // The worker's metrics still answer while Redis is away (process figures, and the targets'
    // state and backlog as last read): a scrape never waits for Redis to come back.
    const scrape = await Promise.race([worker.deps.metrics.registry.metrics(), new Promise<'no answer'>((r) => setTimeout(() => r('no answer'), 15_000))]);
    expect(scrape).toContain('connect_worker_process_cpu_seconds_total');
    expect(scrape).toMatch(/^connect_target_state\{target="target-a",state="healthy"\} 1$/m);

    // The outage is in the worker's log, and so is its end (an audit found a worker silent through one).
    await eventually(() => expect(worker.logs.text).toContain('"msg":"Redis does not answer: '), 15_000, 200);
    expect(worker.logs.text).not.toContain('Redis answers again');
    redisLink.restore();
    await eventually(() => expect(worker.logs.text).toMatch(/"msg":"Redis answers again, after \d+ s"/), 15_000, 200);
    // The reconnection warnings are throttled per kind, whatever ioredis's message and however many
    // queues: keyed by their text and queue, they flooded (90 lines in 33 s with two targets).
    for (const kind of ['queue error', 'worker error']) {
      const times = worker.logs.lines.filter((l) => l.includes(`"msg":"${kind}"`)).map((l) => (JSON.parse(l) as { time: number }).time);
      for (let i = 1; i < times.length; i++) expect(times[i]! - times[i - 1]!, kind).toBeGreaterThanOrEqual(10_000);
    }
    const back = Date.now();
    await eventually(() => {
      for (const r of [a, b]) expect(r.accepted().length).toBe(21);
    }, 45_000, 200);
    // The API's own publish failed while Redis was away: it is the worker's sweep that caught up.
    expect(worker.logs.text).toContain('outbox sweep published events');
    console.log(`[redis outage] all 40 deliveries done ${Date.now() - back} ms after Redis came back`);

    const docs = await api.models.ProviderUser.find({ external_provider_id: { $in: ids } }).lean();
    const expectedIds = docs.map((d) => d.created_event.id).sort();
    expect(expectedIds).toHaveLength(20);
    // A user created now is delivered to both targets only after the backlog before it was
    // worked through: any duplicate of the outage's events would have shown up by then.
    const after = `after-${Date.now()}`;
    expect((await postUser(api, token, { provider_email: `${after}@example.com`, external_provider_id: after })).status).toBe(201);
    await eventually(() => {
      for (const r of [a, b]) expect(r.accepted().some((c) => c.body.data.user.external_provider_id === after)).toBe(true);
    }, 30_000);
    for (const r of [a, b]) {
      const got = r.received.filter((c) => ids.includes(c.body.data.user.external_provider_id)).map((c) => c.body.request_uuid as string);
      expect(got.sort()).toEqual(expectedIds);
      expect(r.received.every((c) => c.body.type === 'user.created' && c.body.data.version === 1)).toBe(true);
    }
  });
});
