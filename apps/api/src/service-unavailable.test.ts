import { Writable } from 'node:stream';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { describe, expect, it, vi } from 'vitest';
import { createLogger, WriteAbandonedError } from '@connect/shared';
import { errorHandler } from './error-handler.ts';
import { rawExchange } from '../../../test/support/raw-exchange.ts';
import { answerWithinDeadline, asServiceUnavailable, ServiceUnavailableError } from './service-unavailable.ts';

describe('asServiceUnavailable', () => {
  it('names the driver, mongoose and ioredis errors of an unreachable datastore, and nothing else', () => {
    for (const e of [
      { name: 'MongoServerSelectionError', message: 'Server selection timed out after 10000 ms' },
      { name: 'MongoNetworkTimeoutError', message: 'connection 3 to 127.0.0.1:27017 timed out' },
      { name: 'MongooseServerSelectionError', message: 'x' },
      { name: 'Error', code: 'EPIPE', message: 'This socket has been ended by the other party' },
      { name: 'Error', code: 'ECONNRESET', message: 'read ECONNRESET' },
      { name: 'Error', message: 'Command timed out' },
      { name: 'Error', message: "Stream isn't writeable and enableOfflineQueue options is false" },
      { name: 'Error', message: 'Connection is closed.' },
      { name: 'MaxRetriesPerRequestError', message: 'Reached the max retries per request limit (which is 1).' },
      { name: 'RequestDeadlineError', code: 'CONNECT_REQUEST_DEADLINE', message: 'No answer within 10000 ms' },
    ]) {
      const outage = asServiceUnavailable(e);
      expect(outage, e.name + ': ' + e.message).toBeInstanceOf(ServiceUnavailableError);
      expect(outage!.status).toBe(503);
      expect(outage!.retryAfterSeconds).toBeGreaterThanOrEqual(1);
    }
    for (const e of [new TypeError("Cannot read properties of undefined (reading 'x')"), { name: 'ReplyError', message: 'ERR wrong number of arguments' }]) {
      expect(asServiceUnavailable(e)).toBeUndefined();
    }
  });
});

describe('answerWithinDeadline', () => {
  it('answers a POST with a body whose handler never finishes: 503 service-unavailable problem+json with Retry-After', async () => {
    const app = Fastify();
    app.setErrorHandler(errorHandler);
    answerWithinDeadline(app, 300);
    app.post('/stuck', () => new Promise(() => undefined));
    app.post('/fine', async () => ({ ok: true }));
    // A real socket: whether the body has all arrived is read from the connection's request.
    const origin = await app.listen({ port: 0, host: '127.0.0.1' });
    const post = (path: string) => fetch(origin + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ a: 1 }) });
    try {
      const stuck = await post('/stuck');
      expect(stuck.status).toBe(503);
      expect(stuck.headers.get('content-type')).toMatch(/^application\/problem\+json/);
      expect(stuck.headers.get('retry-after')).toMatch(/^[1-9]\d*$/);
      expect(await stuck.json()).toMatchObject({ type: expect.stringMatching(/\/service-unavailable$/), status: 503, instance: '/stuck' });
      // A request that finishes in time is untouched, and its timer does not fire later.
      const fine = await post('/fine');
      expect(fine.status).toBe(200);
    } finally {
      await app.close();
    }
  });
});

describe('answerWithinDeadline, a body shorter than its Content-Length', () => {
  it('408 request-timeout problem+json naming the announced length, and the connection closed; not a 503 blaming a datastore', async () => {
    const app = Fastify();
    app.setErrorHandler(errorHandler);
    answerWithinDeadline(app, 300);
    app.post('/users', async () => ({ ok: true }));
    const port = Number(new URL(await app.listen({ port: 0, host: '127.0.0.1' })).port);
    try {
      const answer = await rawExchange(port, 'POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"a":1}');
      const [head, body] = answer.split('\r\n\r\n');
      expect(head).toMatch(/^HTTP\/1\.1 408 /);
      expect(head).toMatch(/\r\ncontent-type: application\/problem\+json/i);
      expect(head).toMatch(/\r\nconnection: close/i);
      expect(JSON.parse(body!)).toMatchObject({ type: expect.stringMatching(/\/request-timeout$/), status: 408, detail: expect.stringContaining('Content-Length said 100 bytes') });
    } finally {
      await app.close();
    }
  });
});


describe('answerWithinDeadline, a body sent slowly', () => {
  it('a body that finishes just before the deadline, its handler taking 100 ms past it: the handler\'s answer, not a 503 (the answer\'s deadline runs from the body\'s end)', async () => {
    const app = Fastify();
    app.setErrorHandler(errorHandler);
    answerWithinDeadline(app, 600);
    let handled = 0;
    // A datastore answering in 100 ms, as a loaded one may: the handler finishes after the body's deadline.
    app.post('/users', async () => {
      await new Promise((r) => setTimeout(r, 100));
      return { handled: ++handled };
    });
    const port = Number(new URL(await app.listen({ port: 0, host: '127.0.0.1' })).port);
    try {
      // The last byte 50 ms before the body's deadline.
      const answer = await rawExchange(port, 'POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 7\r\nConnection: close\r\n\r\n{"a":1', { bytes: '}', afterMs: 550 });
      expect(answer).toMatch(/^HTTP\/1\.1 200 /);
      expect(handled).toBe(1);
    } finally {
      await app.close();
    }
  });

  it('the time a hook held the request before its body was read counts: held 400 ms of a 600 ms deadline, a handler answering 300 ms later is too late (503); it was 200, the deadline starting afresh', async () => {
    const app = Fastify();
    app.setErrorHandler(errorHandler);
    answerWithinDeadline(app, 600);
    // A sign-in check waiting on a database that does not answer, then the handler's own wait.
    app.addHook('onRequest', (_request, _reply, done) => void setTimeout(done, 400));
    app.post('/users', async () => {
      await new Promise((r) => setTimeout(r, 300));
      return { ok: true };
    });
    const origin = await app.listen({ port: 0, host: '127.0.0.1' });
    try {
      const res = await fetch(`${origin}/users`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
      expect(res.status).toBe(503);
    } finally {
      await app.close();
    }
  });

  it('a request held by a hook before its body is read (a rate limit waiting on Redis): 503 when the first deadline passes', async () => {
    const app = Fastify();
    app.setErrorHandler(errorHandler);
    answerWithinDeadline(app, 300);
    app.addHook('onRequest', (_request, _reply, done) => void setTimeout(done, 60_000).unref());
    app.get('/held', async () => ({ ok: true }));
    const origin = await app.listen({ port: 0, host: '127.0.0.1' });
    try {
      const res = await fetch(`${origin}/held`);
      expect(res.status).toBe(503);
      expect(await res.json()).toMatchObject({ type: expect.stringMatching(/\/service-unavailable$/), status: 503 });
    } finally {
      await app.close();
    }
  });
});

describe('answerWithinDeadline, the handler finishing after its 503', () => {
  it('the late reply, the late error and the write given up are one warn line each, with how the handler ended, and no email, query token or credential from the URL or the error', async () => {
    const lines: string[] = [];
    const log = createLogger('debug', 'api', new Writable({ write: (chunk: Buffer, _enc, cb) => (lines.push(...chunk.toString().split('\n').filter(Boolean)), cb()) }));
    const app = Fastify({ loggerInstance: log }) as unknown as FastifyInstance;
    app.setErrorHandler(errorHandler);
    answerWithinDeadline(app, 300);
    let finished = 0;
    const late = (what: 'reply' | 'send' | 'throw' | 'abandon') => async (request: FastifyRequest, reply: FastifyReply) => {
      await new Promise((r) => setTimeout(r, 600));
      finished++;
      if (what === 'abandon') throw new WriteAbandonedError();
      request.logFields = { outcome: 'updated', version: 7 };
      // As POST /users answers: a status of its own, and the body sent through the reply.
      if (what === 'send') return reply.status(201).send({ ok: true });
      if (what === 'throw') throw Object.assign(new Error('E11000 duplicate key: { email_normalized: "jane.doe@example.com" } via mongodb://admin:HUNTER2@db'), { keyValue: { email_normalized: 'jane.doe@example.com' } });
      return { ok: true };
    };
    app.get('/users/:id', late('reply'));
    app.post('/users', late('throw'));
    app.delete('/users/:id', late('abandon'));
    app.put('/users/:id', late('send'));
    const origin = await app.listen({ port: 0, host: '127.0.0.1' });
    try {
      const read = await fetch(`${origin}/users/jane.doe@example.com?access_token=QUERY-TOKEN-SECRET&x=1`);
      const write = await fetch(`${origin}/users?access_token=QUERY-TOKEN-SECRET`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
      const gone = await fetch(`${origin}/users/x`, { method: 'DELETE' });
      const sent = await fetch(`${origin}/users/y`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: '{}' });
      expect([read.status, write.status, gone.status, sent.status]).toEqual([503, 503, 503, 503]);
      // The late lines are what this is about: wait until the handlers ended and each was logged.
      await vi.waitFor(() => expect(finished === 4 && lines.filter((l) => /handler (finished|failed) later|stopped there/.test(l)).length).toBe(4), { timeout: 5000 });
      const late = lines.filter((l) => /late_outcome/.test(l)).map((l) => JSON.parse(l) as { level: number; late_outcome: string; late_ms: number; late?: object; err?: { message: string } });
      expect(late.map((l) => [l.level, l.late_outcome]).sort()).toEqual([
        [40, 'abandoned'],
        [40, 'answered'],
        [40, 'answered'],
        [40, 'failed'],
      ]);
      // What landed after the 503 says what it was (the route's outcome and version).
      for (const l of late.filter((l) => l.late_outcome === 'answered')) expect(l.late).toEqual({ outcome: 'updated', version: 7 });
      for (const l of late) expect(l.late_ms).toBeGreaterThanOrEqual(200);
      expect(late.find((l) => l.late_outcome === 'failed')!.err!.message).toContain('E11000');
      // In their place, not beside them: Fastify's own lines (error level, a stack trace) are gone.
      expect(lines.filter((l) => /already sent|reply\.sent/.test(l))).toEqual([]);
      const text = lines.join('\n');
      expect(text).toContain('j***@e***.com');
      for (const secret of ['jane.doe', 'QUERY-TOKEN-SECRET', 'HUNTER2', 'keyValue']) expect(text).not.toContain(secret);
    } finally {
      await app.close();
    }
  });
});
