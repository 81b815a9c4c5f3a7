import { randomUUID } from 'node:crypto';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import formbody from '@fastify/formbody';
import type { ApiDeps } from './api-deps.ts';
import { PROBLEM_TYPE_BASE, REQUEST_DEADLINE_MS, requestPath } from '@connect/shared';
import { DEFAULT_BODY_LIMIT, FORM_BODY_LIMIT, clientErrorHandler, connectMethodHandler, errorHandler, expectationFailedHandler, notFoundHandler, sendProblem } from './error-handler.ts';
import { decorateRequestLog, requestLogController } from './request-log.ts';
import { MissingHostError, RepeatedHeaderError, UnsupportedTransferCodingError, UnsupportedMediaTypeError } from './http-errors.ts';
import { registerJsonBodyParser } from './json-body.ts';
import { RouteTable } from './route-table.ts';
import { ServiceUnavailableError, answerWithinDeadline, refusedUnapplied } from './service-unavailable.ts';
import { adminQueuesRoutes } from './routes/admin-queues.ts';
import { registerDocs } from './routes/docs.ts';
import { healthRoutes } from './routes/health.ts';
import { metricsRoutes, observeRequestDurations } from './routes/metrics.ts';
import { oauthTokenRoute } from './routes/oauth-token.ts';
import { usersRoutes } from './routes/users.ts';
import { API_VERSION_HEADER, explicitApiVersion } from './routes/authenticate.ts';
import { registerRateLimits } from './rate-limits.ts';
import { zodValidatorCompiler } from './validator-compiler.ts';

const REQUEST_ID = /^[A-Za-z0-9._-]{1,128}$/;

/** A hop count as Fastify takes it at run time, typed: the nearest `hops` addresses are proxies. */
function trustHops(hops: number): (address: string, hop: number) => boolean {
  return (_address, hop) => hop < hops;
}

/**
 * The HTTP server's own limits. Headers get the time a body gets (the request deadline), checked
 * every second: Node's defaults (60 s, checked every 30 s) let a client sending a header line now
 * and then hold a connection for about 80 s. The answer is 408 problem+json (clientErrorHandler).
 */
export const HTTP_SERVER_OPTIONS = { headersTimeout: REQUEST_DEADLINE_MS, connectionsCheckingInterval: 1000, requireHostHeader: false } as const;

/**
 * Headers Node keeps the first of when given twice, where a proxy or the client's own stack may
 * act on the last: the body's type, the credentials, and Host (RFC 9112 §3.2 asks a 400 for two).
 * Refused rather than guessed (as two X-Nabla-Api-Version headers or a JSON member given twice
 * are). `requireHostHeader: false` above lets a request without Host reach the API, which refuses
 * it in problem+json (Node's own 400 had no body).
 */
const SINGLE_HEADERS = new Map([
  ['content-type', 'Content-Type'],
  ['authorization', 'Authorization'],
  ['host', 'Host'],
]);

/** The first of SINGLE_HEADERS given more than once in `rawHeaders` (names and values alternating), lower-cased. */
function repeatedHeaderIn(rawHeaders: readonly string[]): string | undefined {
  const seen = new Set<string>();
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!.toLowerCase();
    if (!SINGLE_HEADERS.has(name)) continue;
    if (seen.has(name)) return SINGLE_HEADERS.get(name);
    seen.add(name);
  }
  return undefined;
}

/** The Fastify application over ready-made dependencies: routes, parsers, error mapping. */
export async function buildApp(deps: ApiDeps): Promise<FastifyInstance> {
  const underBase = `${deps.config.basePath}/`;
  /** Headers every answer gets: from the onSend hook, and from frameworkErrors, which answers before any hook. */
  const commonHeaders = (request: FastifyRequest, reply: FastifyReply): void => {
    reply.header('x-request-id', request.id);
    // The path also of a request line in absolute form (`GET http://host/v1/...`), which Node passes on whole.
    const underBasePath = requestPath(request.url).startsWith(underBase);
    // Answers given before the version was settled (401, 405, an unknown route under the base
    // path, a rate limit, a URL refused before routing) still carry the version the client asked
    // for, when it asked a known one.
    if (!reply.hasHeader(API_VERSION_HEADER) && underBasePath) {
      const asked = explicitApiVersion(request);
      if (asked) reply.header(API_VERSION_HEADER, asked);
    }
    // Under {base} every answer is about a client's users or tokens (emails among them): never cached.
    if (underBasePath && !reply.hasHeader('cache-control')) reply.header('cache-control', 'no-store');
  };
  const app = Fastify({
    loggerInstance: deps.log,
    logController: requestLogController(),
    // A user upsert is a few hundred bytes; 64 KiB leaves room and bounds abuse (413 beyond).
    bodyLimit: DEFAULT_BODY_LIMIT,
    // Not requestIdHeader: with it set, Fastify takes the header as it comes and
    // calls genReqId only when it is absent, so the pattern would never apply.
    requestIdHeader: false,
    // The client's IP (per-IP token limit, logs) from X-Forwarded-For only when TRUST_PROXY says whose to believe.
    trustProxy: typeof deps.config.trustProxy === 'number' ? trustHops(deps.config.trustProxy) : deps.config.trustProxy,
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
    },
    // Errors on malformed JSON, never merged prototypes.
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    // docs/contract.md allows 256-character external ids; percent-encoded that is up to 768.
    routerOptions: { maxParamLength: 1024 },
    // Fastify answers malformed or over-long URLs itself: make those problem+json too, without echoing the URL.
    frameworkErrors: (error, request, reply) => {
      const status = error.statusCode ?? 400;
      // Answered before routing: the onSend hook below does not run for it, so its headers are set here,
      // and no "request completed" line is written, so it gets this one (the URL masked as in every line).
      commonHeaders(request, reply);
      request.log.info({ req: request, res: { statusCode: status } }, 'request refused before routing');
      void sendProblem(reply, {
        type: PROBLEM_TYPE_BASE + (status === 414 ? 'uri-too-long' : 'bad-url'),
        title: status === 414 ? 'URI too long' : 'Bad URL',
        status,
        detail: status === 414 ? 'A path segment is longer than this API accepts.' : 'The URL could not be decoded.',
      });
    },
    clientErrorHandler,
    http: HTTP_SERVER_OPTIONS,
    // Fastify's own 503 while closing is plain JSON; ours (below) is problem+json.
    return503OnClosing: false,
    forceCloseConnections: 'idle',
  }) as unknown as FastifyInstance;
  app.server.on('checkExpectation', expectationFailedHandler);
  app.server.on('connect', connectMethodHandler);
  decorateRequestLog(app);
  app.setValidatorCompiler(zodValidatorCompiler);
  // Responses are built from typed views; the zod response schemas document them
  // (OpenAPI) without being re-validated on every answer.
  app.setSerializerCompiler(() => (data) => JSON.stringify(data));
  registerJsonBodyParser(app);
  // From close() on (shutdown's stop-http), a request still arriving on a kept-alive connection is
  // refused unapplied, with Connection: close (Fastify sets it), so the client retries elsewhere.
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  app.addHook('onRequest', (request, _reply, done) => {
    if (!closing) return done();
    refusedUnapplied.add(request);
    done(new ServiceUnavailableError('This instance is shutting down and did not apply the request; send it again.', 1));
  });
  // Bodies are read as sent: a compressed one would be parsed as text and called malformed.
  app.addHook('onRequest', (request, _reply, done) => {
    const encoding = request.headers['content-encoding']?.trim().toLowerCase();
    if (encoding && encoding !== 'identity') {
      return done(new UnsupportedMediaTypeError(`Content-Encoding ${encoding.slice(0, 40)} is not accepted; send the body uncompressed.`));
    }
    done();
  });
  // What Node's parser lets through but this API must not guess at (RFC 9112; docs/contract.md, HTTP).
  app.addHook('onRequest', (request, reply, done) => {
    if (request.raw.httpVersion === '1.1' && request.headers.host === undefined) return done(new MissingHostError());
    const codings = request.headers['transfer-encoding'];
    if (codings !== undefined && codings.split(',').some((c) => c.trim().toLowerCase() !== 'chunked')) {
      // The body's framing is not one this server reads: what is left of it would be read as the next request.
      reply.header('connection', 'close');
      return done(new UnsupportedTransferCodingError(codings));
    }
    const repeated = repeatedHeaderIn(request.raw.rawHeaders);
    done(repeated ? new RepeatedHeaderError(repeated) : undefined);
  });
  const routes = new RouteTable();
  app.addHook('onRoute', (route) => routes.add(route.method, route.url));
  const notFound = notFoundHandler(routes);
  app.setNotFoundHandler(notFound);
  // Fastify reads the body of a request no route takes before its 404 handler runs: a QUERY without
  // Content-Type, or a POST with a bad body, to a path or method nobody serves is a 404 or 405, not a 400.
  app.setErrorHandler((error: FastifyError, request, reply) =>
    request.is404 && typeof error.code === 'string' && (error.code.startsWith('FST_ERR_CTP_') || error.code === 'FST_ERR_ROUTE_MISSING_CONTENT_TYPE') ? notFound(request, reply) : errorHandler(error, request, reply),
  );
  // No request waits on a datastore forever: past the deadline it is a 503 service-unavailable with Retry-After.
  answerWithinDeadline(app);
  observeRequestDurations(app, deps);
  app.addHook('onSend', async (request, reply) => {
    commonHeaders(request, reply);
    // From SIGTERM on, end keep-alive connections after their answer: clients open new ones, which the
    // load balancer sends elsewhere once /readyz fails, and close() does not wait for the idle timeout.
    if (closing || deps.shuttingDown()) reply.header('connection', 'close');
  });

  await app.register(formbody, { bodyLimit: FORM_BODY_LIMIT });
  await registerRateLimits(app, deps);
  // Docs first: @fastify/swagger collects the routes registered after it.
  await registerDocs(app, deps);
  await app.register(metricsRoutes, deps);
  await app.register(healthRoutes, deps);
  await app.register(adminQueuesRoutes, deps);
  await app.register(
    async (base) => {
      await base.register(oauthTokenRoute, deps);
      await base.register(usersRoutes, deps);
    },
    { prefix: deps.config.basePath },
  );
  return app;
}
