import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';
import { rawExchange } from '../../../test/support/raw-exchange.ts';
import { clientErrorHandler, errorHandler } from './error-handler.ts';

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
      const answer = await rawExchange(port, `POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`, { bytes: 'junk\r\n\r\n', afterMs: 50 });
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
