import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startDeliveryStack, type DeliveryStack } from '../support/delivery-stack.ts';
import { http, postUser, type TestApi, type TestClient } from '../support/harness.ts';
import { deliveryIdOf, outboxSlotOf, pauseTarget, resumeTarget } from '@connect/shared';
import { eventually, nablaSignatureVerifies, startReceiver, type ReceivedCallback, type Receiver } from '../worker/callback-receiver.ts';
import { eventsFannedOut } from '../worker/worker-under-test.ts';

// Real worker, FerretDB and Redis on a shared two-core machine: generous.
vi.setConfig({ testTimeout: 90_000 });

/**
 * The lifecycle's events go through the same outbox as the others (one
 * single-document write, `last_event`), so the worker delivers them signed and
 * in order: a downstream service learns that a provider left, and came back.
 */

const NEXT = { 'x-nabla-api-version': 'x-nabla-next' };
const secret = 'lifecycle-secret-' + randomBytes(8).toString('hex');

let stack: DeliveryStack;
let api: TestApi;
let clinic: TestClient;
let token: string;
let receiver: Receiver;

const acceptedFor = (externalId: string) => receiver.accepted().filter((c) => c.body?.data?.user?.external_provider_id === externalId);

const signatureVerifies = (c: ReceivedCallback): boolean => nablaSignatureVerifies(c, secret);

beforeAll(async () => {
  receiver = await startReceiver();
  stack = await startDeliveryStack({ label: 'lifecycle_delivery', targets: [{ name: 'dictation', url: receiver.url, secrets: [secret], timeout_ms: 5000 }] });
  ({ api, clinic, token } = stack);
});

afterAll(async () => {
  await stack?.close();
  await receiver?.close();
});

const targetAdmin = () => ({ health: stack.worker.deps.health, queues: stack.worker.deps.deliveries });

/** The target hears `id` created and deactivated (versions 1 and 2), then is paused: what comes next is held. */
async function deactivatedThenHeld(id: string): Promise<void> {
  expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id }, NEXT)).status).toBe(201);
  expect((await del(id)).status).toBe(200);
  await eventually(() => expect(acceptedFor(id).map((c) => c.body.data.version)).toContain(2));
  await pauseTarget(targetAdmin(), 'dictation');
}

const del = (id: string) => http(`${api.baseUrl}/users/${encodeURIComponent(id)}`, { method: 'DELETE', headers: { authorization: `Bearer ${token}`, ...NEXT } });

describe('user.deactivated and user.reactivated are delivered like the other events', () => {
  it('created, two updates, deactivated: delivered signed and in version order; a second DELETE sends nothing; POST reactivates', async () => {
    const id = `leaver-${randomBytes(6).toString('hex')}`;
    const email = `${id}@example.com`;
    expect((await postUser(api, token, { provider_email: email, external_provider_id: id }, NEXT)).status).toBe(201);
    await postUser(api, token, { provider_email: email, external_provider_id: id, settings: { speech_locale: 'FRENCH_FR' } }, NEXT);
    await postUser(api, token, { provider_email: email, external_provider_id: id, settings: { speech_locale: 'GERMAN_DE' } }, NEXT);
    const first = await del(id);
    expect(first.status).toBe(200);
    const doc = (await api.models.ProviderUser.findOne({ organization_id: clinic.organization._id, external_provider_id: id }).lean())!;

    const deactivation = await eventually(() => {
      const got = acceptedFor(id).find((c) => c.body.type === 'user.deactivated');
      expect(got).toBeDefined();
      return got!;
    });
    expect(deactivation.body).toEqual({
      request_uuid: doc.last_event.id,
      type: 'user.deactivated',
      occurred_at: doc.last_event.occurred_at.toISOString(),
      data: { organization_id: clinic.organization._id, version: 4, user: first.body },
    });
    expect(deactivation.body.data.user).toMatchObject({ status: 'deactivated', deactivated_at: expect.any(String), settings: { speech_locale: 'GERMAN_DE' } });
    expect(signatureVerifies(deactivation)).toBe(true);

    // In order: created first, versions never going back, the deactivation last. Updates
    // waiting behind a newer one may be coalesced (only the newest sent), so 2 and 3 are optional.
    const seen = acceptedFor(id).map((c) => [c.body.type, c.body.data.version]);
    expect(seen[0]).toEqual(['user.created', 1]);
    expect(seen.at(-1)).toEqual(['user.deactivated', 4]);
    const versions = seen.map(([, v]) => v as number);
    expect(versions).toEqual([...versions].sort((a, b) => a - b));
    for (const c of acceptedFor(id)) expect(signatureVerifies(c)).toBe(true);

    // A second DELETE: 200, and no event. Proven by the next positive signal: the
    // reactivation that follows arrives right after the deactivation, with nothing between.
    const second = await del(id);
    expect(second.status).toBe(200);
    expect(second.body.version).toBe(4);
    const back = await postUser(api, token, { provider_email: email, external_provider_id: id }, NEXT);
    expect(back.status).toBe(200);
    expect(back.headers.get('x-connect-outcome')).toBe('updated');
    const reactivation = await eventually(() => {
      const got = acceptedFor(id).find((c) => c.body.type === 'user.reactivated');
      expect(got).toBeDefined();
      return got!;
    });
    expect(reactivation.body.data).toEqual({ organization_id: clinic.organization._id, version: 5, user: back.body });
    expect(reactivation.body.data.user).toMatchObject({ status: 'active', deactivated_at: null });
    expect(signatureVerifies(reactivation)).toBe(true);
    const after = acceptedFor(id).map((c) => [c.body.type, c.body.data.version]);
    const at = after.findIndex(([type]) => type === 'user.deactivated');
    expect(after.slice(at)).toEqual([
      ['user.deactivated', 4],
      ['user.reactivated', 5],
    ]);
    // Every request_uuid once: nothing was sent twice for the second DELETE.
    expect(new Set(acceptedFor(id).map((c) => c.body.request_uuid)).size).toBe(acceptedFor(id).length);
  });
});

describe('a change of status that newer events overtook while the target was held', () => {
  it('still reaches the target before them: no user.updated to a receiver that last heard user.deactivated; plain updates still coalesce', async () => {
    const admin = targetAdmin();
    const id = `held-${randomBytes(6).toString('hex')}`;
    const email = `${id}@example.com`;
    // Held: the reactivation (v3) and an update after it (v4) wait together.
    await deactivatedThenHeld(id);
    const back = await postUser(api, token, { provider_email: email, external_provider_id: id }, NEXT);
    expect(back.body.version).toBe(3);
    expect((await postUser(api, token, { provider_email: email, external_provider_id: id, settings: { speech_locale: 'FRENCH_FR' } }, NEXT)).body.version).toBe(4);
    await eventsFannedOut(stack.worker, 30_000);
    await resumeTarget(admin, 'dictation');
    await eventually(() => expect(acceptedFor(id).map((c) => c.body.data.version)).toContain(4));
    const reactivation = acceptedFor(id).find((c) => c.body.type === 'user.reactivated');
    expect(reactivation?.body.data).toEqual({ organization_id: clinic.organization._id, version: 3, user: back.body });
    expect(signatureVerifies(reactivation!)).toBe(true);

    // Two plain updates held together: only the newest goes (no status change to add).
    await pauseTarget(admin, 'dictation');
    for (const locale of ['GERMAN_DE', 'SPANISH_ES']) await postUser(api, token, { provider_email: email, external_provider_id: id, settings: { speech_locale: locale } }, NEXT);
    await eventsFannedOut(stack.worker, 30_000);
    await resumeTarget(admin, 'dictation');
    await eventually(() => expect(acceptedFor(id).map((c) => c.body.data.version)).toContain(6));
    expect(acceptedFor(id).map((c) => [c.body.type, c.body.data.version])).toEqual([
      ['user.created', 1],
      ['user.deactivated', 2],
      ['user.reactivated', 3],
      ['user.updated', 4],
      ['user.updated', 6],
    ]);
  });
});

describe('a reactivation written by a release before status_event, then an update by this one', () => {
  it('is kept as the status change by the update (it was the last event), so a held target still hears it before the update', async () => {
    const admin = targetAdmin();
    const id = `upgraded-${randomBytes(6).toString('hex')}`;
    const email = `${id}@example.com`;
    // The target is held; the older release reactivates the user: its one write, without status_event.
    await deactivatedThenHeld(id);
    const now = new Date();
    const reactivationId = randomUUID();
    const filter = { organization_id: clinic.organization._id, external_provider_id: id };
    await api.models.ProviderUser.collection.updateOne(filter, {
      $set: { status: 'active', deactivated_at: null, version: 3, updated_at: now, outbox_slot: outboxSlotOf(now), last_event: { id: reactivationId, type: 'user.reactivated', occurred_at: now, version: 3 } },
      $unset: { status_event: '' },
    });
    // This release updates the user (a fresh read: its copy of version 2 is refused by the write's version check).
    const updated = await postUser(api, token, { provider_email: email, external_provider_id: id, settings: { speech_locale: 'FRENCH_FR' } }, NEXT);
    expect(updated.body.version).toBe(4);
    expect((await api.models.ProviderUser.findOne(filter).lean())!.status_event).toMatchObject({ id: reactivationId, type: 'user.reactivated', version: 3 });
    await eventsFannedOut(stack.worker, 30_000);
    await resumeTarget(admin, 'dictation');
    await eventually(() => expect(acceptedFor(id).map((c) => c.body.data.version)).toContain(4));
    // Before: created, deactivated, updated (the reactivation coalesced away).
    expect(acceptedFor(id).map((c) => [c.body.type, c.body.data.version])).toEqual([
      ['user.created', 1],
      ['user.deactivated', 2],
      ['user.reactivated', 3],
      ['user.updated', 4],
    ]);
    const reactivation = acceptedFor(id).find((c) => c.body.type === 'user.reactivated')!;
    expect(reactivation.body).toMatchObject({ request_uuid: reactivationId, data: { version: 3, user: { status: 'active', deactivated_at: null, settings: null } } });
  });
});

describe('status changes and targets that could not have heard a deactivation, or refuse the change', () => {
  it('a target that got nothing yet gets user.created and the newest only; a reactivation the receiver refuses for good is a dead letter of its own, the newest still goes, and later events are not held behind it', async () => {
    const admin = targetAdmin();
    const email = (id: string) => `${id}@example.com`;

    // Everything while held: the target never had the user, so no change of status to bring it.
    const fresh = `fresh-${randomBytes(6).toString('hex')}`;
    await pauseTarget(admin, 'dictation');
    expect((await postUser(api, token, { provider_email: email(fresh), external_provider_id: fresh }, NEXT)).status).toBe(201);
    expect((await del(fresh)).status).toBe(200);
    expect((await postUser(api, token, { provider_email: email(fresh), external_provider_id: fresh }, NEXT)).body.version).toBe(3);
    expect((await postUser(api, token, { provider_email: email(fresh), external_provider_id: fresh, settings: { speech_locale: 'FRENCH_FR' } }, NEXT)).body.version).toBe(4);
    await eventsFannedOut(stack.worker, 30_000);
    await resumeTarget(admin, 'dictation');
    await eventually(() => expect(acceptedFor(fresh).map((c) => c.body.data.version)).toContain(4));
    expect(acceptedFor(fresh).map((c) => [c.body.type, c.body.data.version])).toEqual([
      ['user.created', 1],
      ['user.updated', 4],
    ]);

    // A receiver that answers 422 to this user's reactivation.
    const refused = `refused-${randomBytes(6).toString('hex')}`;
    receiver.respond = (req) => ({ status: req.body?.type === 'user.reactivated' && req.body?.data?.user?.external_provider_id === refused ? 422 : 200 });
    try {
      await deactivatedThenHeld(refused);
      const back = await postUser(api, token, { provider_email: email(refused), external_provider_id: refused }, NEXT);
      expect((await postUser(api, token, { provider_email: email(refused), external_provider_id: refused, settings: { speech_locale: 'FRENCH_FR' } }, NEXT)).body.version).toBe(4);
      await eventsFannedOut(stack.worker, 30_000);
      await resumeTarget(admin, 'dictation');
      await eventually(() => expect(acceptedFor(refused).map((c) => c.body.data.version)).toContain(4));
      expect(back.body.version).toBe(3);
      // Its row: a dead letter, then superseded once the newer version was delivered (as any overtaken dead letter).
      const statusEvent = (await api.models.ProviderUser.findOne({ external_provider_id: refused }).lean())!.status_event!;
      expect((await stack.worker.deps.store.get(deliveryIdOf(statusEvent.id, 'dictation')))?.status).toMatch(/^(failed|superseded)$/);
      // A later update goes out at once, without the refused reactivation in front of it again.
      expect((await postUser(api, token, { provider_email: email(refused), external_provider_id: refused, settings: { speech_locale: 'GERMAN_DE' } }, NEXT)).body.version).toBe(5);
      await eventually(() => expect(acceptedFor(refused).map((c) => c.body.data.version)).toContain(5));
      const sent = receiver.received.filter((c) => c.body?.data?.user?.external_provider_id === refused).map((c) => [c.body.type, c.body.data.version, c.answered]);
      expect(sent).toEqual([
        ['user.created', 1, 200],
        ['user.deactivated', 2, 200],
        ['user.reactivated', 3, 422],
        ['user.updated', 4, 200],
        ['user.updated', 5, 200],
      ]);
    } finally {
      receiver.respond = () => ({ status: 200 });
    }
  });
});

describe('status changes: targets that heard a deactivation without acknowledging it, and a refused update after a delivered change', () => {
  it('a receiver that acted on user.deactivated but answered 500 gets user.reactivated before the update that followed; an update refused for good leaves the delivered change delivered', async () => {
    const admin = targetAdmin();
    const email = (id: string) => `${id}@example.com`;
    const unacked = `unacked-${randomBytes(6).toString('hex')}`;
    // The receiver acts on the deactivation, then fails to answer 2xx (as a timeout would); the
    // target is paused at that moment so the retry waits for what comes next.
    receiver.respond = async (req) => {
      if (req.body?.data?.user?.external_provider_id === unacked && req.body.type === 'user.deactivated') {
        await pauseTarget(admin, 'dictation');
        return { status: 500 };
      }
      return { status: 200 };
    };
    try {
      expect((await postUser(api, token, { provider_email: email(unacked), external_provider_id: unacked }, NEXT)).status).toBe(201);
      await eventually(() => expect(acceptedFor(unacked).map((c) => c.body.data.version)).toContain(1));
      expect((await del(unacked)).status).toBe(200);
      await eventually(() => expect(receiver.received.some((c) => c.body?.data?.user?.external_provider_id === unacked && c.answered === 500)).toBe(true));
      expect((await postUser(api, token, { provider_email: email(unacked), external_provider_id: unacked }, NEXT)).body.version).toBe(3);
      expect((await postUser(api, token, { provider_email: email(unacked), external_provider_id: unacked, settings: { speech_locale: 'FRENCH_FR' } }, NEXT)).body.version).toBe(4);
      await eventsFannedOut(stack.worker, 30_000);
      receiver.respond = () => ({ status: 200 });
      await resumeTarget(admin, 'dictation');
      await eventually(() => expect(acceptedFor(unacked).map((c) => c.body.data.version)).toContain(4));
      const sent = receiver.received.filter((c) => c.body?.data?.user?.external_provider_id === unacked).map((c) => [c.body.type, c.body.data.version, c.answered]);
      expect(sent).toEqual([
        ['user.created', 1, 200],
        ['user.deactivated', 2, 500],
        ['user.reactivated', 3, 200],
        ['user.updated', 4, 200],
      ]);

      // Delivered v2, then held: the reactivation goes (200), the update after it is refused for good.
      const refusedUpdate = `refupd-${randomBytes(6).toString('hex')}`;
      receiver.respond = (req) => ({ status: req.body?.data?.user?.external_provider_id === refusedUpdate && req.body.type === 'user.updated' ? 400 : 200 });
      await deactivatedThenHeld(refusedUpdate);
      await postUser(api, token, { provider_email: email(refusedUpdate), external_provider_id: refusedUpdate }, NEXT);
      await postUser(api, token, { provider_email: email(refusedUpdate), external_provider_id: refusedUpdate, settings: { speech_locale: 'FRENCH_FR' } }, NEXT);
      await eventsFannedOut(stack.worker, 30_000);
      await resumeTarget(admin, 'dictation');
      const doc = (await api.models.ProviderUser.findOne({ external_provider_id: refusedUpdate }).lean())!;
      const rowOf = (eventId: string) => stack.worker.deps.store.get(deliveryIdOf(eventId, 'dictation'));
      await eventually(async () => expect((await rowOf(doc.last_event.id))?.status).toBe('failed'));
      expect(acceptedFor(refusedUpdate).map((c) => [c.body.type, c.body.data.version])).toEqual([
        ['user.created', 1],
        ['user.deactivated', 2],
        ['user.reactivated', 3],
      ]);
      expect((await rowOf(doc.status_event!.id))?.status).toBe('delivered');
    } finally {
      receiver.respond = () => ({ status: 200 });
    }
  });
});
