import { LogController, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';

declare module 'fastify' {
  interface FastifyRequest {
    /** What the handler learned (an upsert's outcome, the client a token went to), for the request's one log line. */
    logFields: Record<string, unknown> | null;
  }
  interface FastifyContextConfig {
    /**
     * A route that load balancers, orchestrators and Prometheus call every few seconds (`/livez`,
     * `/readyz`, `/metrics`): a successful answer is logged at `debug`, a refusal at `info` as any other.
     */
    polled?: boolean;
  }
}

/**
 * One log line per request at `info` (docs/operations.md, Logs). Fastify's
 * default writes "incoming request" and "request completed", and the handlers
 * wrote a third ("provider user upserted"): three serializations and three
 * writes to stdout per request. The one line is written when the answer has
 * gone and carries all of it: method, path, status, time taken, request id,
 * and the handler's `logFields`. "incoming request" stays, at `debug`, for a
 * request that never completes; refusals still get a line of their own. A
 * polled route's successful answers (probes, scrapes) are logged at `debug`:
 * a probe every 10 s was 8,640 info lines a day per prober.
 */
class OneLinePerRequest extends LogController {
  override incomingRequest(request: FastifyRequest): void {
    if (!this.isLogDisabled(request)) request.log.debug({ req: request }, 'incoming request');
  }

  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    if (this.isLogDisabled(request)) return;
    const fields = { req: request, res: reply, responseTime: reply.elapsedTime, ...request.logFields };
    if (error) reply.log.error({ ...fields, err: error }, 'request errored');
    else if (reply.statusCode < 400 && request.routeOptions.config.polled) reply.log.debug(fields, 'request completed');
    else reply.log.info(fields, 'request completed');
  }
}

/** The `logController` option of the app. */
export function requestLogController(): LogController {
  return new OneLinePerRequest();
}

/** Every request starts with no fields of its own (declared up front: one object shape for all requests). */
export function decorateRequestLog(app: FastifyInstance): void {
  app.decorateRequest('logFields', null);
}
