/**
 * The worker's health endpoint, for container health checks and orchestrators:
 * `GET /healthz` answers 200 `{"status": "ok", "checks": {"mongodb", "redis"}}`
 * when both datastores answer a ping within a second, and 503 naming the one that
 * did not otherwise. A worker that cannot reach Redis takes no jobs and one that
 * cannot reach MongoDB cannot record deliveries: either way it is not healthy,
 * even though its process is alive. Off unless WORKER_HEALTH_PORT is set.
 */
import { createServer, type Server } from 'node:http';
import type { Connection } from 'mongoose';
import { z } from 'zod';
import { envOptional, listenOn, parseEnv, type RedisClient } from '@connect/shared';

const PORT_RULE = 'must be a port number from 1 to 65535';

/** WORKER_HEALTH_PORT: where to serve GET /healthz (unset: no endpoint). */
export const workerHealthEnvShape = {
  WORKER_HEALTH_PORT: envOptional(
    z
      .string()
      .regex(/^\d+$/, { error: (iss) => `${PORT_RULE}, got "${String(iss.input)}"` })
      .transform(Number)
      .refine((port) => port >= 1 && port <= 65535, { error: (iss) => `${PORT_RULE}, got ${String(iss.input)}` }),
  ),
};

const workerHealthSchema = z.object(workerHealthEnvShape).transform((env) => env.WORKER_HEALTH_PORT);

export function workerHealthPort(env: Record<string, string | undefined>): number | undefined {
  return parseEnv(workerHealthSchema, env);
}

function within<T>(ms: number, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error('timeout')), ms);
    }),
  ]);
}

export interface HealthTargets {
  mongo: Connection;
  /** A connection that fails fast while Redis is away (the worker's producer connection), not a blocking one. */
  redis: RedisClient;
}

export async function checkWorkerHealth(t: HealthTargets): Promise<{ healthy: boolean; checks: { mongodb: 'ok' | 'down'; redis: 'ok' | 'down' } }> {
  const [mongo, redis] = await Promise.allSettled([within(1000, t.mongo.db!.admin().ping()), within(1000, t.redis.ping())]);
  const checks = { mongodb: mongo.status === 'fulfilled' ? 'ok' : 'down', redis: redis.status === 'fulfilled' ? 'ok' : 'down' } as const;
  return { healthy: checks.mongodb === 'ok' && checks.redis === 'ok', checks };
}

export async function serveWorkerHealth(t: HealthTargets, port: number, host = '0.0.0.0'): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.method !== 'GET' || req.url?.split('?')[0] !== '/healthz') return void res.writeHead(404).end();
    void checkWorkerHealth(t).then(({ healthy, checks }) => {
      res.writeHead(healthy ? 200 : 503, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ status: healthy ? 'ok' : 'unhealthy', checks }));
    });
  });
  await listenOn(server, port, host);
  return server;
}
