import { randomBytes } from 'node:crypto';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startDeliveryStack, type DeliveryStack } from '../support/delivery-stack.ts';
import { collectionsOf, eventJobOf, type UserEvent } from '@connect/shared';
import { getUser, postUser, type TestApi, type TestClient } from '../support/harness.ts';
import { startDeadEndpoint } from '@connect/local-services';
import { eventually, nablaSignatureVerifies, startReceiver, type Receiver } from './callback-receiver.ts';
import type { TestWorker } from './worker-under-test.ts';

// Real processes, FerretDB and retries: generous on a loaded two-core CI machine.
vi.setConfig({ testTimeout: 90_000 });

/**
 * docs/contract.md Events, end to end: API → MongoDB outbox → relay → BullMQ → worker → signed
 * callbacks to real HTTP receivers.
 */

const ncSecrets = ['nc-old-secret-' + randomBytes(8).toString('hex'), 'nc-new-secret-' + randomBytes(8).toString('hex')];
const swSecret = `whsec_${randomBytes(24).toString('base64')}`;

let stack: DeliveryStack;
let api: TestApi;
let worker: TestWorker;
let clinic: TestClient;
let token: string;
let nc: Receiver; // nabla-connect scheme, two secrets
let sw: Receiver; // standard-webhooks scheme
let down: { port: number; close: () => Promise<void> }; // a target that is down
let downUrl: string;

const forUser = (r: Receiver, externalId: string) => r.received.filter((c) => c.body?.data?.user?.external_provider_id === externalId);
const acceptedFor = (r: Receiver, externalId: string) => r.accepted().filter((c) => c.body?.data?.user?.external_provider_id === externalId);
let seq = 0;
const nextId = (label: string) => `${label}-${++seq}-${Date.now()}`;

beforeAll(async () => {
  [nc, sw] = await Promise.all([startReceiver(), startReceiver()]);
  // A port of ours (listen(0)) that resets every connection: a target that is down,
  // on a port no parallel test's server can take while this file runs.
  down = await startDeadEndpoint();
  downUrl = `http://127.0.0.1:${down.port}/callbacks`;
  stack = await startDeliveryStack({
    label: 'worker_e2e',
    targets: [
      { name: 'dictation-nc', url: nc.url, secrets: ncSecrets, timeout_ms: 5000 },
      { name: 'dictation-sw', url: sw.url, secrets: [swSecret], scheme: 'standard-webhooks', timeout_ms: 5000 },
      { name: 'dictation-down', url: downUrl, secrets: ['down-secret'], timeout_ms: 1000 },
    ],
  });
  ({ api, worker, clinic, token } = stack);
});

afterAll(async () => {
  await stack?.close();
  await Promise.all([nc?.close(), sw?.close(), down?.close()]);
});

describe('docs/contract.md, Events: created then updated reach every target, in order, with the exact body', () => {
  it('user.created v1 then user.updated v2, exact body, request_uuid each a UUID (the stored event id), nabla-connect signatures verify with each secret', async () => {
    const id = nextId('e2e');
    const email = `Dr.${id}@Example.com`;
    const created = await postUser(api, token, { provider_email: email, external_provider_id: id });
    expect(created.status).toBe(201);
    const updated = await postUser(api, token, {
      provider_email: email,
      external_provider_id: id,
      settings: { speech_locale: 'FRENCH_FR', specialty: { kind: 'CARDIOLOGY' } },
    });
    expect(updated.status).toBe(200);
    const doc = (await api.models.ProviderUser.findOne({ external_provider_id: id }).lean())!;

    const calls = await eventually(() => {
      const got = acceptedFor(nc, id);
      expect(got).toHaveLength(2);
      return got;
    });
    expect(calls.map((c) => c.body.type)).toEqual(['user.created', 'user.updated']);
    expect(calls[0]!.body).toEqual({
      request_uuid: doc.created_event.id,
      type: 'user.created',
      occurred_at: doc.created_event.occurred_at.toISOString(),
      // Events carry the user's lifecycle status whatever version the request used (docs/api-lifecycle.md).
      data: { organization_id: clinic.organization._id, version: 1, user: { ...created.body, status: 'active', deactivated_at: null } },
    });
    expect(calls[1]!.body).toEqual({
      request_uuid: doc.last_event.id,
      type: 'user.updated',
      occurred_at: doc.last_event.occurred_at.toISOString(),
      data: { organization_id: clinic.organization._id, version: 2, user: { ...updated.body, status: 'active', deactivated_at: null } },
    });
    expect(Object.keys(calls[1]!.body)).toEqual(['request_uuid', 'type', 'occurred_at', 'data']);
    // SPEC §2: an event's id is a UUID (RFC 9562 form), one per event, and request_uuid is that stored id.
    const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[1-8][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/i;
    expect(calls.map((c) => c.body.request_uuid)).toEqual([doc.created_event.id, doc.last_event.id]);
    for (const c of calls) expect(c.body.request_uuid).toMatch(UUID);
    expect(calls[1]!.body.request_uuid).not.toBe(calls[0]!.body.request_uuid);
    expect(Object.keys(calls[1]!.body.data)).toEqual(['organization_id', 'version', 'user']);

    for (const c of calls) {
      expect(c.headers['content-type']).toBe('application/json');
      const ts = String(c.headers['x-nabla-connect-timestamp']);
      expect(new Date(ts).toISOString()).toBe(ts);
      expect(Math.abs(Date.now() - Date.parse(ts))).toBeLessThan(60_000);
      expect(String(c.headers['x-nabla-connect-signature']).split(',')).toHaveLength(2);
      expect(nablaSignatureVerifies(c, ncSecrets[0]!)).toBe(true);
      expect(nablaSignatureVerifies(c, ncSecrets[1]!)).toBe(true);
      expect(nablaSignatureVerifies(c, 'some-other-secret')).toBe(false);
      expect(nablaSignatureVerifies({ ...c, raw: c.raw.replace('FRENCH_FR', 'FRENCH_CA') }, ncSecrets[0]!)).toBe(c.body.type === 'user.created');
    }
  });

  it('the standard-webhooks target gets the same events, verified by the `standardwebhooks` package', async () => {
    const id = nextId('sw');
    await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id });
    await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id, settings: { speech_locale: 'GERMAN_DE' } });
    const calls = await eventually(() => {
      const got = acceptedFor(sw, id);
      expect(got).toHaveLength(2);
      return got;
    });
    const wh = new Webhook(swSecret);
    for (const c of calls) {
      const headers = {
        'webhook-id': String(c.headers['webhook-id']),
        'webhook-timestamp': String(c.headers['webhook-timestamp']),
        'webhook-signature': String(c.headers['webhook-signature']),
      };
      expect(headers['webhook-id']).toBe(c.body.request_uuid);
      expect(wh.verify(c.raw, headers)).toEqual(c.body);
      expect(() => new Webhook(`whsec_${randomBytes(24).toString('base64')}`).verify(c.raw, headers)).toThrow();
    }
    expect(calls.map((c) => [c.body.type, c.body.data.version])).toEqual([
      ['user.created', 1],
      ['user.updated', 2],
    ]);
  });

  it('logs name events and targets but never a secret nor an email', async () => {
    const text = worker.logs.text;
    expect(text).toContain('callback delivered');
    for (const s of [...ncSecrets, swSecret, 'down-secret']) expect(text).not.toContain(s);
    expect(text).not.toMatch(/@example\.com/i);
  });
});

describe('a delivery job queued by an earlier version', () => {
  it('goes out as the stored user is now: with status and deactivated_at, which its payload lacks', async () => {
    const id = nextId('old-job');
    await worker.worker.fanOut.pause();
    try {
      expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
      const stored = (await collectionsOf(api.models).providerUsers.findOne({ external_provider_id: id }))!;
      const { event, created } = eventJobOf(stored);
      // What a version from before the lifecycle queued: the user without status and deactivated_at.
      const before = (e: UserEvent): UserEvent => {
        const { status: _status, deactivated_at: _at, ...user } = e.data;
        return { ...e, data: user as UserEvent['data'] }; // the type of today's jobs; the worker's parser accepts it
      };
      await worker.deps.deliveries.enqueue({ user_id: stored._id.toString(), target: 'dictation-nc', event: before(event), created: before(created) });
    } finally {
      worker.worker.fanOut.resume();
    }
    await eventually(() => acceptedFor(nc, id).length === 1, 30_000);
    expect(acceptedFor(nc, id)[0]!.body.data.user).toMatchObject({ external_provider_id: id, status: 'active', deactivated_at: null });
  });
});

describe('docs/contract.md: a request that changes nothing emits no event', () => {
  it('delivers nothing for a no-op update', async () => {
    const id = nextId('noop');
    const body = { provider_email: `${id}@example.com`, external_provider_id: id, settings: { speech_locale: 'ENGLISH_US' } };
    expect((await postUser(api, token, body)).status).toBe(201);
    await eventually(() => expect(acceptedFor(nc, id)).toHaveLength(1));
    const again = await postUser(api, token, body);
    expect(again.status).toBe(200);
    expect(again.body.version).toBe(1);
    // A later real change of the same user is delivered after anything due before it (one
    // user and target in order): had the no-op emitted an event, it would sit between 1 and 2.
    expect((await postUser(api, token, { ...body, settings: { speech_locale: 'ENGLISH_UK' } })).body.version).toBe(2);
    await eventually(() => expect(acceptedFor(nc, id)).toHaveLength(2));
    await eventually(() => expect(acceptedFor(sw, id)).toHaveLength(2));
    expect(forUser(nc, id).map((c) => [c.body.type, c.body.data.version])).toEqual([['user.created', 1], ['user.updated', 2]]);
    expect(forUser(sw, id).map((c) => [c.body.type, c.body.data.version])).toEqual([['user.created', 1], ['user.updated', 2]]);
  });
});

describe('docs/contract.md, Events, order: a target never receives an older version after a newer one', () => {
  it('20 rapid updates: versions only go up, the last is 21 (1 create + 20 updates), and GET shows delivered', async () => {
    const id = nextId('rapid');
    const email = `${id}@example.com`;
    expect((await postUser(api, token, { provider_email: email, external_provider_id: id })).status).toBe(201);
    // Slow the receivers a little so updates pile up behind the one in flight and get coalesced.
    const slow = (r: Receiver) => (r.respond = () => ({ status: 200, delayMs: 30 }));
    slow(nc);
    slow(sw);
    const answers = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        postUser(api, token, { provider_email: email, external_provider_id: id, settings: { speech_locale: 'ENGLISH_US', specialty: { kind: 'OTHER', other_specialty_name: `n${i}` } } }),
      ),
    );
    expect(answers.map((a) => a.status).every((s) => s === 200)).toBe(true);
    expect(answers.map((a) => a.body.version).sort((a, b) => a - b)).toEqual(Array.from({ length: 20 }, (_, i) => i + 2));

    for (const r of [nc, sw]) {
      await eventually(() => expect(acceptedFor(r, id).at(-1)?.body.data.version).toBe(21));
      const calls = forUser(r, id);
      const versions = calls.map((c) => c.body.data.version as number);
      const retries = worker.logs.lines.filter((l) => /will retry|stalled/.test(l));
      const trace = JSON.stringify({ calls: calls.map((c) => [c.body.data.version, c.answered, c.at, c.answeredAt]), retries });
      expect(versions[0], trace).toBe(1);
      // Never older after newer. The same version twice is allowed only as an at-least-once
      // duplicate (a timed-out attempt retried under load): then it is the same event id.
      for (let i = 1; i < versions.length; i++) {
        expect(versions[i], trace).toBeGreaterThanOrEqual(versions[i - 1]!);
        if (versions[i] === versions[i - 1]) expect(calls[i]!.body.request_uuid).toBe(calls[i - 1]!.body.request_uuid);
      }
    }
    // The receiver has answered; the worker records it right after, so poll GET briefly.
    const final = await eventually(async () => {
      const res = await getUser(api, token, id);
      expect(res.body.sync.map((s: { status: string }) => s.status)).toEqual(['delivered', 'delivered', 'pending']);
      return res;
    });
    expect(final.status).toBe(200);
    expect(acceptedFor(nc, id).at(-1)!.body.data.user).toEqual({
      provider_email: final.body.provider_email,
      external_provider_id: id,
      settings: final.body.settings,
      created_at: final.body.created_at,
      updated_at: final.body.updated_at,
      version: 21,
      status: 'active',
      deactivated_at: null,
    });
    const sync = Object.fromEntries(final.body.sync.map((s: { target: string }) => [s.target, s]));
    expect(sync['dictation-nc']).toMatchObject({ status: 'delivered', version: 21 });
    expect(sync['dictation-sw']).toMatchObject({ status: 'delivered', version: 21 });
    // Coalesced versions are recorded, not lost: every event of this user has a row per target.
    // A late fan-out (the relay or the sweep publishing an overtaken event) writes a pending
    // row that its job then settles, so this converges rather than holding at once.
    await eventually(async () => {
      const rows = await worker.deps.models.Delivery.find({ external_provider_id: id, target: 'dictation-nc' }).lean();
      expect(rows.filter((r) => r.status === 'delivered').map((r) => r.version)).toContain(21);
      expect(rows.filter((r) => r.status !== 'delivered' && r.status !== 'superseded').map((r) => [r.version, r.status])).toEqual([]);
    });
    nc.respond = sw.respond = () => ({ status: 200 });
  });
});

describe('docs/contract.md, Events, fan-out: each target is retried on its own', () => {
  it('with one target down, the others still get every event promptly', async () => {
    const ids = Array.from({ length: 5 }, () => nextId('twotargets'));
    const started = Date.now();
    for (const id of ids) expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
    await eventually(() => {
      for (const id of ids) {
        expect(acceptedFor(nc, id)).toHaveLength(1);
        expect(acceptedFor(sw, id)).toHaveLength(1);
      }
    }, 10_000);
    const latency = Math.max(...ids.flatMap((id) => [acceptedFor(nc, id)[0]!.answeredAt!, acceptedFor(sw, id)[0]!.answeredAt!])) - started;
    console.log(`[two targets, one down] 5 users created and delivered to both live targets within ${latency} ms`);
    expect(latency).toBeLessThan(10_000);

    // The down target: every user's delivery is pending at version 1. It turned `failing`
    // (earlier tests and these refusals), so its deliveries are held and only probes go out:
    // at least one user shows the probe's attempt and error, the rest wait without one.
    const views = await eventually(async () => {
      const all = await Promise.all(ids.map(async (id) => (await getUser(api, token, id)).body.sync as { target: string; status: string; attempts: number; last_error: string | null }[]));
      for (const sync of all) {
        expect(sync.find((s) => s.target === 'dictation-nc')!.status).toBe('delivered');
        expect(sync.find((s) => s.target === 'dictation-down')).toMatchObject({ status: 'pending', version: 1 });
      }
      return all;
    });
    // The documented shape: last_error is always present, a string or null (never left out).
    for (const view of views) for (const entry of view) expect(entry).toHaveProperty('last_error');
    expect(views[0]!.find((s) => s.target === 'dictation-nc')).toMatchObject({ status: 'delivered', version: 1, attempts: 1, last_error: null });
    expect((await worker.deps.health.get('dictation-down')).state).toBe('failing');
    // Probes keep going out, one at a time, and are recorded in the attempt history.
    const probes = async () => worker.deps.models.DeliveryAttempt.countDocuments({ target: 'dictation-down', probe: true });
    const before = await probes();
    await eventually(async () => expect(await probes()).toBeGreaterThan(before), 15_000);
  });
});

describe('latency from the API answer to the receiver accepting the callback', () => {
  it('stays within seconds (median printed)', async () => {
    const latencies: number[] = [];
    for (let i = 0; i < 10; i++) {
      const id = nextId('latency');
      const res = await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id });
      const answered = Date.now();
      expect(res.status).toBe(201);
      const call = await eventually(() => {
        const got = acceptedFor(nc, id);
        expect(got).toHaveLength(1);
        return got[0]!;
      }, 10_000, 20);
      latencies.push(call.at - answered);
    }
    latencies.sort((a, b) => a - b);
    console.log(`[latency] 201 → callback received, 10 creates: median ${latencies[4]} ms, max ${latencies[9]} ms`);
    expect(latencies[4]).toBeLessThan(3000); // ~200 ms on an idle machine; loose for a loaded CI
  });
});
