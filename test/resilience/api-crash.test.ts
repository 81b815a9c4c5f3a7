import { randomUUID } from 'node:crypto';
import mongoose from 'mongoose';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { createEventsQueue, createModels, createRedis, registerClient, registerOrganization, type Models } from '@connect/shared';
import { apiOrigin, startEntryPoint, waitFor, type Child } from '../support/child-process.ts';
import { databaseUrl, rsaKeyPair, signAssertion, uniquePrefix } from '../support/harness.ts';
import { startReceiver, type Receiver } from '../worker/callback-receiver.ts';
import { startTestWorker, type TestWorker } from '../worker/worker-under-test.ts';

const cleanup: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c().catch(() => undefined);
});

describe('No event lost when the API dies between the write and the enqueue (docs/contract.md, Events)', () => {
  it('the user is stored, nothing reached Redis, and the sweep delivers user.created with the stored event id', async () => {
    const receiver: Receiver = await startReceiver();
    cleanup.push(() => receiver.close());
    // PORT=0: the API logs the port it got; the public URL (token audience) is a fixed name known in advance.
    const publicBase = 'https://connect.apicrash.test';
    const env = {
      MONGO_URL: databaseUrl('apicrash'),
      REDIS_URL: inject('redisUrl'),
      PORT: '0',
      HOST: '127.0.0.1',
      PUBLIC_BASE_URL: publicBase,
      QUEUE_PREFIX: uniquePrefix('apicrash'),
      LOG_LEVEL: 'info',
      DOWNSTREAM_TARGETS: JSON.stringify([{ name: 'dictation', url: receiver.url, secrets: ['s'] }]),
    };
    const conn = await mongoose.createConnection(env.MONGO_URL).asPromise();
    cleanup.push(() => conn.close());
    const models: Models = createModels(conn);
    // What the relay and the sweep call published: a job with the event's id in the events queue.
    const redis = createRedis(env.REDIS_URL, 'producer');
    const events = createEventsQueue(redis, env.QUEUE_PREFIX);
    cleanup.push(async () => {
      await events.close();
      redis.disconnect();
    });
    const org = await registerOrganization(models, { name: 'Crash clinic' });
    const { privateKey, publicKeyPem } = rsaKeyPair();
    const client = await registerClient(models, { organizationId: org._id, publicKeyPem });

    const api: Child = startEntryPoint('api', { ...env, CONNECT_TEST_FAULT: 'crash-after-write' });
    cleanup.push(async () => api.proc.kill('SIGKILL'));
    const base = `${await apiOrigin(api)}/v1/connect/server`;
    const assertion = await signAssertion(client._id, privateKey, `${publicBase}/v1/connect/server/oauth/token`);
    const tokenRes = await fetch(`${base}/oauth/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'client_credentials', client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: assertion }),
    });
    const { access_token } = (await tokenRes.json()) as { access_token: string };

    const id = randomUUID();
    const answer = await fetch(`${base}/users`, {
      method: 'POST',
      headers: { authorization: `Bearer ${access_token}`, 'content-type': 'application/json', 'x-nabla-api-version': '2026-03-23' },
      body: JSON.stringify({ provider_email: `${id}@example.com`, external_provider_id: id, settings: { speech_locale: 'ENGLISH_US' } }),
    }).then(
      (r) => r.status,
      () => 'connection lost',
    );
    expect(answer).toBe('connection lost');
    expect((await api.exited).signal).toBe('SIGKILL');

    const stored = await models.ProviderUser.findOne({ external_provider_id: id }).lean();
    expect(stored?.version).toBe(1);
    const eventId = stored!.last_event.id;
    expect(await events.getJob(eventId)).toBeUndefined();

    // A worker comes up (its sweep runs every 300 ms in tests) and finds the event in the document.
    const worker: TestWorker = await startTestWorker(env);
    cleanup.push(() => worker.close());
    await waitFor(() => receiver.accepted().some((c) => c.body.request_uuid === eventId), 30_000, 'the delivery');
    const got = receiver.accepted().filter((c) => c.body.data.user.external_provider_id === id);
    expect(got).toHaveLength(1);
    expect(got[0]!.body).toMatchObject({ request_uuid: eventId, type: 'user.created', data: { organization_id: org._id, version: 1 } });
    expect((await events.getJob(eventId))?.id).toBe(eventId);
  });
});
