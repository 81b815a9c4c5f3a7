import { afterAll, beforeAll, describe, expect, inject, it, vi } from 'vitest';
import { PUBLISH_WARN_EVERY_MS } from '@connect/shared';
import { startDeliveryStack, target, type DeliveryStack } from '../support/delivery-stack.ts';
import { getToken, registerTestClient, type TestApi } from '../support/harness.ts';
import { eventually, startReceiver, type Receiver } from '../worker/callback-receiver.ts';
import type { TestWorker } from '../worker/worker-under-test.ts';
import { apiUnderFault } from './fault-scenario.ts';
import { startToxiproxy, type FaultName, type Proxy, type Toxiproxy } from './toxiproxy.ts';

// Real network faults on a loaded two-core machine: generous.
vi.setConfig({ testTimeout: 240_000 });

/**
 * Toxiproxy between the API and Redis (the worker reaches Redis directly).
 * Redis is on the API's request path twice: the rate limiter, and the relay
 * that hands each event to the queue right after the write. Neither may hang
 * or fail POST /users: the limiter lets requests through when Redis errs, and
 * an event the relay could not publish stays in the user document until the
 * worker's outbox sweep publishes it.
 */

let toxiproxy: Toxiproxy;
let link: Proxy;
let stack: DeliveryStack;
let api: TestApi;
let worker: TestWorker;
let a: Receiver;
let b: Receiver;

beforeAll(async () => {
  toxiproxy = await startToxiproxy();
  const direct = inject('redisUrl');
  const proxied = await toxiproxy.link('api-redis', direct);
  link = proxied.proxy;
  [a, b] = await Promise.all([startReceiver(), startReceiver()]);
  stack = await startDeliveryStack({
    label: 'faults_redis',
    targets: [target('target-a', a.url), target('target-b', b.url)],
    // Under 100 a minute the limiter leases one slot at a time: every request asks Redis (each fault uses a client of its own).
    api: { env: { REDIS_URL: proxied.url, RATE_LIMIT_PER_CLIENT_PER_MINUTE: '99' } },
    workerEnv: { REDIS_URL: direct },
  });
  ({ api, worker } = stack);
});

afterAll(async () => {
  await stack?.close();
  await Promise.all([a?.close(), b?.close()]);
  await toxiproxy?.stop();
});

const NOT_PUBLISHED = 'event not published yet; the sweep will retry';

describe('Toxiproxy between the API and Redis', () => {
  it.each<FaultName>(['latency2s', 'resetPeer', 'blackHole', 'trickle'])('%s: every request answered (2xx or 503 + Retry-After), nothing accepted lost, order kept, all delivered after', async (fault) => {
    // Each fault meets a live connection (the previous fault may have left the API reconnecting).
    await eventually(async () => expect(await api.deps.redis.ping()).toBe('PONG'), 30_000, 200);
    const sweptBefore = worker.logs.lines.filter((l) => l.includes('outbox sweep published events')).length;
    const clinic = await registerTestClient(api.models);
    const token = await getToken(api, clinic);
    const warnedBefore = api.logs.lines.filter((l) => l.includes(NOT_PUBLISHED)).length;
    const failuresBefore = (await api.deps.metrics.publishFailures.get()).values[0]?.value ?? 0;
    // The API publishes each event after answering: under a black hole, the fault stays on until a
    // publish has met it (it fails after the API's Redis command timeout) and the worker's sweep has
    // published the events (it leaves them to the API for their first 5 s). Healed earlier, the
    // black hole lets the API's held commands through, and the events would go out without the sweep.
    const beforeHeal =
      fault === 'blackHole'
        ? async () => {
            await eventually(() => expect(api.logs.lines.filter((l) => l.includes(NOT_PUBLISHED)).length).toBeGreaterThan(warnedBefore), 30_000, 100);
            await eventually(() => expect(worker.logs.lines.filter((l) => l.includes('outbox sweep published events')).length).toBeGreaterThan(sweptBefore), 30_000, 100);
          }
        : undefined;
    const round = await apiUnderFault({ api, client: clinic, token, link, fault, receivers: [a, b], label: 'api→redis', beforeHeal });
    // Redis is not needed to accept a change or issue a token: every write was taken while the fault was on.
    expect(round.during.filter((x) => x.kind === 'create' || x.kind === 'update').map((x) => x.status).sort()).toEqual([200, 200, 200, 200, 201, 201, 201, 201]);
    expect(round.during.find((x) => x.kind === 'token')?.status).toBe(200);
    if (fault === 'blackHole') {
      // Nothing the API sent reached Redis: its publishes failed, and the events arrived through the worker's sweep.
      expect(worker.logs.lines.filter((l) => l.includes('outbox sweep published events')).length).toBeGreaterThan(sweptBefore);
      // Each failed publish's line carries the request id of the write it follows.
      const lines = api.logs.lines.map((l) => JSON.parse(l) as { reqId?: string; msg: string; time: number });
      const warned = lines.filter((l) => l.msg === NOT_PUBLISHED).slice(warnedBefore);
      expect(warned.length).toBeGreaterThan(0);
      for (const w of warned) expect(lines.some((l) => l.reqId !== undefined && l.reqId === w.reqId && l.msg === 'request completed'), JSON.stringify(w)).toBe(true);
      // One line per 10 s, not one per write: every failed publish is counted, fewer are logged.
      const failures = ((await api.deps.metrics.publishFailures.get()).values[0]?.value ?? 0) - failuresBefore;
      expect(failures).toBeGreaterThan(warned.length);
      for (let i = 1; i < warned.length; i++) expect(warned[i]!.time - warned[i - 1]!.time).toBeGreaterThanOrEqual(PUBLISH_WARN_EVERY_MS);
    }
  });
});
