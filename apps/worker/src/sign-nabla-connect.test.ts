import { createHmac, timingSafeEqual } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { NABLA_SIGNATURE_HEADER, NABLA_TIMESTAMP_HEADER, signNablaConnect } from './sign-nabla-connect.ts';

const at = new Date('2026-01-02T03:04:05.000Z');
const body = '{"a":"é"}';

describe('signNablaConnect', () => {
  it('signs timestamp + raw body with hex HMAC-SHA256 (vector computed with openssl)', () => {
    const headers = signNablaConnect(body, ['topsecret'], at);
    expect(headers[NABLA_TIMESTAMP_HEADER]).toBe('2026-01-02T03:04:05.000Z');
    // printf '%s' '2026-01-02T03:04:05.000Z{"a":"é"}' | openssl dgst -sha256 -hmac topsecret -hex
    expect(headers[NABLA_SIGNATURE_HEADER]).toBe('bf9e740181ab280b06634fac8248d8ff841cfcda9a6cfc312d79414bbc77e64e');
  });

  it('gives one signature per secret, comma-separated, in the configured order', () => {
    const headers = signNablaConnect(body, ['old-secret', 'new-secret'], at);
    const parts = headers[NABLA_SIGNATURE_HEADER]!.split(',');
    expect(parts).toHaveLength(2);
    parts.forEach((sig, i) => {
      const expected = createHmac('sha256', ['old-secret', 'new-secret'][i]!).update(`2026-01-02T03:04:05.000Z${body}`).digest();
      expect(timingSafeEqual(Buffer.from(sig, 'hex'), expected)).toBe(true);
    });
  });

  it('changes when one byte of the body changes', () => {
    const a = signNablaConnect(body, ['s'], at)[NABLA_SIGNATURE_HEADER];
    const b = signNablaConnect(body.replace('é', 'e'), ['s'], at)[NABLA_SIGNATURE_HEADER];
    expect(a).not.toBe(b);
  });

  it('refuses to sign without a secret', () => {
    expect(() => signNablaConnect(body, [], at)).toThrow(/secret/);
  });
});
