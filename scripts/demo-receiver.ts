/**
 * A downstream dictation service for demos: receives `user.created` /
 * `user.updated` callbacks, verifies them the way docs/contract.md (Events) describes
 * (timestamp + raw body, hex HMAC-SHA256, any of the comma-separated signatures,
 * optional `sha256=` prefix, constant-time compare, at most 60 s old), drops an
 * event id it has already processed, and logs what it accepted.
 *
 *   DEMO_RECEIVER_SECRET=... PORT=4000 pnpm exec tsx scripts/demo-receiver.ts
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer } from 'node:http';

const secret = process.env.DEMO_RECEIVER_SECRET;
const port = Number(process.env.PORT ?? 4000);
if (!secret) {
  console.error('configuration error: DEMO_RECEIVER_SECRET: is required');
  process.exit(1);
}
const seen = new Set<string>();

function verify(timestamp: string, signatures: string, raw: Buffer): boolean {
  const expected = createHmac('sha256', secret!).update(timestamp).update(raw).digest();
  return signatures.split(',').some((s) => {
    const hex = s.trim().replace(/^sha256=/, '');
    const given = Buffer.from(hex, 'hex');
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
}

const server = createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/healthz') return void res.end('ok');
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const raw = Buffer.concat(chunks);
    const answer = (status: number, body: object) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    const timestamp = String(req.headers['x-nabla-connect-timestamp'] ?? '');
    const signatures = String(req.headers['x-nabla-connect-signature'] ?? '');
    const age = Date.now() - Date.parse(timestamp);
    if (!timestamp || !(age < 60_000 && age > -60_000) || !verify(timestamp, signatures, raw)) {
      console.log(JSON.stringify({ msg: 'rejected callback: bad or stale signature' }));
      return answer(401, { error: 'invalid signature' });
    }
    let body: { request_uuid?: string; type?: string; data?: { organization_id?: string; version?: number; user?: { external_provider_id?: string; settings?: unknown } } };
    try {
      body = JSON.parse(raw.toString());
    } catch {
      return answer(400, { error: 'invalid JSON' });
    }
    if (body.type !== 'user.created' && body.type !== 'user.updated') return answer(400, { error: `unknown type ${body.type}` });
    if (seen.has(body.request_uuid!)) {
      console.log(JSON.stringify({ msg: 'duplicate callback dropped', request_uuid: body.request_uuid }));
      return answer(200, { request_uuid: body.request_uuid });
    }
    seen.add(body.request_uuid!);
    console.log(
      JSON.stringify({
        msg: 'verified callback',
        type: body.type,
        request_uuid: body.request_uuid,
        organization_id: body.data?.organization_id,
        external_provider_id: body.data?.user?.external_provider_id,
        version: body.data?.version,
        settings: body.data?.user?.settings,
      }),
    );
    answer(200, { request_uuid: body.request_uuid });
  });
});
server.listen(port, process.env.HOST ?? '0.0.0.0', () => console.log(JSON.stringify({ msg: 'demo receiver listening', port })));
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
