import { createHmac } from 'node:crypto';
import { Webhook } from 'standardwebhooks';
import { describe, expect, it } from 'vitest';
import Fastify from 'fastify';
import { MemoryDedupeStore } from './dedupe-stores.ts';
import { connectReceiver } from './fastify-plugin.ts';
import { createCallbackHandler } from './node-http-handler.ts';
import { CallbackVerificationError, verifyCallback } from './verify-callback.ts';

const raw = JSON.stringify({
  request_uuid: '6f1c2a3e-1111-4222-8333-944445555666',
  type: 'user.updated',
  occurred_at: '2026-01-01T00:00:00.000Z',
  data: { organization_id: 'o', version: 2, user: { provider_email: 'a@b.c', external_provider_id: 'x', settings: null, created_at: 't', updated_at: 't', version: 2, future_field: 1 } },
});
const at = Date.parse('2026-01-01T00:00:10.000Z');
const sign = (secret: string, ts: string, body = raw) => createHmac('sha256', secret).update(ts + body).digest('hex');
const reason = (fn: () => unknown) => {
  try {
    fn();
  } catch (e) {
    if (e instanceof CallbackVerificationError) return e.reason;
    throw e;
  }
  return 'accepted';
};

describe('verifyCallback, nabla-connect', () => {
  const ts = '2026-01-01T00:00:00.000Z';
  const headers = (sig: string) => ({ 'X-Nabla-Connect-Timestamp': ts, 'x-nabla-connect-signature': sig });

  it('accepts any listed signature made with any secret, with or without sha256=, and keeps unknown user fields', () => {
    const event = verifyCallback({ headers: headers(`deadbeef,sha256=${sign('s2', ts)}`), rawBody: raw, secrets: ['s1', 's2'], now: () => at });
    expect(event.type).toBe('user.updated');
    expect((event.data.user as Record<string, unknown>).future_field).toBe(1);
  });

  it('reads headers through any object with get(name): a Headers class other than the global one (undici, node-fetch, another realm), a Map', () => {
    class OtherHeaders {
      private readonly map = new Map<string, string>();
      constructor(init: Record<string, string>) {
        for (const [k, v] of Object.entries(init)) this.map.set(k.toLowerCase(), v);
      }
      get(name: string): string | null {
        return this.map.get(name.toLowerCase()) ?? null;
      }
    }
    const init = headers(sign('s', ts));
    expect(verifyCallback({ headers: new OtherHeaders(init), rawBody: raw, secrets: 's', now: () => at }).type).toBe('user.updated');
    const map = new Map(Object.entries(init).map(([k, v]) => [k.toLowerCase(), v]));
    expect(verifyCallback({ headers: map, rawBody: raw, secrets: 's', now: () => at }).type).toBe('user.updated');
    expect(reason(() => verifyCallback({ headers: new OtherHeaders({}), rawBody: raw, secrets: 's', now: () => at }))).toBe('missing_header');
  });

  it('names each failure', () => {
    expect(reason(() => verifyCallback({ headers: {}, rawBody: raw, secrets: 's', now: () => at }))).toBe('missing_header');
    expect(reason(() => verifyCallback({ headers: headers(sign('s', ts)), rawBody: raw, secrets: 's', now: () => at + 61_000 }))).toBe('timestamp_out_of_window');
    expect(reason(() => verifyCallback({ headers: headers(sign('s', ts)), rawBody: raw, secrets: 's', now: () => at + 61_000, toleranceSeconds: 120 }))).toBe('accepted');
    expect(reason(() => verifyCallback({ headers: headers(sign('other', ts)), rawBody: raw, secrets: 's', now: () => at }))).toBe('bad_signature');
    const notJson = 'x';
    expect(reason(() => verifyCallback({ headers: headers(sign('s', ts, notJson)), rawBody: notJson, secrets: 's', now: () => at }))).toBe('malformed_body');
  });
});

describe('secrets that cannot verify anything are a TypeError, at once', () => {
  it('none, an unknown scheme, or a standard-webhooks secret not in whsec_ + base64 form: from verifyCallback and from both adapters when created', async () => {
    const headers = { 'webhook-id': 'a', 'webhook-timestamp': String(Math.floor(at / 1000)), 'webhook-signature': 'v1,x' };
    const message = /secret 1 is not a standard-webhooks secret: they are "whsec_" followed by base64/;
    expect(() => verifyCallback({ headers, rawBody: raw, secrets: 'whsec_abc', scheme: 'standard-webhooks', now: () => at })).toThrow(message);
    expect(() => verifyCallback({ headers, rawBody: raw, secrets: [], now: () => at })).toThrow(/at least one secret is needed/);
    expect(() => verifyCallback({ headers, rawBody: raw, secrets: 's', scheme: 'hmac' as never, now: () => at })).toThrow(/unknown scheme hmac/);
    expect(() => createCallbackHandler({ secrets: ['whsec_abc'], scheme: 'standard-webhooks', onEvent: () => undefined })).toThrow(TypeError);
    const app = Fastify();
    await expect(app.register(connectReceiver, { secrets: ['whsec_abc'], scheme: 'standard-webhooks', onEvent: () => undefined }).ready()).rejects.toThrow(message);
    await app.close();
    // A usable secret builds a handler.
    expect(typeof createCallbackHandler({ secrets: [`whsec_${Buffer.from('0123456789abcdef0123456789abcdef').toString('base64')}`], scheme: 'standard-webhooks', onEvent: () => undefined })).toBe('function');
  });
});

describe('verifyCallback, standard-webhooks', () => {
  it('verifies the library\'s own signature and honours toleranceSeconds', () => {
    const secret = `whsec_${Buffer.from('0123456789abcdef0123456789abcdef').toString('base64')}`;
    const signedAt = new Date();
    const signature = new Webhook(secret).sign('msg_1', signedAt, raw);
    const h = { 'webhook-id': 'msg_1', 'webhook-timestamp': String(Math.floor(signedAt.getTime() / 1000)), 'webhook-signature': signature };
    expect(verifyCallback({ headers: new Headers(h), rawBody: raw, secrets: [secret], scheme: 'standard-webhooks' }).request_uuid).toMatch(/^6f1c/);
    expect(reason(() => verifyCallback({ headers: h, rawBody: raw, secrets: [secret], scheme: 'standard-webhooks', toleranceSeconds: 5, now: () => signedAt.getTime() + 10_000 }))).toBe('timestamp_out_of_window');
  });

  const secret = `whsec_${Buffer.from('0123456789abcdef0123456789abcdef').toString('base64')}`;
  const signedAt = new Date('2026-01-01T00:00:00.000Z');
  const h = (signature: string) => ({ 'webhook-id': 'msg_1', 'webhook-timestamp': String(signedAt.getTime() / 1000), 'webhook-signature': signature });
  const good = new Webhook(secret).sign('msg_1', signedAt, raw);

  it('a toleranceSeconds past the library\'s own 5 minutes is honoured, on the clock given', () => {
    const late = () => signedAt.getTime() + 400_000;
    expect(reason(() => verifyCallback({ headers: h(good), rawBody: raw, secrets: secret, scheme: 'standard-webhooks', toleranceSeconds: 600, now: late }))).toBe('accepted');
    expect(reason(() => verifyCallback({ headers: h(good), rawBody: raw, secrets: secret, scheme: 'standard-webhooks', now: late }))).toBe('timestamp_out_of_window');
  });

  it('any listed v1 signature with any secret verifies; a tampered body, another id or only other versions do not', () => {
    const now = () => signedAt.getTime();
    const other = `whsec_${Buffer.from('another-secret-another-secret-00').toString('base64')}`;
    expect(reason(() => verifyCallback({ headers: h(`v1a,xyz v1,AAAA ${good}`), rawBody: raw, secrets: [other, secret], scheme: 'standard-webhooks', now }))).toBe('accepted');
    expect(reason(() => verifyCallback({ headers: h(good), rawBody: raw.replace('user.updated', 'user.created'), secrets: secret, scheme: 'standard-webhooks', now }))).toBe('bad_signature');
    expect(reason(() => verifyCallback({ headers: { ...h(good), 'webhook-id': 'msg_2' }, rawBody: raw, secrets: secret, scheme: 'standard-webhooks', now }))).toBe('bad_signature');
    expect(reason(() => verifyCallback({ headers: h(good.replace('v1,', 'v2,')), rawBody: raw, secrets: secret, scheme: 'standard-webhooks', now }))).toBe('bad_signature');
    expect(reason(() => verifyCallback({ headers: h(good), rawBody: raw, secrets: other, scheme: 'standard-webhooks', now }))).toBe('bad_signature');
  });

  // By hand, as the specification defines it: HMAC-SHA256 keyed by the decoded secret, over the id, the timestamp and the body's bytes.
  const signBytes = (body: Buffer) =>
    `v1,${createHmac('sha256', Buffer.from(secret.slice('whsec_'.length), 'base64')).update(Buffer.concat([Buffer.from(`msg_1.${signedAt.getTime() / 1000}.`), body])).digest('base64')}`;

  it('the signature is checked over the body\'s bytes as received, not over text decoded from them', () => {
    // A valid event with one byte that is not UTF-8 (0xFF) in a member's value: decoding it to text
    // (U+FFFD) made a signature over the decoded text verify, and verify another byte (0xFE) as well.
    const [head, tail] = raw.split('"future_field":1');
    const withByte = (b: number) => Buffer.concat([Buffer.from(`${head}"future_field":"`), Buffer.from([b]), Buffer.from(`"${tail}`)]);
    const now = () => signedAt.getTime();
    const verify = (body: Buffer, signature: string) => reason(() => verifyCallback({ headers: h(signature), rawBody: body, secrets: secret, scheme: 'standard-webhooks', now }));
    expect(verify(withByte(0xff), signBytes(withByte(0xff)))).toBe('accepted');
    expect(verify(withByte(0xff), signBytes(Buffer.from(withByte(0xff).toString('utf8'))))).toBe('bad_signature');
    expect(verify(withByte(0xfe), signBytes(withByte(0xff)))).toBe('bad_signature');
  });

  it('a signature header given as several values (an array, or two header lines node:http joined with ", ") is one list', () => {
    const now = () => signedAt.getTime();
    const other = signBytes(Buffer.from('something else'));
    const verify = (signature: string | string[]) => reason(() => verifyCallback({ headers: { ...h(''), 'webhook-signature': signature }, rawBody: raw, secrets: secret, scheme: 'standard-webhooks', now }));
    expect(verify([good, other])).toBe('accepted');
    expect(verify([other, good])).toBe('accepted');
    expect(verify(`${good}, ${other}`)).toBe('accepted');
    expect(verify(`${other}, ${good}`)).toBe('accepted');
    expect(verify([other, other])).toBe('bad_signature');
  });

  it('a Map keyed with the names as a sender writes them (Webhook-Id) is read case-insensitively, as a plain object is', () => {
    const now = () => signedAt.getTime();
    const map = new Map([
      ['Webhook-Id', 'msg_1'],
      ['Webhook-Timestamp', String(signedAt.getTime() / 1000)],
      ['Webhook-Signature', good],
    ]);
    expect(reason(() => verifyCallback({ headers: map, rawBody: raw, secrets: secret, scheme: 'standard-webhooks', now }))).toBe('accepted');
    map.delete('Webhook-Signature');
    expect(reason(() => verifyCallback({ headers: map, rawBody: raw, secrets: secret, scheme: 'standard-webhooks', now }))).toBe('missing_header');
  });
});

describe('MemoryDedupeStore', () => {
  it('claims once, tells a second copy the first is in progress, remembers a handled id, forgets on request, and stays bounded', async () => {
    const store = new MemoryDedupeStore({ max: 2 });
    expect(await store.claim('a')).toBe('claimed');
    expect(await store.claim('a')).toBe('in_progress');
    await store.handled('a');
    expect(await store.claim('a')).toBe('handled');
    await store.forget('a');
    expect(await store.claim('a')).toBe('claimed');
    await store.claim('b');
    await store.claim('c'); // evicts the oldest
    expect(await store.claim('a')).toBe('claimed');
  });

  it('a claim never marked handled lapses after its lease, so a later copy is handled', async () => {
    const store = new MemoryDedupeStore({ leaseMs: 500 });
    expect(await store.claim('a')).toBe('claimed');
    expect(await store.claim('a')).toBe('in_progress');
    let answer = 'in_progress';
    while (answer === 'in_progress') answer = await new Promise((r) => setTimeout(() => void store.claim('a').then(r), 20));
    expect(answer).toBe('claimed');
    await store.handled('a');
    expect(await store.claim('a')).toBe('handled');
  });
});
