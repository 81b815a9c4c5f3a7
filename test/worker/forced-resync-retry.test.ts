import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { pauseTarget, resumeTarget, resyncTarget } from '@connect/shared';
import { startDeliveryStack, target, type DeliveryStack } from '../support/delivery-stack.ts';
import { postUser } from '../support/harness.ts';
import { eventually, startReceiver, userOf, type Receiver } from './callback-receiver.ts';

vi.setConfig({ testTimeout: 60_000 });

/**
 * `targets resync --force` sends a target that lost its data user.created, then the newest. Its
 * retries sent user.created again each time: a target that failed every other callback took
 * user.created and refused the newest at every retry, for ever (the delivery property test found
 * it, with a sick target answering ok, 503, ok, 500, ...).
 */

let failEveryOther = false;
let seen = 0;
/** The next callback for this user is held until `release()`. */
let holdUser: string | undefined;
/** The next callback for this user is answered 503, and the one after it held. */
let failThenHold: string | undefined;
let release = () => undefined as void;
let receiver: Receiver;
let stack: DeliveryStack;

beforeAll(async () => {
  receiver = await startReceiver(async (c) => {
    if (failThenHold !== undefined && userOf(c) === failThenHold) {
      holdUser = failThenHold;
      failThenHold = undefined;
      return { status: 503 };
    }
    if (holdUser !== undefined && userOf(c) === holdUser) {
      holdUser = undefined;
      await new Promise<void>((resolve) => (release = resolve));
    }
    return failEveryOther && seen++ % 2 === 1 ? { status: 503 } : { status: 200 };
  });
  stack = await startDeliveryStack({ label: 'forced_retry', targets: [target('sick', receiver.url)] });
});

afterAll(async () => {
  await stack?.close();
  await receiver?.close();
});

/**
 * A user at version 2 whose live delivery of it is running: its callback arrived at the target,
 * its answer held until `release()`.
 */
async function userWithDeliveryRunning(label: string): Promise<string> {
  failEveryOther = false;
  const { api, token } = stack;
  const id = `${label}-${randomUUID()}`;
  expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
  await eventually(() => expect(receiver.accepted().filter((c) => userOf(c) === id)).toHaveLength(1), 20_000);
  holdUser = id;
  expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id, settings: { speech_locale: 'FRENCH_FR' } })).status).toBe(200);
  await eventually(() => receiver.received.some((c) => userOf(c) === id && c.body.data.version === 2 && c.answered === null), 20_000, 20);
  return id;
}

/** What the target accepted for the user since callback number `before`, as `type vN`. */
const acceptedSince = (before: number, id: string) =>
  receiver.accepted().filter((c) => c.n > before && userOf(c) === id).map((c) => `${c.body.type} v${c.body.data.version}`);

describe('a forced resync retried', () => {
  it('sends user.created once, then only what is still missing: a target failing every other callback gets the newest on the retry', async () => {
    const { api, worker, token, clinic } = stack;
    const id = `forced-${randomUUID()}`;
    expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
    expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id, settings: { speech_locale: 'FRENCH_FR' } })).status).toBe(200);
    await eventually(() => expect(receiver.accepted().filter((c) => userOf(c) === id).map((c) => c.body.data.version)).toContain(2), 20_000);
    // And no delivery of the user left: one still running (version 2 may have gone out with the
    // first run, the second's job following it) is the next case's.
    await eventually(async () => (await worker.deps.deliveries.backlog('sick')) === 0, 20_000, 50);

    failEveryOther = true;
    const before = receiver.received.length;
    await resyncTarget({ store: worker.deps.store, queues: worker.deps.deliveries, targets: [{ name: 'sick' }] }, { target: 'sick', organizationId: clinic.organization._id, force: true });
    // user.created (200), the update (503), then the retry: the update alone (200).
    const trailOf = () => receiver.received.slice(before).filter((c) => userOf(c) === id).map((c) => `${c.body.type} v${c.body.data.version} ${c.answered}`);
    try {
      await eventually(() => expect(receiver.accepted().slice(before).filter((c) => userOf(c) === id && c.body.data.version === 2)).toHaveLength(1), 20_000);
    } catch (err) {
      // What the target heard and what the worker said, for whoever reads a failure.
      console.error(JSON.stringify(trailOf()), '\n', worker.logs.lines.filter((l) => /"level":[4-6]0|callback/.test(l)).slice(-40).join('\n'));
      throw err;
    }
    const trail = trailOf();
    expect(trail).toEqual(['user.created v1 200', 'user.updated v2 503', 'user.updated v2 200']);
  });

  it('reaches a user whose live delivery is running when it comes: once that run is over, the target gets user.created and the newest', async () => {
    // BullMQ keeps one job per user and target; the resync's add went into the running one, which
    // had read what the target had before the resync forgot it, sent the newest alone and recorded
    // it delivered: the target that lost its data never got user.created.
    const { worker, clinic } = stack;
    const id = await userWithDeliveryRunning('running');
    const before = receiver.received.length;
    let added = false;
    const resync = resyncTarget(
      { store: worker.deps.store, queues: worker.deps.deliveries, targets: [{ name: 'sick' }] },
      { target: 'sick', organizationId: clinic.organization._id, force: true, onProgress: () => (added = true) },
    );
    // Its jobs are added (it reports after each batch's) while that delivery still runs; then the run ends.
    await eventually(() => added, 20_000, 20);
    release();
    expect((await resync).interrupted).toBe(false);
    await eventually(() => expect(acceptedSince(before, id)).toEqual(['user.created v1', 'user.updated v2']), 20_000);
  });

  it('does not send user.created twice when a live delivery starts between the forget and the enqueue: that run sent it, and the resync leaves it at that', async () => {
    // That run read what the target had after the forget: it sends user.created and the newest and
    // records them. The resync's add goes into it (running); before, the resync then forgot again
    // and sent user.created and the newest a second time.
    failEveryOther = false;
    const { api, token, worker, clinic } = stack;
    const id = `between-${randomUUID()}`;
    const body = { provider_email: `${id}@example.com`, external_provider_id: id };
    expect((await postUser(api, token, body)).status).toBe(201);
    await eventually(() => expect(receiver.accepted().filter((c) => userOf(c) === id)).toHaveLength(1), 20_000);
    await eventually(async () => (await worker.deps.deliveries.backlog('sick')) === 0, 20_000, 50);
    const userId = (await api.models.ProviderUser.findOne({ external_provider_id: id }).lean())!._id.toString();
    const before = receiver.received.length;
    const real = worker.deps.store;
    let between = false;
    // The real store; its forget, once it has forgotten this user, waits for a live change's delivery to start (held at the receiver).
    const store = Object.assign(Object.create(real) as typeof real, {
      forgetWhatWasSent: async (userIds: string[], target: string) => {
        await real.forgetWhatWasSent(userIds, target);
        if (between || !userIds.includes(userId)) return;
        between = true;
        holdUser = id;
        expect((await postUser(api, token, { ...body, settings: { speech_locale: 'FRENCH_FR' } })).status).toBe(200);
        await eventually(() => receiver.received.some((c) => c.n > before && userOf(c) === id && c.answered === null), 20_000, 20);
      },
    });
    let added = false;
    const resync = resyncTarget({ store, queues: worker.deps.deliveries, targets: [{ name: 'sick' }] }, { target: 'sick', organizationId: clinic.organization._id, force: true, onProgress: () => (added = true) });
    await eventually(() => added, 20_000, 20);
    release();
    expect((await resync).interrupted).toBe(false);
    // A later change, delivered after anything the resync would still send for the user.
    expect((await postUser(api, token, { ...body, settings: { speech_locale: 'ENGLISH_US' } })).status).toBe(200);
    await eventually(() => expect(acceptedSince(before, id)).toContain('user.updated v3'), 20_000);
    expect(acceptedSince(before, id)).toEqual(['user.created v1', 'user.updated v2', 'user.updated v3']);
  });

  it('leaves a running retry of a user\'s first delivery to send user.created: once, though it read the state before the forget', async () => {
    // A run that starts from user.created is what a forget asks for, whenever it read the state.
    failEveryOther = false;
    const { api, token, worker, clinic } = stack;
    const id = `first-${randomUUID()}`;
    const body = { provider_email: `${id}@example.com`, external_provider_id: id };
    failThenHold = id;
    const before = receiver.received.length;
    expect((await postUser(api, token, body)).status).toBe(201);
    // The first attempt answered 503 (the sync state says sent, not delivered); its retry arrived and is held.
    await eventually(() => receiver.received.filter((c) => c.n > before && userOf(c) === id && c.answered === null).length === 1 && receiver.received.some((c) => c.n > before && userOf(c) === id && c.answered === 503), 20_000, 20);
    let added = false;
    const resync = resyncTarget({ store: worker.deps.store, queues: worker.deps.deliveries, targets: [{ name: 'sick' }] }, { target: 'sick', organizationId: clinic.organization._id, force: true, onProgress: () => (added = true) });
    await eventually(() => added, 20_000, 20);
    release();
    expect((await resync).interrupted).toBe(false);
    expect((await postUser(api, token, { ...body, settings: { speech_locale: 'FRENCH_FR' } })).status).toBe(200);
    await eventually(() => expect(acceptedSince(before, id)).toContain('user.updated v2'), 20_000);
    expect(acceptedSince(before, id)).toEqual(['user.created v1', 'user.updated v2']);
  });

  it('interrupted while it waits for such a run, keeps its position before the batch: the run resumed sends the user user.created and the newest', async () => {
    const { api, worker, clinic } = stack;
    const id = await userWithDeliveryRunning('running-stopped');
    const before = receiver.received.length;
    const deps = { store: worker.deps.store, queues: worker.deps.deliveries, targets: [{ name: 'sick' }] };
    const stop = new AbortController();
    let added = false;
    const resync = resyncTarget(deps, { target: 'sick', organizationId: clinic.organization._id, force: true, signal: stop.signal, onProgress: () => (added = true) });
    await eventually(() => added, 20_000, 20);
    stop.abort();
    expect((await resync).interrupted).toBe(true);
    release();
    await eventually(async () => (await worker.deps.deliveries.backlog('sick')) === 0, 20_000, 50);
    const resumed = await resyncTarget(deps, { target: 'sick', organizationId: clinic.organization._id, force: true });
    // From the first user again: the whole organization.
    expect(resumed).toMatchObject({ interrupted: false, users_scanned: await api.models.ProviderUser.countDocuments({ organization_id: clinic.organization._id }) });
    await eventually(() => expect(acceptedSince(before, id)).toEqual(['user.created v1', 'user.updated v2']), 20_000);
  });
});

describe('a forced resync whose jobs Redis lost', () => {
  it('leaves its users behind in the sync state: a plain resync run after the loss enqueues each of them again, and the target gets user.created', async () => {
    // The jobs have no Delivery rows to be recovered from (docs/delivery.md, "Redis that lost its data").
    failEveryOther = false;
    const { api, token, worker, clinic } = stack;
    const ids = [`lost-a-${randomUUID()}`, `lost-b-${randomUUID()}`];
    for (const id of ids) expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
    await eventually(() => ids.every((id) => receiver.accepted().some((c) => userOf(c) === id)), 20_000);
    await eventually(async () => (await worker.deps.deliveries.backlog('sick')) === 0, 20_000, 50);
    const admin = { health: worker.deps.health, queues: worker.deps.deliveries };
    const deps = { store: worker.deps.store, queues: worker.deps.deliveries, targets: [{ name: 'sick' }] };
    const before = receiver.received.length;

    // Held behind a pause, the forced run's jobs are lost as Redis would lose them.
    await pauseTarget(admin, 'sick');
    const forced = await resyncTarget(deps, { target: 'sick', organizationId: clinic.organization._id, force: true });
    expect(forced.enqueued).toBe(await api.models.ProviderUser.countDocuments({ organization_id: clinic.organization._id }));
    await worker.deps.deliveries.get('sick')!.drain(true);
    expect(await worker.deps.deliveries.backlog('sick')).toBe(0);
    await resumeTarget(admin, 'sick');

    const plain = await resyncTarget(deps, { target: 'sick', organizationId: clinic.organization._id });
    expect(plain).toMatchObject({ interrupted: false, enqueued: forced.enqueued, skipped: 0 });
    await eventually(() => expect(ids.map((id) => acceptedSince(before, id))).toEqual(ids.map(() => ['user.created v1'])), 20_000);
  });
});
