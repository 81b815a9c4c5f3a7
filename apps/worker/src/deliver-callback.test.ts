import { createServer, type Server } from 'node:http';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DownstreamTarget, UserEvent } from '@connect/shared';
import { callbackBodyOf, deliverCallback } from './deliver-callback.ts';

let server: Server;
let base: string;
const hits: string[] = [];

beforeAll(async () => {
  server = createServer((req, res) => {
    hits.push(req.url!);
    req.resume();
    req.on('end', () => {
      const m = /^\/status\/(\d+)/.exec(req.url!);
      if (req.url === '/hang') return; // never answers
      if (req.url === '/redirect') {
        res.writeHead(307, { location: `${base}/status/200?redirected` }).end();
        return;
      }
      res.writeHead(m ? Number(m[1]) : 200, req.url?.includes('retry') ? { 'retry-after': '7' } : {}).end('{"secret":"not logged"}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

const event: UserEvent = {
  id: '6f1c2a8e-0000-4000-8000-000000000001',
  type: 'user.created',
  occurred_at: '2026-03-01T10:00:00.000Z',
  organization_id: 'org_1',
  version: 1,
  data: { provider_email: 'a@example.com', external_provider_id: 'x', settings: null, created_at: '2026-03-01T10:00:00.000Z', updated_at: '2026-03-01T10:00:00.000Z', version: 1, status: 'active', deactivated_at: null },
};
const target = (path: string, timeout_ms = 1000): DownstreamTarget => ({ name: 't', url: base + path, secrets: ['s'], scheme: 'nabla-connect', timeout_ms });

describe('callbackBodyOf', () => {
  it('has exactly request_uuid, type, occurred_at and data {organization_id, version, user}', () => {
    expect(callbackBodyOf(event)).toEqual({
      request_uuid: event.id,
      type: 'user.created',
      occurred_at: event.occurred_at,
      data: { organization_id: 'org_1', version: 1, user: event.data },
    });
  });
});

describe('deliverCallback classifies the answer', () => {
  it.each([200, 201, 204])('%i is success', async (s) => {
    expect(await deliverCallback(target(`/status/${s}`), event)).toMatchObject({ kind: 'success', status: s });
  });

  it.each([408, 425, 429, 500, 502, 503, 599])('%i is retryable', async (s) => {
    expect(await deliverCallback(target(`/status/${s}`), event)).toMatchObject({ kind: 'retryable', status: s, error: `HTTP ${s}`, retryAfterMs: null });
  });

  it.each([400, 401, 404, 410, 422, 600, 999])('%i is permanent (a status past 599 is no 5xx)', async (s) => {
    expect(await deliverCallback(target(`/status/${s}`), event)).toMatchObject({ kind: 'permanent', status: s, error: `HTTP ${s}` });
  });

  it("a refusal from a receiver whose clock (its Date header) is over 30 s from the signature's names the clocks: a 401 alone dead-lettered every callback of a skewed worker with nothing to go by (a clock audit)", async () => {
    // The worker's clock 61 s ahead of the receiver's (this machine's, which dates its answer).
    const ahead = await deliverCallback(target('/status/401'), event, { now: () => new Date(Date.now() + 61_000) });
    expect(ahead).toMatchObject({ kind: 'permanent', status: 401 });
    expect((ahead as { error: string }).error).toMatch(/^HTTP 401 \(the receiver's clock is 6\d s behind the worker's, by its Date header: a signature timestamp that far from its clock is refused; set the clocks right \(NTP\), then replay\)$/);
    const behind = await deliverCallback(target('/status/403'), event, { now: () => new Date(Date.now() - 5 * 60_000) });
    expect((behind as { error: string }).error).toMatch(/^HTTP 403 \(the receiver's clock is (29\d|30\d) s ahead of the worker's/);
    // Clocks within 30 s, a 5xx, or a success: nothing said.
    expect(await deliverCallback(target('/status/401'), event, { now: () => new Date(Date.now() + 20_000) })).toMatchObject({ error: 'HTTP 401' });
    expect(await deliverCallback(target('/status/503'), event, { now: () => new Date(Date.now() + 61_000) })).toMatchObject({ error: 'HTTP 503' });
    expect(await deliverCallback(target('/status/200'), event, { now: () => new Date(Date.now() + 61_000) })).toMatchObject({ kind: 'success' });
  });

  it('reads Retry-After on a retryable answer', async () => {
    expect(await deliverCallback(target('/status/503/retry'), event)).toMatchObject({ kind: 'retryable', retryAfterMs: 7000 });
  });

  it('an answer that is not HTTP is a retryable network error that says so, without its bytes (it read "network error" alone)', async () => {
    const notHttp = createNetServer((socket) => {
      socket.on('error', () => undefined);
      socket.once('data', () => socket.write('garbage bytes, user jane@example.com\r\n\r\n'));
    });
    await new Promise<void>((r) => notHttp.listen(0, '127.0.0.1', r));
    try {
      const url = `http://127.0.0.1:${(notHttp.address() as AddressInfo).port}/`;
      expect(await deliverCallback({ ...target('/'), url }, event)).toMatchObject({ kind: 'retryable', status: null, error: 'network error: the answer is not HTTP/1.1 (HTTPParserError)' });
    } finally {
      await new Promise((r) => notHttp.close(r));
    }
  });

  it('never follows a redirect', async () => {
    hits.length = 0;
    const out = await deliverCallback(target('/redirect'), event);
    expect(out).toMatchObject({ kind: 'permanent', status: 307, error: 'HTTP 307 (redirects are not followed)' });
    expect(hits).toEqual(['/redirect']);
  });

  it('a 3xx that is not a redirect (304) fails for good, said to be no 2xx rather than a redirect', async () => {
    expect(await deliverCallback(target('/status/304'), event)).toMatchObject({ kind: 'permanent', status: 304, error: 'HTTP 304 (not a 2xx: only a 2xx answer delivers)' });
  });

  it('a timeout is retryable and names the limit', async () => {
    const started = Date.now();
    expect(await deliverCallback(target('/hang', 300), event)).toMatchObject({ kind: 'retryable', status: null, error: 'timeout after 300 ms' });
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('a refused connection is retryable', async () => {
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((r) => closed.close(r));
    const t = { ...target('/'), url: `http://127.0.0.1:${port}/` };
    expect(await deliverCallback(t, event)).toMatchObject({ kind: 'retryable', status: null, error: 'network error: ECONNREFUSED' });
  });
});
