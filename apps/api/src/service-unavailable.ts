import type { FastifyInstance } from 'fastify';
import { DomainError, REQUEST_DEADLINE_MS } from '@connect/shared';

/**
 * How long a request may take, from routing to its answer, before the API gives
 * up on it with a 503 (answerWithinDeadline below). Every datastore call is
 * bounded on its own too (see api-deps.ts), but a request makes several, and a
 * database or Redis that stops answering without closing its connections (a
 * black hole) must not hold an integrator's request open: it gets a clean 503
 * with Retry-After well inside any client's own timeout. Work still running
 * when this fires goes on: a write may land after its 503, which a retry of the
 * same upsert settles (docs/faults.md).
 */
export { REQUEST_DEADLINE_MS };

/**
 * The datastore (MongoDB or Redis) did not answer, or refused: a retryable
 * outage, not a bug. RFC 9457 `service-unavailable`, 503, with Retry-After.
 * Thrown nowhere yet: the error handler maps the driver's and ioredis's own
 * errors to it (asServiceUnavailable); code that learns of an outage itself may throw it.
 */
export class ServiceUnavailableError extends DomainError {
  constructor(
    detail: string,
    readonly retryAfterSeconds: number,
  ) {
    super('service-unavailable', 'Service unavailable', 503, detail);
  }
}

/** ioredis's own words for a connection that is gone or does not answer (its errors have no codes). */
const REDIS_UNAVAILABLE = /^(Command timed out|Connection is closed|Stream isn't writeable|Socket timeout|Reached the max retries per request)/;

/**
 * The outage an error stands for, if it is one: the request took longer than
 * REQUEST_DEADLINE_MS; a MongoDB driver or mongoose error (no server selected,
 * a socket timeout or reset, FerretDB out of PostgreSQL connections); ioredis
 * unable to reach Redis. Anything else is not an outage and stays a 500.
 */
export function asServiceUnavailable(error: { name?: string; code?: string; message?: string }): ServiceUnavailableError | undefined {
  if (error instanceof ServiceUnavailableError) return error;
  if (error.code === 'CONNECT_REQUEST_DEADLINE') {
    return new ServiceUnavailableError('The request did not complete in time; a datastore is slow or unreachable. Retry shortly.', 5);
  }
  // The database stopped a query at its time limit (maxTimeMS: the GET /users list on FerretDB).
  if ((error as { codeName?: string }).codeName === 'MaxTimeMSExpired') {
    return new ServiceUnavailableError('The request did not complete in time; the database is slow. Retry shortly.', 5);
  }
  if (/^Mongo/.test(error.name ?? '') || /^Mongoose/.test(error.name ?? '')) {
    return new ServiceUnavailableError('A datastore did not answer; retry shortly.', 1);
  }
  if (error.name === 'MaxRetriesPerRequestError' || REDIS_UNAVAILABLE.test(error.message ?? '')) {
    return new ServiceUnavailableError('A datastore did not answer; retry shortly.', 1);
  }
  return undefined;
}

/** The request's body had not arrived in full when the deadline came: 408, the caller's to fix. */
export class RequestTimeoutError extends DomainError {
  constructor(deadlineMs: number, contentLength: string | undefined) {
    const announced = contentLength ? ` (Content-Length said ${contentLength} bytes)` : '';
    super('request-timeout', 'Request timeout', 408, `The request body did not arrive in full within ${deadlineMs / 1000} s${announced}; send the whole body with the request.`);
  }
}

/**
 * Answers every request within REQUEST_DEADLINE_MS: a request still unanswered
 * then (waiting on a database or Redis that does not answer) gets a 503
 * service-unavailable with Retry-After, through the error handler; one whose
 * body has not all arrived (a client sending less than its Content-Length) a 408. Whatever the
 * request was doing carries on and its late answer is dropped by Fastify.
 *
 * Not Fastify's own `handlerTimeout` (5.12): it clears its timer on the
 * request's `close` event, which Node 20 emits as soon as a request body has
 * been read, so it never fires for a POST (a body-less GET works).
 */
export function answerWithinDeadline(app: FastifyInstance, deadlineMs = REQUEST_DEADLINE_MS): void {
  app.addHook('onRequest', (request, reply, done) => {
    const timer = setTimeout(() => {
      if (reply.sent || reply.raw.headersSent) return;
      // Still waiting for the body the client announced: the client's delay, not ours. A 408,
      // and the connection closed (what is left of the body would be read as the next request).
      if (!request.raw.complete) {
        reply.header('connection', 'close');
        void reply.send(new RequestTimeoutError(deadlineMs, request.headers['content-length']));
        return;
      }
      void reply.send(new RequestDeadlineError(deadlineMs));
    }, deadlineMs);
    // The response's `close` comes once it is written, or when the client went away.
    reply.raw.once('close', () => clearTimeout(timer));
    done();
  });
}

class RequestDeadlineError extends Error {
  readonly code = 'CONNECT_REQUEST_DEADLINE';
  constructor(deadlineMs: number) {
    super(`No answer within ${deadlineMs} ms`);
    this.name = 'RequestDeadlineError';
  }
}
