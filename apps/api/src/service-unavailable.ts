import type { IncomingMessage } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
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

/**
 * Requests refused with a 503 before anything of them was applied (an instance shutting down):
 * unlike a 503 from a datastore that stopped answering, whose write may yet land, these are known
 * to have changed nothing, and POST /users says so (docs/api-lifecycle.md, X-Connect-Outcome).
 */
export const refusedUnapplied = new WeakSet<FastifyRequest>();

/**
 * A socket's own errors, raised as they are by a driver whose server went away mid-operation
 * (FerretDB killed: a plain Error with code EPIPE, "This socket has been ended by the other
 * party", which answered 500 in a chaos run).
 */
const SOCKET_ERROR_CODES = new Set(['EPIPE', 'ECONNRESET', 'ECONNREFUSED', 'ECONNABORTED', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN']);

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
  if (/^Mongo/.test(error.name ?? '') || /^Mongoose/.test(error.name ?? '') || SOCKET_ERROR_CODES.has(error.code ?? '')) {
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

/** When each request answered by a deadline got its 503 (or 408). */
const answeredByDeadline = new WeakMap<object, number>();

/**
 * Whether the request was answered at a deadline already: its handler, still running, must send
 * no write from then on (the caller was told to retry; docs/guarantees.md, "No lost update").
 */
export function answeredAtDeadline(request: FastifyRequest): boolean {
  return answeredByDeadline.has(request);
}

/** Destroys the request's connection if its body is still not all in after `ms`. */
function closeIfBodyStalls(request: IncomingMessage, ms: number): void {
  const socket = request.socket;
  if (socket.destroyed) return;
  const timer = setTimeout(() => {
    if (!request.complete) socket.destroy();
  }, ms);
  const stop = () => clearTimeout(timer);
  request.once('end', stop);
  socket.once('close', stop);
}

/**
 * Answers every request in bounded time. Two deadlines of REQUEST_DEADLINE_MS each:
 *
 * - the body's, from the request's arrival: a body not all arrived by then (a client sending
 *   less than its Content-Length) is a 408, the connection closed;
 * - the answer's, from the moment the body is in (Fastify's preValidation): a request still
 *   unanswered then (waiting on a database or Redis that does not answer) is a 503
 *   service-unavailable with Retry-After, through the error handler. A request held before its
 *   body was read (a hook waiting on Redis) gets it when the first deadline passes.
 *
 * The 503 counts only the server's own time: counted from arrival, a body sent slowly that
 * finished just before 10 s got a 503 blaming a datastore that took 15 ms, and its write landed.
 * The server's time before it reads the body (the onRequest hooks: the bearer token's client
 * looked up in a database that does not answer) counts: started afresh at the body's end, the
 * answer's deadline let a request run 10 s more after that, up to 20 s in all.
 * Whatever the request was doing carries on, but sends no write from then on (answeredAtDeadline).
 * When its handler ends, its late answer is dropped with one warn line saying how it ended
 * (`late_outcome`: `answered` — a write sent before the 503 landed —, `failed` with the error,
 * or `abandoned`), in place of Fastify's own "Reply was already sent" or "Promise errored, but
 * reply.sent = true was set" at error level with a stack trace.
 *
 * Not Fastify's own `handlerTimeout` (5.12): it clears its timer on the
 * request's `close` event, which Node 20 emits as soon as a request body has
 * been read, so it never fires for a POST (a body-less GET works).
 */
export function answerWithinDeadline(app: FastifyInstance, deadlineMs = REQUEST_DEADLINE_MS): void {
  /** Requests whose answer's deadline runs (they reached preValidation). */
  const answerDeadlines = new WeakSet<object>();
  /** When each request arrived (performance.now()), and the server's time on it before it began reading its body (its onRequest hooks), in ms. */
  const arrivedAt = new WeakMap<object, number>();
  const beforeBody = new WeakMap<object, number>();
  const sinceArrival = (request: FastifyRequest) => performance.now() - (arrivedAt.get(request) ?? performance.now());
  const unanswered = (reply: FastifyReply) => !reply.sent && !reply.raw.headersSent;
  const answerAtDeadline = (request: FastifyRequest, reply: FastifyReply, error: Error) => {
    answeredByDeadline.set(request, performance.now());
    void reply.send(error);
    // What the handler sends when it ends goes nowhere, without Fastify's "Reply was already sent"
    // warning and its stack trace for each (the routes that set a status send their answer themselves).
    (reply as { send: unknown }).send = () => reply;
  };
  const startAnswerDeadline = (request: FastifyRequest, reply: FastifyReply) => {
    if (answerDeadlines.has(request)) return;
    const left = deadlineMs - (beforeBody.get(request) ?? sinceArrival(request));
    const timer = setTimeout(() => {
      if (unanswered(reply)) answerAtDeadline(request, reply, new RequestDeadlineError(deadlineMs));
    }, Math.max(0, left));
    answerDeadlines.add(request);
    // The response's `close` comes once it is written, or when the client went away.
    reply.raw.once('close', () => clearTimeout(timer));
  };
  app.addHook('onRequest', (request, reply, done) => {
    arrivedAt.set(request, performance.now());
    const bodyDeadline = setTimeout(() => {
      if (!unanswered(reply) || answerDeadlines.has(request)) return;
      // Still waiting for the body the client announced: the client's delay, not ours. A 408,
      // and the connection closed (what is left of the body would be read as the next request).
      if (!request.raw.complete) {
        reply.header('connection', 'close');
        answerAtDeadline(request, reply, new RequestTimeoutError(deadlineMs, request.headers['content-length']));
        return;
      }
      // The body is in but the request never reached preValidation: held by a hook (the rate
      // limit's Redis, say) for the whole deadline.
      answerAtDeadline(request, reply, new RequestDeadlineError(deadlineMs));
    }, deadlineMs);
    reply.raw.once('close', () => {
      clearTimeout(bodyDeadline);
      // Answered before its body was all in (a 401 from the bearer check, a 429): Node keeps the
      // connection to read the rest, and a client that never sends it held a socket for good (and a
      // shutdown for its whole grace period). Such a connection is closed when the body's deadline
      // passes; a client that does finish its body keeps its connection.
      if (!request.raw.complete) closeIfBodyStalls(request.raw, Math.max(0, deadlineMs - sinceArrival(request)));
    });
    done();
  });
  app.addHook('preParsing', (request, _reply, payload, done) => {
    beforeBody.set(request, sinceArrival(request));
    done(null, payload);
  });
  app.addHook('preValidation', (request, reply, done) => {
    startAnswerDeadline(request, reply);
    done();
  });
  // A handler that ends after its request was answered by a deadline: its answer (or error) goes
  // nowhere; say so once, at warn. Only promises are wrapped: a handler that answers through
  // reply.send from a callback returns undefined, and Fastify must go on treating it as such.
  app.addHook('onRoute', (route) => {
    const handler = route.handler;
    route.handler = function (this: FastifyInstance, request: FastifyRequest, reply: FastifyReply) {
      const result: unknown = handler.call(this, request, reply);
      if (!isPromiseLike(result)) return result;
      const late = (outcome: 'answered' | 'failed', err?: unknown) => {
        const answeredAt = answeredByDeadline.get(request);
        if (answeredAt === undefined) return false;
        const lateMs = Math.round(performance.now() - answeredAt);
        if ((err as { code?: string } | undefined)?.code === 'CONNECT_WRITE_ABANDONED') {
          request.log.warn({ late_outcome: 'abandoned', late_ms: lateMs }, 'the request was answered at its deadline; its handler stopped there and wrote nothing more');
        } else if (outcome === 'answered') {
          // What the handler did (the route's fields: outcome, version) landed after all.
          request.log.warn({ late_outcome: outcome, late_ms: lateMs, late: request.logFields ?? undefined }, 'the request was answered at its deadline; its handler finished later and what it did stands (a retry of the same request settles it)');
        } else {
          request.log.warn({ late_outcome: outcome, late_ms: lateMs, err }, 'the request was answered at its deadline; its handler failed later');
        }
        return true;
      };
      return Promise.resolve(result).then(
        (payload) => (late('answered') ? undefined : payload),
        (err: unknown) => {
          if (late('failed', err)) return undefined;
          throw err;
        },
      );
    };
  });
}

function isPromiseLike(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as PromiseLike<unknown> | null)?.then === 'function';
}

class RequestDeadlineError extends Error {
  readonly code = 'CONNECT_REQUEST_DEADLINE';
  constructor(deadlineMs: number) {
    super(`No answer within ${deadlineMs} ms`);
    this.name = 'RequestDeadlineError';
  }
}
