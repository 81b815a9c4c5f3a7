import { createHmac } from 'node:crypto';
import { Webhook } from 'standardwebhooks';
import { describe, expect, it } from 'vitest';
import { MemoryDedupeStore } from './dedupe-stores.ts';
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

  it('names each failure', () => {
    expect(reason(() => verifyCallback({ headers: {}, rawBody: raw, secrets: 's', now: () => at }))).toBe('missing_header');
    expect(reason(() => verifyCallback({ headers: headers(sign('s', ts)), rawBody: raw, secrets: 's', now: () => at + 61_000 }))).toBe('timestamp_out_of_window');
    expect(reason(() => verifyCallback({ headers: headers(sign('s', ts)), rawBody: raw, secrets: 's', now: () => at + 61_000, toleranceSeconds: 120 }))).toBe('accepted');
    expect(reason(() => verifyCallback({ headers: headers(sign('other', ts)), rawBody: raw, secrets: 's', now: () => at }))).toBe('bad_signature');
    const notJson = 'x';
    expect(reason(() => verifyCallback({ headers: headers(sign('s', ts, notJson)), rawBody: notJson, secrets: 's', now: () => at }))).toBe('malformed_body');
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
});

describe('MemoryDedupeStore', () => {
  it('marks on first sight, forgets on request, and stays bounded', async () => {
    const store = new MemoryDedupeStore({ max: 2 });
    expect(await store.seen('a')).toBe(false);
    expect(await store.seen('a')).toBe(true);
    await store.forget('a');
    expect(await store.seen('a')).toBe(false);
    await store.seen('b');
    await store.seen('c'); // evicts the oldest
    expect(await store.seen('a')).toBe(false);
  });
});
