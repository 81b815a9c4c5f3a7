/**
 * A write the database did not answer in time, which landed after all: the API gave up on it
 * (its MongoDB socket timeout, a 503 to the integrator), so nobody published its event, and its
 * outbox slot, taken before the write was sent, may already be behind the sweep's cursor; an
 * integrator's retry then finds the user `unchanged` and publishes nothing either. The relay
 * looks at such a user again later (recheckLater) and publishes its newest event.
 *
 * Real FerretDB (or MongoDB) and Redis. The write lands at once and only its answer is held
 * (a TCP proxy), longer than the socket timeout of the connection the write goes through: the
 * same as a write held up server-side that lands after the API let go.
 */
import { randomUUID } from 'node:crypto';
import mongoose from 'mongoose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger, createModels, KeyedLock, OutboxRelay, RecentUsers, upsertProviderUser, type ProviderUserDoc } from '@connect/shared';
import { startTcpProxy, type TcpProxy } from '@connect/local-services';
import { startTestApi, type TestApi } from '../support/harness.ts';
import { eventually } from '../worker/callback-receiver.ts';

let api: TestApi;
let proxy: TcpProxy;
let slow: mongoose.Connection;

beforeAll(async () => {
  api = await startTestApi({ label: 'late_write' });
  const url = new URL(api.env.MONGO_URL!);
  proxy = await startTcpProxy(Number(url.port));
  url.port = String(proxy.port);
  slow = await mongoose.createConnection(url.toString(), { socketTimeoutMS: 800, maxPoolSize: 2 }).asPromise();
});
afterAll(async () => {
  proxy?.setDelay(0);
  await slow?.close();
  await proxy?.close();
  await api?.close();
});

describe('a write whose answer was lost, landing after the API gave up', () => {
  it('is looked at again and its event published, though the write failed and a retry finds it unchanged', async () => {
    const relay = new OutboxRelay({ models: api.models, queue: api.deps.queue, log: createLogger('silent', 'late-write'), recheckDelaysMs: [1000, 3000] });
    const publisher = { publishSoon: (u: ProviderUserDoc) => relay.publishSoon(u), recheckLater: (k: { organizationId: string; externalProviderId: string }) => relay.recheckLater(k) };
    const organizationId = `org-${randomUUID()}`;
    const body = { provider_email: 'late@example.com', external_provider_id: `late-${randomUUID()}` };
    const created = await upsertProviderUser({ models: api.models, lock: new KeyedLock(), publisher }, { organizationId, body });
    await relay.drain();
    expect(await api.deps.queue.getJob(created.user.last_event.id)).toBeDefined();

    // The API process that last wrote the user knows it (its cache of recent users): the update is sent without a read.
    const recent = new RecentUsers();
    recent.set(RecentUsers.keyOf(organizationId, body.external_provider_id), created.user);
    await slow.db!.admin().ping();
    proxy.setDelay(2500);
    const update = { ...body, settings: { speech_locale: 'THAI_TH' as const } };
    await expect(upsertProviderUser({ models: createModels(slow), lock: new KeyedLock(), recent, publisher }, { organizationId, body: update })).rejects.toThrow(/timed out/i);
    proxy.setDelay(0);

    // It landed: version 2 is stored, and its event went nowhere.
    const stored = (await api.models.ProviderUser.findOne({ organization_id: organizationId, external_provider_id: body.external_provider_id }).lean())!;
    expect(stored.version).toBe(2);
    expect(await api.deps.queue.getJob(stored.last_event.id)).toBeUndefined();
    // The integrator's retry: unchanged, nothing published by it.
    const retry = await upsertProviderUser({ models: api.models, lock: new KeyedLock(), publisher }, { organizationId, body: update });
    expect(retry.outcome).toBe('unchanged');

    // Looked at again: the event of version 2 is published.
    const job = await eventually(async () => (await api.deps.queue.getJob(stored.last_event.id)) ?? false, 10_000);
    expect(job.data.event).toMatchObject({ id: stored.last_event.id, version: 2, type: 'user.updated' });
  }, 60_000);
});
