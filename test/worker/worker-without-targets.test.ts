/**
 * A worker started without DOWNSTREAM_TARGETS (an env file missing in a rolling restart) would fan
 * each event out to nobody and complete its job, which marks the event published: every callback
 * dropped. It takes no event instead, and says so; a worker with targets delivers them.
 * Real FerretDB, Redis and HTTP receiver.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EVENTS_QUEUE } from '@connect/shared';
import { Queue } from 'bullmq';
import { getToken, postUser, registerTestClient, startTestApi, type TestApi } from '../support/harness.ts';
import { eventually, startReceiver, type Receiver } from './callback-receiver.ts';
import { startTestWorker, type TestWorker } from './worker-under-test.ts';

let api: TestApi;
let receiver: Receiver;
const workers: TestWorker[] = [];

beforeAll(async () => {
  receiver = await startReceiver();
  api = await startTestApi({ label: 'no_targets' });
});
afterAll(async () => {
  for (const w of workers) await w.close();
  await receiver?.close();
  await api?.close();
});

describe('a worker with no target', () => {
  it('takes no event and warns; a worker with targets started later delivers it', async () => {
    const bare = await startTestWorker(api.env);
    workers.push(bare);
    expect(bare.logs.text).toMatch(/no DOWNSTREAM_TARGETS: this worker takes no event/);
    const token = await getToken(api, await registerTestClient(api.models));
    const id = `no-targets-${Date.now()}`;
    expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
    await api.deps.relay.drain();
    const events = new Queue(EVENTS_QUEUE, { connection: api.deps.redis, prefix: api.deps.config.queuePrefix });
    try {
      const eventId = (await api.models.ProviderUser.findOne({ external_provider_id: id }).lean())!.last_event.id;
      expect(await (await events.getJob(eventId))!.getState()).toBe('waiting');

      // A worker that has a target: the event the first left alone goes out.
      const full = await startTestWorker({ ...api.env, DOWNSTREAM_TARGETS: JSON.stringify([{ name: 'dictation', url: receiver.url, secrets: ['s'] }]) });
      workers.push(full);
      await eventually(() => expect(receiver.accepted().filter((c) => c.body.data.user.external_provider_id === id).map((c) => c.body.type)).toEqual(['user.created']));
      expect(await (await events.getJob(eventId))!.getState()).toBe('completed');
    } finally {
      await events.close();
    }
  }, 60_000);
});
