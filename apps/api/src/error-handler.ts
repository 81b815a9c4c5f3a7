import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { DomainError, PROBLEM_TYPE_BASE, requestPath, type FieldError } from '@connect/shared';
import { asServiceUnavailable } from './service-unavailable.ts';
import { MethodNotAllowedError, RateLimitedError, UnauthorizedError } from './http-errors.ts';
import type { RouteTable } from './route-table.ts';

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  instance?: string;
  errors?: FieldError[];
  [extension: string]: unknown;
}

/** The problem's `instance`: the request path (no query, no scheme and authority), and only when short (never reflect a huge URL). */
export function instanceOf(request: FastifyRequest): string | undefined {
  const path = requestPath(request.url);
  return path.length <= 200 ? path : undefined;
}

export function sendProblem(reply: FastifyReply, problem: Problem): FastifyReply {
  if (problem.status === 401 && !reply.hasHeader('www-authenticate')) reply.header('www-authenticate', 'Bearer');
  // The refusal's reason on the request's one log line (docs/operations.md, Logs): the problem's
  // slug, never its detail or field paths (a JSON member's name can be an email).
  const request = reply.request as FastifyRequest | undefined;
  if (request && problem.type.startsWith(PROBLEM_TYPE_BASE)) request.logFields = { ...request.logFields, problem: problem.type.slice(PROBLEM_TYPE_BASE.length) };
  return reply.status(problem.status).type('application/problem+json').send(problem);
}

const FASTIFY_CODES: Record<string, { slug: string; title: string; status: number; detail: string }> = {
  FST_ERR_CTP_INVALID_MEDIA_TYPE: { slug: 'unsupported-media-type', title: 'Unsupported media type', status: 415, detail: 'Send the body as application/json.' },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: { slug: 'malformed-body', title: 'Malformed body', status: 400, detail: 'The Content-Length does not match the body.' },
  FST_ERR_CTP_EMPTY_JSON_BODY: { slug: 'malformed-body', title: 'Malformed body', status: 400, detail: 'The body is empty; send a JSON object.' },
  FST_ERR_CTP_INVALID_JSON_BODY: { slug: 'malformed-body', title: 'Malformed body', status: 400, detail: 'The body is not valid JSON.' },
  FST_ERR_CTP_INVALID_TYPE: { slug: 'unsupported-media-type', title: 'Unsupported media type', status: 415, detail: 'The Content-Type header is not valid.' },
};

/**
 * The one place that turns errors into RFC 9457 problem+json. Domain errors carry
 * their own type and status; Fastify's body-parsing errors are named; anything
 * else is a 500 whose details go to the log only (no stack trace in a response).
 */
export function errorHandler(error: FastifyError, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  const instance = instanceOf(request);
  // A datastore that does not answer (or refuses, e.g. FerretDB out of PostgreSQL
  // connections), or a request past its deadline, is a retryable outage, not a bug.
  const outage = asServiceUnavailable(error);
  if (outage) {
    if (outage !== (error as unknown)) request.log.warn({ err: error.message, name: error.name, code: error.code }, 'datastore unavailable');
    reply.header('retry-after', String(outage.retryAfterSeconds));
    return sendProblem(reply, { type: outage.type, title: outage.title, status: outage.status, detail: outage.message, instance });
  }
  if (error instanceof DomainError) {
    if (error instanceof RateLimitedError) reply.header('retry-after', String(error.retryAfterSeconds));
    if (error instanceof UnauthorizedError) reply.header('www-authenticate', error.challenge);
    if (error instanceof MethodNotAllowedError) reply.header('allow', error.allowed.join(', '));
    return sendProblem(reply, {
      type: error.type,
      title: error.title,
      status: error.status,
      detail: error.message,
      instance,
      ...(error.errors ? { errors: error.errors } : {}),
    });
  }
  if (error.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
    // Name the limit, so the caller knows how far to shrink the body.
    const limit = request.routeOptions.bodyLimit ?? DEFAULT_BODY_LIMIT;
    return sendProblem(reply, {
      type: PROBLEM_TYPE_BASE + 'body-too-large',
      title: 'Body too large',
      status: 413,
      detail: `The body is larger than ${limit} bytes, the most this endpoint accepts.`,
      limit_bytes: limit,
      instance,
    });
  }
  const known = error.code ? FASTIFY_CODES[error.code] : undefined;
  if (known) {
    const { slug, ...problem } = known;
    return sendProblem(reply, { type: PROBLEM_TYPE_BASE + slug, ...problem, instance });
  }
  if (error instanceof SyntaxError || (error.statusCode === 400 && /JSON|body/i.test(error.message))) {
    return sendProblem(reply, { type: PROBLEM_TYPE_BASE + 'malformed-body', title: 'Malformed body', status: 400, detail: 'The body is not valid JSON.', instance });
  }
  const status = error.statusCode ?? 500;
  if (status >= 400 && status < 500) {
    request.log.info({ code: error.code, err: error.message }, 'client error');
    // Named by its status (a 403 from the docs' static files said "Bad request").
    const title = status === 400 ? 'Bad request' : (STATUS_CODES[status] ?? 'Client error');
    const slug = status === 400 ? 'bad-request' : title.toLowerCase().replace(/[^a-z0-9]+/g, '-');
    return sendProblem(reply, { type: PROBLEM_TYPE_BASE + slug, title, status, detail: 'The request could not be processed.', instance });
  }
  // The logger's error serializer scrubs the message and the stack (which repeats the message).
  request.log.error({ err: error }, 'unhandled error');
  return sendProblem(reply, { type: PROBLEM_TYPE_BASE + 'internal', title: 'Internal error', status: 500, detail: 'Something went wrong on our side; it has been logged.', instance });
}

/** Fastify's bodyLimit for the app (build-app.ts); a route may set its own. */
export const DEFAULT_BODY_LIMIT = 64 * 1024;
/** The limit of a form body (the token endpoint's other shape; build-app.ts). */
export const FORM_BODY_LIMIT = 16 * 1024;

/** No route for this method and path: 405 with `Allow` when the path answers other methods, else 404. */
export function notFoundHandler(routes: RouteTable) {
  return (request: FastifyRequest, reply: FastifyReply): FastifyReply => {
    const path = requestPath(request.url);
    const allowed = routes.allowedFor(path);
    if (allowed.length > 0 && !allowed.includes(request.method)) return errorHandler(new MethodNotAllowedError(allowed) as unknown as FastifyError, request, reply);
    return sendProblem(reply, { type: PROBLEM_TYPE_BASE + 'not-found', title: 'Not found', status: 404, detail: `No such route.${slashHint(routes, path, request.method)}`, instance: instanceOf(request) });
  };
}

/**
 * For a path that would be a route without its doubled or trailing slash, the route it
 * missed: the commonest cause is a base URL configured with a trailing "/", to which the
 * client appends "/users". The path stays refused (a client that signed such a token URL as
 * its assertion's `aud` would be refused next anyway); the answer says what to change.
 */
function slashHint(routes: RouteTable, path: string, method: string): string {
  const tidy = path.replace(/\/{2,}/g, '/').replace(/(.)\/$/, '$1');
  if (tidy === path || tidy.length > 200 || !routes.allowedFor(tidy).includes(method)) return '';
  return ` Did you mean ${tidy}? This path has a doubled or trailing "/" (a base URL that ends in "/" gives one).`;
}

/**
 * The server's `checkExpectation` listener: a request with an `Expect` other than `100-continue`.
 * Node's own answer is a 417 with an empty body; this one is problem+json like every other refusal.
 */
export function expectationFailedHandler(request: IncomingMessage, response: ServerResponse): void {
  const body = JSON.stringify({
    type: PROBLEM_TYPE_BASE + 'expectation-failed',
    title: STATUS_CODES[417],
    status: 417,
    detail: 'The only Expect this server meets is 100-continue; send the request without the header.',
  });
  // Never cached, as every answer under the base path (this one comes before any route or hook).
  // A refused POST /users says it changed nothing, as every other refusal of it does (docs/api-lifecycle.md).
  const upsert = isUpsert(request.method, request.url);
  response.writeHead(417, {
    'content-type': 'application/problem+json',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    connection: 'close',
    ...(upsert ? { 'x-connect-outcome': 'unchanged' } : {}),
  });
  response.end(body);
  request.resume();
}

/** A POST /users, whose every answer says what it did (`X-Connect-Outcome`), refusals included. */
function isUpsert(method: string | undefined, url: string | undefined): boolean {
  return method === 'POST' && /\/users\/?$/.test(requestPath(url ?? ''));
}

/**
 * The method and target of the request line the parser was reading, when the bytes it refused
 * begin with one (they do when the request came in one piece; not when its headers came in
 * several writes and a later one went past the limit).
 */
function requestLineOf(error: Error): { method: string; url: string } | undefined {
  const raw = (error as Error & { rawPacket?: unknown }).rawPacket;
  if (!Buffer.isBuffer(raw)) return undefined;
  const line = /^([A-Z]{1,16}) (\S{1,2048}) HTTP\/1\.[01]\r?\n/.exec(raw.subarray(0, 2100).toString('latin1'));
  return line ? { method: line[1]!, url: line[2]! } : undefined;
}

/**
 * The server's `connect` listener: a CONNECT request (this API is no proxy). Without a listener Node
 * closed the connection without a word; the answer is 400 problem+json (a client's request, never a
 * 5xx), and the connection closed.
 */
export function connectMethodHandler(_request: IncomingMessage, socket: Socket): void {
  const body = JSON.stringify({ type: PROBLEM_TYPE_BASE + 'unsupported-method', title: 'Unsupported method', status: 400, detail: 'CONNECT is not supported: this server is not a proxy.' });
  socket.on('error', () => undefined);
  socket.end(`HTTP/1.1 400 ${STATUS_CODES[400]}\r\nContent-Type: application/problem+json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n${body}`);
}

/** Connections whose refusal waits for the answer in flight on them (clientErrorHandler). */
const refusalsWaiting = new WeakSet<Socket>();

/**
 * Requests Node's HTTP parser refuses before Fastify sees them (headers past the
 * size limit, an unknown method, a broken request line, a request that took too
 * long to arrive) get problem+json too, not Fastify's own JSON. Nothing of the
 * request is echoed, and the connection is closed: the parser cannot go on.
 *
 * When an earlier request on the same connection is still being answered (pipelined, or stray
 * bytes sent after a complete request), its answer goes out first and the refusal after it:
 * written at once, the refusal was the only answer the client read, to a write that had been
 * applied (a 201 lost behind a 400 that says nothing changed).
 */
export function clientErrorHandler(this: { log?: { info: (obj: object, msg: string) => void } } | undefined, error: Error & { code?: string }, socket: Socket): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  const inFlight = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
  if (inFlight && !inFlight.writableFinished) {
    if (refusalsWaiting.has(socket)) return;
    refusalsWaiting.add(socket);
    inFlight.once('close', () => clientErrorHandler.call(this, error, socket));
    return;
  }
  const [status, slug, detail] =
    error.code === 'HPE_HEADER_OVERFLOW'
      ? [431, 'headers-too-large', 'The request headers are larger than this server accepts (16 KiB in all); send fewer or shorter headers.']
      : error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, 'request-timeout', 'The request did not arrive in full in time; send it again.']
        : [400, 'malformed-request', 'The request is not valid HTTP/1.1 (its method, request line or headers could not be read).'];
  const title = STATUS_CODES[status]!;
  const body = JSON.stringify({ type: PROBLEM_TYPE_BASE + slug, title, status, detail });
  // No request reaches Fastify, so no "request completed" line: this one says it was refused (the parser's code, nothing of the request).
  this?.log?.info({ res: { statusCode: status }, code: error.code }, 'request refused by the HTTP parser');
  if (socket.writable) {
    // No-store as every other refusal: a 431 is cacheable by default (RFC 9111 4.2.2) were a cache in between to keep it.
    // A refused POST /users says it changed nothing, as every other refusal of it does.
    const line = requestLineOf(error);
    const outcome = line && isUpsert(line.method, line.url) ? 'X-Connect-Outcome: unchanged\r\n' : '';
    socket.write(`HTTP/1.1 ${status} ${title}\r\nContent-Type: application/problem+json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nCache-Control: no-store\r\n${outcome}Connection: close\r\n\r\n${body}`);
  }
  socket.destroy();
}
