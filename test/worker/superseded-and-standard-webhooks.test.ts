import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { deliveryIdOf, eventJobOf } from '@connect/shared';
import { Webhook } from 'standardwebhooks';
import { startDeliveryStack, type DeliveryStack } from '../support/delivery-stack.ts';
import { postUser, type TestApi } from '../support/harness.ts';
import { eventually, startReceiver, type Answer, type Receiver } from './callback-receiver.ts';

vi.setConfig({ testTimeout: 60_000 });

let stack: DeliveryStack;
let api: TestApi;
let token: string;
let nc: Receiver;
let sw: Receiver;
/** While set, the nabla-connect receiver holds user.created until the test releases it. */
let gate: Promise<void> | undefined;
const swSecrets = ['whsec_' + Buffer.from('first secret of 32 bytes, really').toString('base64'), 'whsec_' + Buffer.from('the rotated-in second secret....').toString('base64')];

beforeAll(async () => {
  nc = await startReceiver(async (c): Promise<Answer> => {
    if (gate && c.body?.type === 'user.created') await gate;
    return { status: 200 };
  });
  sw = await startReceiver();
  stack = await startDeliveryStack({
    label: 'worker_superseded',
    targets: [
      { name: 'held', url: nc.url, secrets: ['held-secret'], timeout_ms: 20_000 },
      { name: 'sw-two-secrets', url: sw.url, secrets: swSecrets, scheme: 'standard-webhooks', timeout_ms: 5000 },
    ],
  });
  ({ api, token } = stack);
});
afterAll(async () => {
  await stack?.close();
  await Promise.all([nc?.close(), sw?.close()]);
});

const body = (id: string, i: number) => ({ provider_email: `${id}@example.com`, external_provider_id: id, settings: { speech_locale: i % 2 ? 'ENGLISH_UK' : 'ENGLISH_US', specialty: { kind: 'OTHER', other_specialty_name: `v${i}` } } });

describe('docs/delivery.md: updates overtaken while waiting are recorded superseded, not sent', () => {
  it('with user.created held at the target, updates 2 to 4 wait; only 4 goes out, 2 and 3 are superseded', async () => {
    let release!: () => void;
    gate = new Promise<void>((r) => (release = r));
    const id = `superseded-${Date.now()}`;
    expect((await postUser(api, token, body(id, 1))).status).toBe(201);
    await eventually(() => expect(nc.received.filter((c) => c.body.data.user.external_provider_id === id)).toHaveLength(1));
    for (let v = 2; v <= 4; v++) expect((await postUser(api, token, body(id, v))).body.version).toBe(v);
    // All three updates are recorded for the held target before the first delivery ends.
    const rows = async () => (await api.models.Delivery.find({ external_provider_id: id, target: 'held' }).sort({ version: 1 }).lean()).map((r) => [r.version, r.status]);
    await eventually(async () => expect((await rows()).map(([v]) => v)).toEqual([1, 2, 3, 4]));
    gate = undefined;
    release();

    await eventually(async () => expect(await rows()).toEqual([[1, 'delivered'], [2, 'superseded'], [3, 'superseded'], [4, 'delivered']]));
    const sent = nc.received.filter((c) => c.body.data.user.external_provider_id === id).map((c) => [c.body.type, c.body.data.version]);
    expect(sent).toEqual([['user.created', 1], ['user.updated', 4]]);
    // The last one sent carries the newest state.
    expect(nc.received.at(-1)!.body.data.user.settings.specialty.other_specialty_name).toBe('v4');
  });
});

describe('a delivery job for an event a newer version overtook before its fan-out ran (a late fan-out)', () => {
  it('sends the newest version and leaves no row of the older event pending (it stayed pending for good, never purged)', async () => {
    const id = `late-fanout-${Date.now()}`;
    expect((await postUser(api, token, body(id, 1))).status).toBe(201);
    expect((await postUser(api, token, body(id, 2))).status).toBe(200);
    await eventually(() => expect(nc.accepted().filter((c) => c.body.data.user.external_provider_id === id).map((c) => c.body.data.version)).toEqual([1, 2]));
    // Version 3 is stored and its event not fanned out yet; the target has version 2. The sweep is
    // stopped first (nothing later in this file needs it): it would publish version 3 five seconds
    // after its write, and on a slow machine its job came before the late one, which was then folded
    // into it (no job of its own) and its row settled by version 3's delivery instead.
    await stack.worker.worker.sweep.stop();
    const user = (await api.models.ProviderUser.findOne({ external_provider_id: id }).lean())!;
    const v3 = { id: randomUUID(), type: 'user.updated' as const, occurred_at: new Date(), version: 3 };
    await api.models.ProviderUser.updateOne({ _id: user._id }, { $set: { version: 3, last_event: v3, updated_at: new Date() } });
    // The late fan-out of an older event of this user: its pending row, then its job. Only once
    // version 2's job has ended: the receiver's answer comes before that job records it, and a job
    // added while it still held the user's slot on the target was folded into it (no job of its own).
    const { store, deliveries } = stack.worker.deps;
    await eventually(async () => expect(await deliveries.get('held')!.getDeduplicationJobId(`${user._id.toString()}:held`)).toBeNull());
    const created = eventJobOf(user).created;
    const late = { ...eventJobOf(user).event, id: randomUUID(), version: 1, type: 'user.updated' as const };
    await store.insertPending([store.pendingRow({ userId: user._id.toString(), target: 'held', event: late })]);
    await deliveries.enqueue({ user_id: user._id.toString(), target: 'held', event: late, created });

    await eventually(() => expect(nc.accepted().filter((c) => c.body.data.user.external_provider_id === id).map((c) => c.body.data.version)).toEqual([1, 2, 3]));
    // Right when its job is done: its own processing settled its row, nothing else could.
    const job = await deliveries.get('held')!.getJob(deliveryIdOf(late.id, 'held'));
    expect(job, 'the late event has a job of its own').toBeDefined();
    await eventually(async () => expect(await job!.getState()).toBe('completed'));
    expect((await api.models.Delivery.findById(deliveryIdOf(late.id, 'held')).lean())?.status).toBe('superseded');
  });
});

describe('docs/delivery.md: a standard-webhooks target with two secrets (rotation), end to end', () => {
  it('every callback carries one v1 signature per secret, and each secret alone verifies it', async () => {
    const id = `sw2-${Date.now()}`;
    expect((await postUser(api, token, body(id, 1))).status).toBe(201);
    expect((await postUser(api, token, body(id, 2))).status).toBe(200);
    const calls = await eventually(() => {
      const got = sw.accepted().filter((c) => c.body.data.user.external_provider_id === id);
      expect(got.map((c) => c.body.data.version)).toEqual([1, 2]);
      return got;
    });
    for (const c of calls) {
      const headers = { 'webhook-id': String(c.headers['webhook-id']), 'webhook-timestamp': String(c.headers['webhook-timestamp']), 'webhook-signature': String(c.headers['webhook-signature']) };
      expect(headers['webhook-id']).toBe(c.body.request_uuid);
      expect(headers['webhook-signature'].split(' ')).toHaveLength(2);
      for (const secret of swSecrets) expect(new Webhook(secret).verify(c.raw, headers)).toEqual(c.body);
      // A secret that is not configured verifies nothing.
      expect(() => new Webhook('whsec_' + Buffer.from('some other secret entirely......').toString('base64')).verify(c.raw, headers)).toThrow();
    }
  });
});
