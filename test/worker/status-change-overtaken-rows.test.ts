import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { pauseTarget, resumeTarget } from '@connect/shared';
import { startDeliveryStack, type DeliveryStack } from '../support/delivery-stack.ts';
import { http, postUser } from '../support/harness.ts';
import { eventually, startReceiver, userOf, type Receiver } from './callback-receiver.ts';
import { eventsFannedOut } from './worker-under-test.ts';

// Real worker, FerretDB and Redis on a shared two-core machine: generous.
vi.setConfig({ testTimeout: 90_000 });

/**
 * docs/delivery.md, "Status changes": a change of status that newer events overtook goes out
 * before the newest one, and the versions in between are recorded `superseded`, not left
 * `pending` ("Overtaken events are recorded superseded"; pending rows are never purged).
 *
 * Found by a randomized concurrency audit: when the run that sent the change of status failed
 * on the newest event (a retryable answer), its retry started from the change of status's
 * version, exactly one below the newest, and skipped the supersede write as if nothing lay in
 * between: the rows below the change of status stayed `pending` for good (until the retention
 * pass's net, 15 to 25 minutes later), listed by `deliveries list --status pending`.
 *
 * And never an older version after a newer one: a target that never had the user gets
 * `user.created` and the newest event, not the change of status in between; when that newest
 * event then fails, its retry must not send the change of status first, an older version after
 * the newer one the target already received (and may have acted on). Found by the property test
 * test/worker/delivery-properties.test.ts: the retry saw the target at version 1 and sent it.
 */

const NEXT = { 'x-nabla-api-version': 'x-nabla-next' };

let stack: DeliveryStack;
let receiver: Receiver;

beforeAll(async () => {
  receiver = await startReceiver();
  stack = await startDeliveryStack({
    label: 'status_change_rows',
    targets: [{ name: 'dictation', url: receiver.url, secrets: ['rows-secret'], timeout_ms: 30_000 }],
  });
});

afterAll(async () => {
  await stack?.close();
  await receiver?.close();
});

describe('a change of status sent in front of the newest event, which then fails once', () => {
  it('leaves no pending row below it: the overtaken versions are superseded once the newest is delivered', async () => {
    const { api, token } = stack;
    const id = `overtaken-${randomBytes(6).toString('hex')}`;
    const email = `${id}@example.com`;
    // The creation's callback is held while the user changes four times, so the job that comes
    // next (BullMQ keeps the last add behind the active job) is the newest event's own.
    let release!: () => void;
    const creationHeld = new Promise<void>((r) => (release = r));
    let newestFailed = false;
    receiver.respond = async (req) => {
      if (userOf(req) !== id) return { status: 200 };
      if (req.body.type === 'user.created') {
        await creationHeld;
        return { status: 200 };
      }
      if (req.body.data.version === 5 && !newestFailed) {
        newestFailed = true;
        return { status: 500 };
      }
      return { status: 200 };
    };
    try {
      expect((await postUser(api, token, { provider_email: email, external_provider_id: id }, NEXT)).status).toBe(201);
      await eventually(() => expect(receiver.received.some((c) => userOf(c) === id)).toBe(true));
      expect((await postUser(api, token, { provider_email: email, external_provider_id: id, settings: { speech_locale: 'FRENCH_FR' } }, NEXT)).body.version).toBe(2);
      const del = await http(`${api.baseUrl}/users/${encodeURIComponent(id)}`, { method: 'DELETE', headers: { authorization: `Bearer ${token}`, ...NEXT } });
      expect(del.body.version).toBe(3);
      expect((await postUser(api, token, { provider_email: email, external_provider_id: id }, NEXT)).body.version).toBe(4);
      expect((await postUser(api, token, { provider_email: email, external_provider_id: id, settings: { speech_locale: 'GERMAN_DE' } }, NEXT)).body.version).toBe(5);
      await eventsFannedOut(stack.worker, 30_000);
      release();

      await eventually(() => expect(receiver.accepted().filter((c) => userOf(c) === id).map((c) => c.body.data.version)).toContain(5), 30_000);
      expect(receiver.received.filter((c) => userOf(c) === id).map((c) => [c.body.type, c.body.data.version, c.answered])).toEqual([
        ['user.created', 1, 200],
        ['user.reactivated', 4, 200],
        ['user.updated', 5, 500],
        ['user.updated', 5, 200],
      ]);
      const rows = () => api.models.Delivery.find({ external_provider_id: id, target: 'dictation' }).lean();
      // Every row settled: the sent ones delivered, the overtaken ones superseded, none pending.
      await eventually(async () => {
        const byVersion = Object.fromEntries((await rows()).map((r) => [r.version, r.status]));
        expect(byVersion).toEqual({ 1: 'delivered', 2: 'superseded', 3: 'superseded', 4: 'delivered', 5: 'delivered' });
      }, 10_000);
    } finally {
      release();
      receiver.respond = () => ({ status: 200 });
    }
  });
});

describe('a target that never had the user, behind a change of status, whose newest event fails once', () => {
  it('gets user.created, then the newest again, never the older change of status after it', async () => {
    const { api, token } = stack;
    const admin = { health: stack.worker.deps.health, queues: stack.worker.deps.deliveries };
    const id = `never-had-${randomBytes(6).toString('hex')}`;
    const email = `${id}@example.com`;
    let newestFailed = false;
    receiver.respond = (req) => {
      if (userOf(req) !== id || req.body.data.version !== 4 || newestFailed) return { status: 200 };
      newestFailed = true;
      return { status: 500 };
    };
    // Paused, the target gets nothing while the user is created, deactivated, reactivated and
    // changed: its one job then finds it without the user, at version 4.
    await pauseTarget(admin, 'dictation');
    try {
      expect((await postUser(api, token, { provider_email: email, external_provider_id: id }, NEXT)).status).toBe(201);
      const del = await http(`${api.baseUrl}/users/${encodeURIComponent(id)}`, { method: 'DELETE', headers: { authorization: `Bearer ${token}`, ...NEXT } });
      expect(del.body.version).toBe(2);
      expect((await postUser(api, token, { provider_email: email, external_provider_id: id }, NEXT)).body).toMatchObject({ version: 3, status: 'active' });
      expect((await postUser(api, token, { provider_email: email, external_provider_id: id, settings: { speech_locale: 'GERMAN_DE' } }, NEXT)).body.version).toBe(4);
      await eventsFannedOut(stack.worker, 30_000);
      await resumeTarget(admin, 'dictation');

      await eventually(() => expect(receiver.accepted().filter((c) => userOf(c) === id).map((c) => c.body.data.version)).toContain(4), 30_000);
      expect(receiver.received.filter((c) => userOf(c) === id).map((c) => [c.body.type, c.body.data.version, c.answered])).toEqual([
        ['user.created', 1, 200],
        ['user.updated', 4, 500],
        ['user.updated', 4, 200],
      ]);
      const user = (await api.models.ProviderUser.findOne({ external_provider_id: id }).lean())!;
      // The worker records the outcome after the receiver has answered: waited for, not assumed.
      await eventually(async () => expect(await stack.worker.deps.store.readSync(user._id.toString(), 'dictation')).toMatchObject({ status: 'delivered', version: 4, delivered_version: 4, sent_version: 4 }), 10_000);
      await eventually(async () => {
        const rows = await api.models.Delivery.find({ external_provider_id: id, target: 'dictation' }).lean();
        expect(Object.fromEntries(rows.map((r) => [r.version, r.status]))).toEqual({ 1: 'delivered', 2: 'superseded', 3: 'superseded', 4: 'delivered' });
      }, 10_000);
    } finally {
      await resumeTarget(admin, 'dictation');
      receiver.respond = () => ({ status: 200 });
    }
  });
});
