import { connect } from 'node:net';
import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';
import { clientErrorHandler, errorHandler } from './error-handler.ts';

/** Writes `first`, then `then` after `afterMs`, on one raw connection; resolves with everything read until it closed. */
function exchange(port: number, first: string, then: string, afterMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => {
      socket.write(first);
      setTimeout(() => socket.write(then), afterMs);
    });
    let received = '';
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => (received += d));
    socket.on('error', reject);
    socket.on('close', () => resolve(received));
  });
}

describe('clientErrorHandler: bytes the parser refuses, after a complete request still being answered', () => {
  it("the earlier request's answer goes out first (its write was applied), then the 400 problem+json, then the connection closes", async () => {
    const app = Fastify({ clientErrorHandler });
    app.setErrorHandler(errorHandler);
    let applied = 0;
    // A write that takes 200 ms (a datastore answering): the stray bytes arrive while it runs.
    app.post('/users', async (_request, reply) => {
      await new Promise((r) => setTimeout(r, 200));
      applied++;
      return reply.code(201).send({ created: true });
    });
    const port = Number(new URL(await app.listen({ port: 0, host: '127.0.0.1' })).port);
    try {
      const body = '{"a":1}';
      const answer = await exchange(port, `POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`, 'junk\r\n\r\n', 50);
      expect(applied).toBe(1);
      const statuses = [...answer.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
      expect(statuses, answer).toEqual([201, 400]);
      expect(answer).toContain('{"created":true}');
      expect(answer).toMatch(/"type":"[^"]*\/malformed-request"/);
    } finally {
      await app.close();
    }
  });
});
