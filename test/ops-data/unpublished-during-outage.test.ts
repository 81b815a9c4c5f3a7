/**
 * connect_outbox_unpublished_events during a Redis outage: what the API can know without Redis is
 * which changes the sweep has not passed; none of them can be confirmed in the queue, so all count.
 * Before, the count failed and the gauge kept its value from before the outage (0) for as long as
 * Redis was away, the one time an operator needs it. Real FerretDB and Redis, a TCP proxy cut.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startTcpProxy, type TcpProxy } from '@connect/local-services';
import { getToken, postUser, registerTestClient, startTestApi, type TestApi } from '../support/harness.ts';
import { eventually } from '../worker/callback-receiver.ts';

let proxy: TcpProxy;
let api: TestApi;

beforeAll(async () => {
  const redis = new URL(inject('redisUrl'));
  proxy = await startTcpProxy(Number(redis.port));
  redis.port = String(proxy.port);
  api = await startTestApi({
    label: 'unpublished-outage',
    env: { REDIS_URL: redis.toString(), DOWNSTREAM_TARGETS: JSON.stringify([{ name: 'dictation', url: 'http://127.0.0.1:9/callbacks', secrets: ['outage-secret'] }]) },
  });
});
afterAll(async () => {
  proxy?.restore();
  await api?.close();
  await proxy?.close();
});

const series = (text: string, name: string) => text.split('\n').filter((line) => line.startsWith(`${name}{`));

describe('the count of unpublished changes with Redis away', () => {
  it('the API /metrics keeps the queue and backlog series, at their last values, while Redis is away (they vanished)', async () => {
    proxy.restore();
    const scrape = async () => (await fetch(`${api.origin}/metrics`)).text();
    const before = await scrape();
    expect(series(before, 'connect_target_backlog')).toEqual(['connect_target_backlog{target="dictation"} 0']);
    expect(series(before, 'connect_queue_jobs').length).toBeGreaterThanOrEqual(14);
    proxy.cut();
    const during = await scrape();
    expect(series(during, 'connect_target_backlog')).toEqual(series(before, 'connect_target_backlog'));
    expect(series(during, 'connect_queue_jobs')).toEqual(series(before, 'connect_queue_jobs'));
  });

  it('counts every change the sweep has not passed, growing with the changes made during the outage', async () => {
    proxy.restore();
    // The API's connection back first (the previous test cut it): a publish made while it still
    // reconnects fails, and that change would rightly count as unpublished.
    await eventually(async () => expect(await api.deps.redis.ping()).toBe('PONG'));
    const token = await getToken(api, await registerTestClient(api.models));
    const create = async () => {
      const id = randomUUID();
      expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
    };
    await create();
    await api.deps.relay.drain();
    // Published (no sweep has run: every user is after the cursor, and this one is in the queue).
    expect(await api.deps.relay.unpublishedCount()).toEqual({ count: 0, capped: false });

    proxy.cut();
    for (let i = 0; i < 3; i++) await create();
    // Before: the count threw, and the gauge kept its 0.
    expect(await api.deps.relay.unpublishedCount()).toEqual({ count: 4, capped: false });
  });
});
