import { createHmac } from 'node:crypto';

export const NABLA_TIMESTAMP_HEADER = 'x-nabla-connect-timestamp';
export const NABLA_SIGNATURE_HEADER = 'x-nabla-connect-signature';

/**
 * The `nabla-connect` callback scheme (docs/contract.md, Events):
 * the timestamp is the ISO 8601 time of signing, and each signature is
 * hex(HMAC-SHA256(secret, timestamp immediately followed by the raw body)). One
 * signature per configured secret, comma-separated, so a receiver keeps verifying
 * while a secret is rotated (old and new both configured for a while).
 *
 * `rawBody` must be exactly the bytes sent: sign the string, then send that string.
 */
export function signNablaConnect(rawBody: string, secrets: readonly string[], signedAt: Date): Record<string, string> {
  if (secrets.length === 0) throw new Error('at least one secret is needed to sign a callback');
  const timestamp = signedAt.toISOString();
  const signatures = secrets.map((secret) => createHmac('sha256', secret).update(timestamp, 'utf8').update(rawBody, 'utf8').digest('hex'));
  return { [NABLA_TIMESTAMP_HEADER]: timestamp, [NABLA_SIGNATURE_HEADER]: signatures.join(',') };
}
