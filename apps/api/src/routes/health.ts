import type { FastifyInstance } from 'fastify';
import { answersNow, PROBLEM_TYPE_BASE } from '@connect/shared';
import type { ApiDeps } from '../api-deps.ts';
import { sendProblem } from '../error-handler.ts';

/** Liveness: the process answers. Readiness: MongoDB and Redis answer too (docs/contract.md, Outside {base}). */
export async function healthRoutes(app: FastifyInstance, deps: ApiDeps): Promise<void> {
  app.get('/livez', { schema: { hide: true }, config: { polled: true } }, async () => ({ status: 'ok' }));
  app.get('/readyz', { schema: { hide: true }, config: { polled: true } }, async (_request, reply) => {
    // A refusal is "down" at once; a slow answer is not, until the watch has waited 5 s for one (answersNow).
    const [mongo, redis] = await Promise.all([
      answersNow('MongoDB', () => deps.mongo.db!.admin().ping(), deps.datastores),
      answersNow('Redis', () => deps.redis.ping(), deps.datastores),
    ]);
    const checks = { mongodb: mongo ? 'ok' : 'down', redis: redis ? 'ok' : 'down' };
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
