import type { FastifyInstance } from 'fastify';
import type { ApiDeps } from '../api-deps.ts';

/** The per-route latency histogram; a root hook, so it sees every route of the app. */
export function observeRequestDurations(app: FastifyInstance, deps: ApiDeps): void {
  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unmatched';
    deps.metrics.httpDuration.observe({ method: request.method, route, status_code: String(reply.statusCode) }, reply.elapsedTime / 1000);
  });
}

/** GET /metrics in Prometheus text. */
export async function metricsRoutes(app: FastifyInstance, deps: ApiDeps): Promise<void> {
  const { metrics } = deps;
  app.get('/metrics', { schema: { hide: true }, config: { polled: true } }, async (_request, reply) => {
    reply.type(metrics.registry.contentType);
    return metrics.registry.metrics();
  });
}
