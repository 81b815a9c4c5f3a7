import { randomBytes } from 'node:crypto';
import { Webhook } from 'standardwebhooks';
import { describe, expect, it } from 'vitest';
import { signStandardWebhooks, WEBHOOK_ID_HEADER, WEBHOOK_SIGNATURE_HEADER, WEBHOOK_TIMESTAMP_HEADER } from './sign-standard-webhooks.ts';

const secret = () => `whsec_${randomBytes(24).toString('base64')}`;
const body = JSON.stringify({ request_uuid: 'e1', type: 'user.created', data: { email: 'ánne@example.com' } });

describe('signStandardWebhooks', () => {
  it('verifies with the reference `standardwebhooks` package', () => {
    const s = secret();
    const headers = signStandardWebhooks('msg_1', body, [s], new Date());
    expect(headers[WEBHOOK_ID_HEADER]).toBe('msg_1');
    expect(headers[WEBHOOK_TIMESTAMP_HEADER]).toMatch(/^\d{10}$/);
    expect(new Webhook(s).verify(body, headers)).toEqual(JSON.parse(body));
  });

  it('lists one v1 signature per secret, space-separated, each verifying on its own', () => {
    const [a, b] = [secret(), secret()];
    const headers = signStandardWebhooks('msg_2', body, [a, b], new Date());
    expect(headers[WEBHOOK_SIGNATURE_HEADER]!.split(' ')).toHaveLength(2);
    expect(headers[WEBHOOK_SIGNATURE_HEADER]!.split(' ').every((p) => p.startsWith('v1,'))).toBe(true);
    expect(() => new Webhook(a).verify(body, headers)).not.toThrow();
    expect(() => new Webhook(b).verify(body, headers)).not.toThrow();
    expect(() => new Webhook(secret()).verify(body, headers)).toThrow();
  });

  it('uses unix seconds of the signing time, and a tampered body fails', () => {
    const s = secret();
    const headers = signStandardWebhooks('msg_3', body, [s], new Date('2026-05-01T00:00:00.900Z'));
    expect(headers[WEBHOOK_TIMESTAMP_HEADER]).toBe(String(Date.parse('2026-05-01T00:00:00Z') / 1000));
    const fresh = signStandardWebhooks('msg_3', body, [s], new Date());
    expect(() => new Webhook(s).verify(body.replace('created', 'updated'), fresh)).toThrow();
  });

  it('refuses a secret that is not in whsec_ form', () => {
    expect(() => signStandardWebhooks('m', body, ['plain'], new Date())).toThrow(/whsec_/);
  });
});
