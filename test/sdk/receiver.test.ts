/**
 * @connect/receiver over real HTTP: the Fastify plugin and the node:http handler
 * answer callbacks signed exactly as the worker signs them (its own signing
 * functions), and the Redis dedupe store runs on the real Redis.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import Fastify, { type FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { connectReceiver, createCallbackHandler, MemoryDedupeStore, RedisDedupeStore, verifyCallback, type CallbackEvent, type FastifyReceiverOptions } from '@connect/receiver';
import { signNablaConnect, signStandardWebhooks } from '@connect/worker';
import { uniquePrefix } from '../support/harness.ts';
import { waitFor } from '../support/child-process.ts';

const oldSecret = `nc-old-${randomBytes(8).toString('hex')}`;
const newSecret = `nc-new-${randomBytes(8).toString('hex')}`;
const swSecret = `whsec_${randomBytes(24).toString('base64')}`;

function eventBody(overrides: Record<string, unknown> = {}): { id: string; raw: string } {
  const id = randomUUID();
  const body = {
    request_uuid: id,
    type: 'user.created',
    occurred_at: new Date().toISOString(),
    data: {
      organization_id: 'org-1',
      version: 1,
      user: { provider_email: 'a@example.com', external_provider_id: `ext-${id}`, settings: null, created_at: new Date().toISOString(), updated_at: new Date().toISOString(), version: 1, status: 'active', deactivated_at: null },
    },
    ...overrides,
  };
  return { id, raw: JSON.stringify(body) };
}

const closers: (() => Promise<unknown>)[] = [];

async function fastifyReceiver(options: Omit<FastifyReceiverOptions, 'onEvent'> & { onEvent?: (e: CallbackEvent) => void | Promise<void> }): Promise<{ url: string; events: CallbackEvent[]; app: FastifyInstance }> {
  const events: CallbackEvent[] = [];
  const app = Fastify();
  await app.register(connectReceiver, { ...options, onEvent: options.onEvent ?? ((e) => void events.push(e)) });
  // The application's own JSON routes keep their parser: the plugin's raw-body parser stays inside it.
  app.post('/echo', async (request) => ({ parsed: request.body }));
  await app.listen({ port: 0, host: '127.0.0.1' });
  closers.push(() => app.close());
  return { url: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}/callbacks`, events, app };
}

async function nodeReceiver(options: Omit<FastifyReceiverOptions, 'onEvent'> & { onEvent?: (e: CallbackEvent) => void | Promise<void> }): Promise<{ url: string; events: CallbackEvent[] }> {
  const events: CallbackEvent[] = [];
  const server: Server = createServer(createCallbackHandler({ ...options, onEvent: options.onEvent ?? ((e) => void events.push(e)) }));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  closers.push(() => new Promise((resolve) => server.close(resolve)));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/callbacks`, events };
}

const post = async (url: string, raw: string, headers: Record<string, string>) => {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: raw });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
};

let redis: Redis;
beforeAll(() => {
  redis = new Redis(inject('redisUrl'));
});
afterAll(async () => {
  for (const close of closers) await close();
  redis?.disconnect();
});

describe.each([
  ['Fastify plugin', fastifyReceiver],
  ['node:http handler', nodeReceiver],
] as const)('%s, nabla-connect scheme', (_name, start) => {
  let receiver: { url: string; events: CallbackEvent[] };
  beforeAll(async () => {
    receiver = await start({ secrets: [oldSecret, newSecret], dedupe: new MemoryDedupeStore() });
  });

  it('accepts a callback signed by the worker and answers 200 {request_uuid}, handing the typed event over', async () => {
    const { id, raw } = eventBody();
    const res = await post(receiver.url, raw, signNablaConnect(raw, [newSecret], new Date()));
    expect(res).toEqual({ status: 200, body: { request_uuid: id } });
    expect(receiver.events.find((e) => e.request_uuid === id)?.data.user.external_provider_id).toBe(`ext-${id}`);
  });

  it('rotation: signed with the old secret only, the new only, or both, each verifies; a `sha256=` prefix is accepted', async () => {
    for (const secrets of [[oldSecret], [newSecret], [oldSecret, newSecret]]) {
      const { id, raw } = eventBody();
      expect(await post(receiver.url, raw, signNablaConnect(raw, secrets, new Date()))).toEqual({ status: 200, body: { request_uuid: id } });
    }
    const { id, raw } = eventBody();
    const headers = signNablaConnect(raw, [newSecret], new Date());
    headers['x-nabla-connect-signature'] = `sha256=${headers['x-nabla-connect-signature']}`;
    expect((await post(receiver.url, raw, headers)).status).toBe(200);
    expect(receiver.events.some((e) => e.request_uuid === id)).toBe(true);
  });

  it('missing_header → 401', async () => {
    const { raw } = eventBody();
    const { 'x-nabla-connect-timestamp': ts } = signNablaConnect(raw, [newSecret], new Date());
    expect(await post(receiver.url, raw, { 'x-nabla-connect-timestamp': ts! })).toMatchObject({ status: 401, body: { error: 'missing_header' } });
  });

  it('timestamp_out_of_window → 401 (signed 2 minutes ago, signature otherwise right)', async () => {
    const { raw } = eventBody();
    expect(await post(receiver.url, raw, signNablaConnect(raw, [newSecret], new Date(Date.now() - 120_000)))).toMatchObject({ status: 401, body: { error: 'timestamp_out_of_window' } });
  });

  it('bad_signature → 401: a secret the receiver does not have, or a body changed after signing', async () => {
    const { raw } = eventBody();
    expect(await post(receiver.url, raw, signNablaConnect(raw, ['some-other-secret'], new Date()))).toMatchObject({ status: 401, body: { error: 'bad_signature' } });
    const headers = signNablaConnect(raw, [newSecret], new Date());
    expect(await post(receiver.url, raw.replace('org-1', 'org-2'), headers)).toMatchObject({ status: 401, body: { error: 'bad_signature' } });
  });

  it('malformed_body → 400: an unknown event type, or a signed body that is not JSON', async () => {
    const { raw } = eventBody({ type: 'user.exploded' });
    expect(await post(receiver.url, raw, signNablaConnect(raw, [newSecret], new Date()))).toMatchObject({ status: 400, body: { error: 'malformed_body' } });
    expect(await post(receiver.url, '{nope', signNablaConnect('{nope', [newSecret], new Date()))).toMatchObject({ status: 400, body: { error: 'malformed_body' } });
  });

  it('a replayed request_uuid is answered 200 but handed to onEvent once', async () => {
    const first = eventBody();
    const later = eventBody();
    expect((await post(receiver.url, first.raw, signNablaConnect(first.raw, [newSecret], new Date()))).status).toBe(200);
    // The replay: the same event re-signed later, as the worker does on a retry.
    expect(await post(receiver.url, first.raw, signNablaConnect(first.raw, [newSecret], new Date()))).toEqual({ status: 200, body: { request_uuid: first.id } });
    expect((await post(receiver.url, later.raw, signNablaConnect(later.raw, [newSecret], new Date()))).status).toBe(200);
    await waitFor(() => receiver.events.some((e) => e.request_uuid === later.id), 5000, 'the later event');
    expect(receiver.events.filter((e) => e.request_uuid === first.id)).toHaveLength(1);
  });
});

describe('standard-webhooks scheme', () => {
  it('verifies the worker\'s Standard Webhooks signature, and refuses a stale one, a missing header and a wrong secret', async () => {
    const receiver = await fastifyReceiver({ secrets: [swSecret], scheme: 'standard-webhooks' });
    const { id, raw } = eventBody();
    expect(await post(receiver.url, raw, signStandardWebhooks(id, raw, [swSecret], new Date()))).toEqual({ status: 200, body: { request_uuid: id } });
    expect(receiver.events.map((e) => e.request_uuid)).toContain(id);
    expect(await post(receiver.url, raw, signStandardWebhooks(id, raw, [swSecret], new Date(Date.now() - 600_000)))).toMatchObject({ status: 401, body: { error: 'timestamp_out_of_window' } });
    const { 'webhook-signature': _drop, ...noSignature } = signStandardWebhooks(id, raw, [swSecret], new Date());
    expect(await post(receiver.url, raw, noSignature)).toMatchObject({ status: 401, body: { error: 'missing_header' } });
    const other = `whsec_${randomBytes(24).toString('base64')}`;
    expect(await post(receiver.url, raw, signStandardWebhooks(id, raw, [other], new Date()))).toMatchObject({ status: 401, body: { error: 'bad_signature' } });
  });

  it('rotation: two whsec_ secrets, a message signed with either verifies', async () => {
    const second = `whsec_${randomBytes(24).toString('base64')}`;
    const receiver = await nodeReceiver({ secrets: [swSecret, second], scheme: 'standard-webhooks' });
    for (const secret of [swSecret, second]) {
      const { id, raw } = eventBody();
      expect(await post(receiver.url, raw, signStandardWebhooks(id, raw, [secret], new Date()))).toEqual({ status: 200, body: { request_uuid: id } });
    }
    expect(receiver.events).toHaveLength(2);
  });
});

describe('adapters keep the raw body and stay in their lane', () => {
  it('the Fastify plugin leaves the application\'s JSON parsing alone', async () => {
    const receiver = await fastifyReceiver({ secrets: [newSecret] });
    const res = await fetch(receiver.url.replace('/callbacks', '/echo'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"a":1}' });
    expect(await res.json()).toEqual({ parsed: { a: 1 } });
  });

  it('the node:http handler behind code that already read the body answers 500 raw_body_unavailable (it waited for an end that had come)', async () => {
    const handler = createCallbackHandler({ secrets: [newSecret], onEvent: () => undefined });
    const server = createServer((req, res) => {
      req.resume(); // read to the end and dropped, as a body-logging middleware might
      req.on('end', () => handler(req, res));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    closers.push(() => new Promise((resolve) => server.close(resolve)));
    const { raw } = eventBody();
    const res = await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/callbacks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...signNablaConnect(raw, [newSecret], new Date()) },
      body: raw,
      signal: AbortSignal.timeout(10_000),
    });
    expect(res.status).toBe(500);
    expect(await res.json()).toEqual({ error: 'raw_body_unavailable', message: expect.stringMatching(/read before the callback handler/) });
  });

  it('verifyCallback given a parsed body instead of its bytes says so (a TypeError naming rawBody), not a Buffer error', () => {
    const { raw } = eventBody();
    const headers = signNablaConnect(raw, [newSecret], new Date());
    expect(() => verifyCallback({ headers, rawBody: JSON.parse(raw), secrets: [newSecret] })).toThrow(/rawBody must be the request body exactly as received .* not an object \(a parsed body\?\)/);
    expect(verifyCallback({ headers, rawBody: new TextEncoder().encode(raw), secrets: [newSecret] }).type).toBe('user.created');
  });

  it('a failing onEvent answers 500 and the sender\'s retry is handled (not dropped as a duplicate)', async () => {
    let calls = 0;
    const handled: string[] = [];
    const receiver = await nodeReceiver({
      secrets: [newSecret],
      dedupe: new MemoryDedupeStore(),
      onEvent: (e) => {
        if (++calls === 1) throw new Error('database down');
        handled.push(e.request_uuid);
      },
    });
    const { id, raw } = eventBody();
    expect((await post(receiver.url, raw, signNablaConnect(raw, [newSecret], new Date()))).status).toBe(500);
    expect(await post(receiver.url, raw, signNablaConnect(raw, [newSecret], new Date()))).toEqual({ status: 200, body: { request_uuid: id } });
    expect(handled).toEqual([id]);
  });
});

describe.each([
  ['Fastify plugin', fastifyReceiver],
  ['node:http handler', nodeReceiver],
] as const)('%s: forward compatible, and its answers in the protocol shape', (_name, start) => {
  it('settings and a status with values this SDK does not know yet are handed over (200), not refused as malformed', async () => {
    const receiver = await start({ secrets: [newSecret] });
    const user = { provider_email: 'a@example.com', external_provider_id: `ext-${randomUUID()}`, created_at: new Date().toISOString(), updated_at: new Date().toISOString(), version: 2, deactivated_at: null, status: 'suspended' };
    const settings = { specialty: { kind: 'SPORTS_MEDICINE' }, speech_locale: 'DUTCH_NL', secondary_speech_locale: null };
    const { id, raw } = eventBody({ type: 'user.updated', data: { organization_id: 'org-1', version: 2, user: { ...user, settings } } });
    expect(await post(receiver.url, raw, signNablaConnect(raw, [newSecret], new Date()))).toEqual({ status: 200, body: { request_uuid: id } });
    expect(receiver.events.at(-1)?.data.user).toMatchObject({ status: 'suspended', settings });
  });

  it('a hook for logging that throws leaves the answer as it was: 401 for a bad signature, 200 for a duplicate', async () => {
    const receiver = await start({
      secrets: [newSecret],
      dedupe: new MemoryDedupeStore(),
      onRejected: () => {
        throw new Error('logger down');
      },
      onDuplicate: () => {
        throw new Error('logger down');
      },
    });
    const { id, raw } = eventBody();
    expect((await post(receiver.url, raw, signNablaConnect(raw, ['not-the-secret'], new Date()))).status).toBe(401);
    expect((await post(receiver.url, raw, signNablaConnect(raw, [newSecret], new Date()))).status).toBe(200);
    expect(await post(receiver.url, raw, signNablaConnect(raw, [newSecret], new Date()))).toEqual({ status: 200, body: { request_uuid: id } });
  });

  it('a logging hook that returns a rejected promise neither changes the answer nor goes unhandled (it would end the process)', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => void unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      const receiver = await start({
        secrets: [newSecret],
        dedupe: new MemoryDedupeStore(),
        onRejected: async () => {
          throw new Error('log sink down');
        },
        onDuplicate: async () => {
          throw new Error('log sink down');
        },
      });
      const { id, raw } = eventBody();
      expect((await post(receiver.url, raw, {})).status).toBe(401);
      expect((await post(receiver.url, raw, signNablaConnect(raw, [newSecret], new Date()))).status).toBe(200);
      expect(await post(receiver.url, raw, signNablaConnect(raw, [newSecret], new Date()))).toEqual({ status: 200, body: { request_uuid: id } });
      // A rejection nobody handles is reported after the microtask queue drains: a later macrotask sees it.
      await new Promise((resolve) => setTimeout(resolve, 0));
      await new Promise((resolve) => setImmediate(resolve));
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });

  it('onError hears what the answer does not show: a failing onEvent (500) and a failed "handled" mark (200)', async () => {
    const heard: [string, string][] = [];
    let calls = 0;
    const marking = new MemoryDedupeStore();
    const receiver = await start({
      secrets: [newSecret],
      dedupe: { claim: (id) => marking.claim(id), forget: (id) => marking.forget(id), handled: () => Promise.reject(new Error('store down')) },
      onEvent: () => {
        if (++calls === 1) throw new Error('database down');
      },
      onError: (err, during) => void heard.push([during, (err as Error).message]),
    });
    const { id, raw } = eventBody();
    expect((await post(receiver.url, raw, signNablaConnect(raw, [newSecret], new Date()))).status).toBe(500);
    expect(heard).toEqual([['onEvent', 'database down']]);
    expect(await post(receiver.url, raw, signNablaConnect(raw, [newSecret], new Date()))).toEqual({ status: 200, body: { request_uuid: id } });
    expect(heard).toEqual([
      ['onEvent', 'database down'],
      ['dedupe', 'store down'],
    ]);
  });

  it('another method is 405 with Allow: POST; a body over the limit 413; both {error, message}', async () => {
    const receiver = await start({ secrets: [newSecret], bodyLimit: 1000 });
    for (const method of ['GET', 'OPTIONS', 'DELETE']) {
      const res = await fetch(receiver.url, { method });
      expect(res.status, method).toBe(405);
      expect(res.headers.get('allow'), method).toBe('POST');
    }
    const get = await fetch(receiver.url);
    expect(get.status).toBe(405);
    expect(get.headers.get('allow')).toBe('POST');
    expect(await get.json()).toEqual({ error: 'method_not_allowed', message: expect.any(String) });
    const big = await fetch(receiver.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: 'x'.repeat(5000) });
    expect(big.status).toBe(413);
    expect(await big.json()).toEqual({ error: 'body_too_large', message: expect.any(String) });
  });

  it('a dedupe store that fails answers 500 {error: "internal"} without its error text (the sender retries)', async () => {
    const failing = { claim: () => Promise.reject(new Error("Stream isn't writeable and enableOfflineQueue options is false")), handled: async () => undefined, forget: async () => undefined };
    const receiver = await start({ secrets: [newSecret], dedupe: failing as unknown as MemoryDedupeStore });
    const { raw } = eventBody();
    const res = await post(receiver.url, raw, signNablaConnect(raw, [newSecret], new Date()));
    expect(res).toEqual({ status: 500, body: { error: 'internal', message: expect.not.stringMatching(/Stream|enableOfflineQueue/) } });
  });
});

describe('toleranceSeconds that would switch the replay window off is a TypeError', () => {
  it.each([NaN, -1, Infinity])('%s: refused by verifyCallback and by both adapters at creation', (toleranceSeconds) => {
    const { raw } = eventBody();
    expect(() => verifyCallback({ headers: signNablaConnect(raw, [newSecret], new Date(0)), rawBody: raw, secrets: newSecret, toleranceSeconds })).toThrow(TypeError);
    expect(() => createCallbackHandler({ secrets: newSecret, toleranceSeconds, onEvent: () => undefined })).toThrow(TypeError);
  });
  it('and the Fastify plugin refuses it when registered', async () => {
    const app = Fastify();
    await expect(app.register(connectReceiver, { secrets: newSecret, toleranceSeconds: NaN, onEvent: () => undefined }).ready()).rejects.toThrow(TypeError);
    await app.close();
  });
});

describe('options that would silently stop deduping, limiting or verifying are a TypeError when made', () => {
  it.each([NaN, 0, -1, 1500.5, Infinity])('ttlMs, leaseMs or max %s: refused by the stores', (bad) => {
    expect(() => new RedisDedupeStore(redis, { prefix: 'p:', ttlMs: bad })).toThrow(/ttlMs must be a whole number above 0/);
    expect(() => new RedisDedupeStore(redis, { prefix: 'p:', leaseMs: bad })).toThrow(/leaseMs must be a whole number above 0/);
    expect(() => new MemoryDedupeStore({ ttlMs: bad })).toThrow(TypeError);
    expect(() => new MemoryDedupeStore({ leaseMs: bad })).toThrow(TypeError);
    expect(() => new MemoryDedupeStore({ max: bad })).toThrow(/max must be a whole number above 0/);
  });

  it.each([NaN, 0, -1, 1.5])('bodyLimit %s: refused by the node:http handler and the Fastify plugin', async (bodyLimit) => {
    expect(() => createCallbackHandler({ secrets: newSecret, bodyLimit, onEvent: () => undefined })).toThrow(/bodyLimit must be a whole number above 0/);
    const app = Fastify();
    await expect(app.register(connectReceiver, { secrets: newSecret, bodyLimit, onEvent: () => undefined }).ready()).rejects.toThrow(/bodyLimit/);
    await app.close();
  });

  it('a Redis store without its own prefix is refused: every target gets an event under the same request_uuid', () => {
    expect(() => new RedisDedupeStore(redis, {} as { prefix: string })).toThrow(/prefix is required/);
    expect(() => new RedisDedupeStore(redis, { prefix: '  ' })).toThrow(/prefix is required/);
    expect(() => new RedisDedupeStore(redis, undefined as unknown as { prefix: string })).toThrow(/prefix is required/);
  });

  it('two receiving services on one Redis, each with its own prefix, both handle the same event (the sender sends it to each)', async () => {
    const dictation = await nodeReceiver({ secrets: [newSecret], dedupe: new RedisDedupeStore(redis, { prefix: `${uniquePrefix('dictation')}:seen:` }) });
    const billing = await fastifyReceiver({ secrets: [oldSecret], dedupe: new RedisDedupeStore(redis, { prefix: `${uniquePrefix('billing')}:seen:` }) });
    const { id, raw } = eventBody();
    expect(await post(dictation.url, raw, signNablaConnect(raw, [newSecret], new Date()))).toEqual({ status: 200, body: { request_uuid: id } });
    expect(await post(billing.url, raw, signNablaConnect(raw, [oldSecret], new Date()))).toEqual({ status: 200, body: { request_uuid: id } });
    expect([dictation.events.map((e) => e.request_uuid), billing.events.map((e) => e.request_uuid)]).toEqual([[id], [id]]);
  });

  it('a standard-webhooks secret without its whsec_ prefix is refused, though the library would take it as base64', () => {
    expect(() => createCallbackHandler({ secrets: randomBytes(16).toString('hex'), scheme: 'standard-webhooks', onEvent: () => undefined })).toThrow(/not a standard-webhooks secret/);
  });
});

describe('Redis dedupe store (a claim with a lease, then "handled")', () => {
  const sign = (raw: string) => signNablaConnect(raw, [newSecret], new Date());

  it('clear() forgets every id of its own prefix only, glob characters in the prefix matched literally; the memory store\'s too', async () => {
    const base = uniquePrefix('clear');
    const mine = new RedisDedupeStore(redis, { prefix: `${base}*:` });
    const other = new RedisDedupeStore(redis, { prefix: `${base}-other:` }); // "base*:*" unescaped would match its keys
    const ids = Array.from({ length: 1500 }, () => randomUUID()); // past one SCAN batch
    await Promise.all(ids.map((id) => mine.handled(id)));
    await other.handled(ids[0]!);
    expect(await mine.claim(ids[1]!)).toBe('handled');
    expect(await mine.clear()).toBe(1500);
    expect(await mine.claim(ids[1]!)).toBe('claimed');
    expect(await other.claim(ids[0]!)).toBe('handled');
    expect(await other.clear()).toBe(1);

    const memory = new MemoryDedupeStore();
    await memory.handled(ids[0]!);
    expect(await memory.claim(ids[1]!)).toBe('claimed');
    expect(await memory.clear()).toBe(2);
    expect(await memory.claim(ids[0]!)).toBe('claimed');
  });

  it('two receiver instances sharing it hand one event to onEvent once between them; the id is then remembered for the TTL', async () => {
    const shared = new RedisDedupeStore(redis, { prefix: `${uniquePrefix('receiver')}:seen:`, ttlMs: 60_000 });
    const a = await fastifyReceiver({ secrets: [newSecret], dedupe: shared });
    const b = await nodeReceiver({ secrets: [newSecret], dedupe: new RedisDedupeStore(redis, { prefix: shared.prefix, ttlMs: 60_000 }) });
    const { id, raw } = eventBody();
    const answers = await Promise.all([a.url, b.url].map((url) => post(url, raw, sign(raw))));
    // The copy that lost the claim is told to retry (503) if the first was still being handled, or acknowledged if it was done.
    expect(answers.filter((x) => x.status === 200)).not.toHaveLength(0);
    for (const answer of answers) expect([200, 503]).toContain(answer.status);
    expect([...a.events, ...b.events].filter((e) => e.request_uuid === id)).toHaveLength(1);
    expect(await post(b.url, raw, sign(raw))).toEqual({ status: 200, body: { request_uuid: id } });
    expect([...a.events, ...b.events].filter((e) => e.request_uuid === id)).toHaveLength(1);
    expect(await redis.get(`${shared.prefix}${id}`)).toBe('handled');
    const ttl = await redis.pttl(`${shared.prefix}${id}`);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(60_000);
  });

  it('a copy arriving while the first is still being handled gets 503, not 200; when the first then fails, the next copy is handled', async () => {
    const prefix = `${uniquePrefix('receiver')}:seen:`;
    let release!: (outcome: 'fail' | 'ok') => void;
    const firstDone = new Promise<'fail' | 'ok'>((resolve) => (release = resolve));
    const handled: string[] = [];
    let calls = 0;
    const slow = await nodeReceiver({
      secrets: [newSecret],
      dedupe: new RedisDedupeStore(redis, { prefix }),
      onEvent: async (e) => {
        if (++calls === 1 && (await firstDone) === 'fail') throw new Error('the database went away mid-way');
        handled.push(e.request_uuid);
      },
    });
    const other = await fastifyReceiver({ secrets: [newSecret], dedupe: new RedisDedupeStore(redis, { prefix }) });
    const { id, raw } = eventBody();
    const first = post(slow.url, raw, sign(raw));
    await waitFor(async () => (await redis.get(`${prefix}${id}`)) === 'in_progress', 10_000, 'the first copy to be claimed');
    // The sender timed out on the first copy and retried: the retry must not be acknowledged yet.
    expect(await post(other.url, raw, sign(raw))).toEqual({ status: 503, body: { error: 'in_progress', message: expect.any(String) } });
    expect(other.events).toHaveLength(0);
    release('fail');
    expect((await first).status).toBe(500);
    expect(await post(slow.url, raw, sign(raw))).toEqual({ status: 200, body: { request_uuid: id } });
    expect(handled).toEqual([id]);
  });

  it('a claim whose receiver died before answering lapses after its lease, and the next copy is handled', async () => {
    const prefix = `${uniquePrefix('receiver')}:seen:`;
    const { id, raw } = eventBody();
    // The dead receiver's claim, made as its store made it, never followed by "handled" or a forget.
    expect(await new RedisDedupeStore(redis, { prefix, leaseMs: 3000 }).claim(id)).toBe('claimed');
    const receiver = await nodeReceiver({ secrets: [newSecret], dedupe: new RedisDedupeStore(redis, { prefix, leaseMs: 3000 }) });
    expect((await post(receiver.url, raw, sign(raw))).status).toBe(503);
    const answer = await waitFor(async () => {
      const res = await post(receiver.url, raw, sign(raw));
      return res.status === 200 ? res : undefined;
    }, 10_000, 'a copy to be handled once the lease lapsed');
    expect(answer.body).toEqual({ request_uuid: id });
    expect(receiver.events.map((e) => e.request_uuid)).toEqual([id]);
  });
});
