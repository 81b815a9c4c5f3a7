/**
 * A downstream dictation service for demos, built on @connect/receiver: verifies
 * each callback (signature over the timestamp and raw body, any of the secrets,
 * at most 60 s old), drops an event id it has already handled, and logs what it
 * accepted as one JSON line.
 *
 *   DEMO_RECEIVER_SECRET=... PORT=4000 pnpm exec tsx scripts/demo-receiver.ts
 *
 * DEMO_RECEIVER_SECRET may list several secrets, comma-separated (a rotation);
 * DEMO_RECEIVER_SCHEME is `nabla-connect` (default) or `standard-webhooks`.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createCallbackHandler, MemoryDedupeStore, type CallbackScheme } from '@connect/receiver';

/**
 * An external id holding an "@" is logged masked, exactly as the server masks an email
 * (`jane.doe@example.com` → `j***@e***.com`): a copy of maskEmail (packages/shared), which the
 * demo receiver cannot import in the image. `pnpm stack callbacks --wait` masks the id it is given
 * the same way; test/sdk/demo-receiver.test.ts checks both agree.
 */
function maskedId(id: string): string {
  const at = id.lastIndexOf('@');
  if (at < 0) return id;
  if (at < 1) return '***';
  const domain = id.slice(at + 1);
  const dot = domain.lastIndexOf('.');
  const host = dot > 0 ? domain.slice(0, dot) : domain;
  const tld = dot > 0 ? domain.slice(dot) : '';
  return `${id[0]}***@${host[0] ?? ''}***${tld}`;
}

const secrets = (process.env.DEMO_RECEIVER_SECRET ?? '')
  .split(',')
  .map((s) => s.trim())
  .filter(Boolean);
const scheme = (process.env.DEMO_RECEIVER_SCHEME?.trim() || 'nabla-connect') as CallbackScheme;
const port = Number(process.env.PORT ?? 4000);
if (secrets.length === 0) {
  console.error('configuration error: DEMO_RECEIVER_SECRET: is required');
  process.exit(1);
}
if (scheme !== 'nabla-connect' && scheme !== 'standard-webhooks') {
  console.error('configuration error: DEMO_RECEIVER_SCHEME: must be nabla-connect or standard-webhooks');
  process.exit(1);
}

const log = (line: Record<string, unknown>) => console.log(JSON.stringify(line));

const handleCallback = createCallbackHandler({
  secrets,
  scheme,
  dedupe: new MemoryDedupeStore(),
  onEvent: (event) =>
    log({
      msg: 'verified callback',
      type: event.type,
      request_uuid: event.request_uuid,
      organization_id: event.data.organization_id,
      external_provider_id: maskedId(event.data.user.external_provider_id),
      version: event.data.version,
      // Settings only: the provider's email stays out of the log.
      settings: event.data.user.settings,
    }),
  onDuplicate: (event) => log({ msg: 'duplicate callback dropped', request_uuid: event.request_uuid }),
  onRejected: (error) =>
    log({ msg: error.reason === 'malformed_body' ? 'rejected callback: not a callback body' : 'rejected callback: bad or stale signature', reason: error.reason }),
});

const server = createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/healthz') return void res.end('ok');
  handleCallback(req, res);
});
// The bound port, so PORT=0 (any free port) tells its caller where it listens.
server.listen(port, process.env.HOST ?? '0.0.0.0', () => log({ msg: 'demo receiver listening', port: (server.address() as AddressInfo).port }));
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
