import type { FastifyInstance } from 'fastify';
import { PROBLEM_TYPE_BASE } from '@connect/shared';
import type { ApiDeps } from '../api-deps.ts';
import { sendProblem } from '../error-handler.ts';

function within<T>(ms: number, p: Promise<T>): Promise<T> {
  return Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error('timeout')), ms).unref())]);
}

/** Liveness: the process answers. Readiness: MongoDB and Redis answer too (docs/contract.md, Outside {base}). */
export async function healthRoutes(app: FastifyInstance, deps: ApiDeps): Promise<void> {
  app.get('/livez', { schema: { hide: true } }, async () => ({ status: 'ok' }));
  app.get('/readyz', { schema: { hide: true } }, async (_request, reply) => {
    const [mongo, redis] = await Promise.allSettled([
      within(1000, deps.mongo.db!.admin().ping()),
      within(1000, deps.redis.ping()),
    ]);
    const checks = { mongodb: mongo.status === 'fulfilled' ? 'ok' : 'down', redis: redis.status === 'fulfilled' ? 'ok' : 'down' };
    if (deps.shuttingDown() || checks.mongodb !== 'ok' || checks.redis !== 'ok') {
      return sendProblem(reply, {
        type: PROBLEM_TYPE_BASE + 'not-ready',
        title: 'Not ready',
        status: 503,
        detail: deps.shuttingDown() ? 'Shutting down.' : 'A datastore does not answer.',
        checks,
      });
    }
    return { status: 'ok', checks };
  });
}
