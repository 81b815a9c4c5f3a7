import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';
import { errorHandler } from './error-handler.ts';
import { answerWithinDeadline, asServiceUnavailable, ServiceUnavailableError } from './service-unavailable.ts';

describe('asServiceUnavailable', () => {
  it('names the driver, mongoose and ioredis errors of an unreachable datastore, and nothing else', () => {
    for (const e of [
      { name: 'MongoServerSelectionError', message: 'Server selection timed out after 10000 ms' },
      { name: 'MongoNetworkTimeoutError', message: 'connection 3 to 127.0.0.1:27017 timed out' },
      { name: 'MongooseServerSelectionError', message: 'x' },
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
    try {
      const stuck = await app.inject({ method: 'POST', url: '/stuck', payload: { a: 1 } });
      expect(stuck.statusCode).toBe(503);
      expect(stuck.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(stuck.headers['retry-after']).toMatch(/^[1-9]\d*$/);
      expect(stuck.json()).toMatchObject({ type: expect.stringMatching(/\/service-unavailable$/), status: 503, instance: '/stuck' });
      // A request that finishes in time is untouched, and its timer does not fire later.
      const fine = await app.inject({ method: 'POST', url: '/fine', payload: { a: 1 } });
      expect(fine.statusCode).toBe(200);
    } finally {
      await app.close();
    }
  });
});
