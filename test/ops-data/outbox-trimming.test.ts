/**
 * BullMQ trims finished jobs (removeOnComplete / removeOnFail), and the events
 * job is the outbox's "published" marker. Here finished jobs are trimmed as soon
 * as they finish, far harder than the production limits, while the sweep keeps
 * looking at the same users: every event must still be fanned out exactly once
 * and delivered exactly once.
 */
import { randomUUID } from 'node:crypto';
import type { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collectionOf, createLogger, eventJobOf, OutboxRelay, syncStateIdOf } from '@connect/shared';
import { getToken, postUser, registerTestClient, startTestApi, type TestApi } from '../support/harness.ts';
import { eventually, startReceiver, type Receiver } from '../worker/callback-receiver.ts';
import { startTestWorker, type TestWorker } from '../worker/worker-under-test.ts';

let api: TestApi;
let worker: TestWorker;
let receiver: Receiver;
let trimming: NodeJS.Timeout | undefined;
const fannedOut = new Map<string, number>();

beforeAll(async () => {
  receiver = await startReceiver();
  api = await startTestApi({ label: 'trim', env: { DOWNSTREAM_TARGETS: JSON.stringify([{ name: 'dictation', url: receiver.url, secrets: ['s'] }]) } });
  worker = await startTestWorker(api.env);
  worker.worker.fanOut.on('completed', (job) => fannedOut.set(job.id!, (fannedOut.get(job.id!) ?? 0) + 1));
});
afterAll(async () => {
  clearInterval(trimming);
  await worker?.close();
  await api?.close();
  await receiver?.close();
});

describe('Trimming finished BullMQ jobs (the events job is the published marker)', () => {
  it('never loses an event nor publishes one twice, with every finished job removed at once while the sweep runs', async () => {
    const events = api.deps.queue;
    const deliveries = worker.deps.deliveries;
    // What removeOnComplete / removeOnFail do, at the harshest setting: nothing finished is kept.
    trimming = setInterval(() => {
      for (const q of [events, ...deliveries.all()] as Queue[]) {
        void q.clean(0, 10_000, 'completed').catch(() => undefined);
        void q.clean(0, 10_000, 'failed').catch(() => undefined);
      }
    }, 50);

    const token = await getToken(api, await registerTestClient(api.models));
    const ids = Array.from({ length: 30 }, (_, i) => `trim-${i}-${randomUUID().slice(0, 6)}`);
    for (const id of ids) expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
    for (const id of ids.slice(0, 10)) {
      for (const locale of ['FRENCH_FR', 'GERMAN_DE']) {
        expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id, settings: { speech_locale: locale } })).status).toBe(200);
      }
    }
    const users = await collectionOf(api.models.ProviderUser).find({ external_provider_id: { $in: ids } }).toArray();
    await eventually(async () => {
      const syncs = new Map((await collectionOf(api.models.SyncState).find({ target: 'dictation' }).toArray()).map((s) => [s._id, s]));
      return users.every((u) => syncs.get(syncStateIdOf(u._id.toString(), 'dictation'))?.delivered_version === u.version);
    }, 60_000, 200);

    // Every newest event's job is gone by now, and the users are still inside the sweep's
    // safety lag (it looks at them again on every pass). Three more passes:
    const newest = users.map((u) => u.last_event.id);
    await eventually(async () => (await Promise.all(newest.map((id) => events.getJob(id)))).every((j) => j === undefined), 10_000);
    for (let i = 0; i < 3; i++) await worker.deps.relay.sweep();
    // The relay still calls them published: from the Delivery rows their fan-out wrote.
    expect((await worker.deps.relay.publishedAmong(newest)).size).toBe(newest.length);
    // A later positive signal that the passes' publishes (if any) had their chance to run:
    const late = `trim-late-${randomUUID().slice(0, 6)}`;
    expect((await postUser(api, token, { provider_email: `${late}@example.com`, external_provider_id: late })).status).toBe(201);
    await eventually(() => receiver.accepted().some((c) => c.body.data.user.external_provider_id === late), 30_000);

    // Published once each: no event id was fanned out twice.
    const twice = [...fannedOut].filter(([, n]) => n > 1);
    expect(twice).toEqual([]);
    for (const id of newest) expect(fannedOut.get(id), id).toBe(1);
    // Lost none, sent none twice: each user's newest version arrived, and no (user, version) twice.
    const seen = new Map<string, number>();
    for (const c of receiver.accepted()) {
      const key = `${c.body.data.user.external_provider_id}@${c.body.data.version}`;
      seen.set(key, (seen.get(key) ?? 0) + 1);
    }
    expect([...seen].filter(([, n]) => n > 1)).toEqual([]);
    for (const u of users) expect(seen.get(`${u.external_provider_id}@${u.version}`), u.external_provider_id).toBe(1);
    clearInterval(trimming);
  }, 180_000);
});

describe('The second published marker: Delivery rows of every target', () => {
  it('a row for one target only (a resync, replay or recover job sent it) does not count: the event is still published to the others', async () => {
    const relay = new OutboxRelay({ models: api.models, queue: api.deps.queue, log: createLogger('silent', 'test'), targetNames: ['dictation', 'billing'] });
    const token = await getToken(api, await registerTestClient(api.models));
    const id = `marker-${randomUUID().slice(0, 6)}`;
    expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
    const user = (await collectionOf(api.models.ProviderUser).findOne({ external_provider_id: id }))!;
    const eventId = eventJobOf(user).event.id;
    await api.deps.relay.drain();
    await eventually(async () => (await relay.publishedAmong([eventId])).has(eventId));
    const Delivery = collectionOf(api.models.Delivery);
    // The worker fanned out to 'dictation' only (this relay knows a target the worker does not):
    // its row exists, billing's does not. Then the job is trimmed.
    await eventually(async () => (await Delivery.countDocuments({ _id: `${eventId}.dictation` })) === 1, 30_000);
    await eventually(async () => (await events().getJob(eventId))?.finishedOn !== undefined, 30_000);
    await events().remove(eventId);
    expect((await relay.publishedAmong([eventId])).has(eventId)).toBe(false);
    await Delivery.insertOne({ ...(await Delivery.findOne({ _id: `${eventId}.dictation` }))!, _id: `${eventId}.billing`, target: 'billing' });
    expect((await relay.publishedAmong([eventId])).has(eventId)).toBe(true);
  }, 60_000);
});

const events = () => api.deps.queue;
