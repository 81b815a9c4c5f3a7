import { createHmac } from 'node:crypto';

export const WEBHOOK_ID_HEADER = 'webhook-id';
export const WEBHOOK_TIMESTAMP_HEADER = 'webhook-timestamp';
export const WEBHOOK_SIGNATURE_HEADER = 'webhook-signature';

const SECRET_PREFIX = 'whsec_';

/**
 * The Standard Webhooks scheme (standardwebhooks.com): `webhook-id` is the message
 * id (our event id, the same on every retry, so receivers dedupe on it),
 * `webhook-timestamp` is unix seconds, and `webhook-signature` lists
 * `v1,<base64 HMAC-SHA256("<id>.<timestamp>.<body>")>` per secret, space-separated.
 * The HMAC key is the base64-decoded part of the secret after `whsec_`, not the
 * secret string itself: signing with the string is the usual interop bug.
 */
export function signStandardWebhooks(messageId: string, rawBody: string, secrets: readonly string[], signedAt: Date): Record<string, string> {
  if (secrets.length === 0) throw new Error('at least one secret is needed to sign a callback');
  const timestamp = Math.floor(signedAt.getTime() / 1000).toString();
  const content = `${messageId}.${timestamp}.${rawBody}`;
  const signatures = secrets.map((secret) => {
    if (!secret.startsWith(SECRET_PREFIX)) throw new Error('standard-webhooks secrets start with "whsec_"');
    const key = Buffer.from(secret.slice(SECRET_PREFIX.length), 'base64');
    return `v1,${createHmac('sha256', key).update(content, 'utf8').digest('base64')}`;
  });
  return {
    [WEBHOOK_ID_HEADER]: messageId,
    [WEBHOOK_TIMESTAMP_HEADER]: timestamp,
    [WEBHOOK_SIGNATURE_HEADER]: signatures.join(' '),
  };
}
