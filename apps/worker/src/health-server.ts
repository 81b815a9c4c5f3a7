/**
 * The worker's health endpoints, for container health checks and orchestrators:
 * `GET /livez` answers 200 while the process runs (for a liveness probe), and
 * `GET /healthz` answers 200 `{"status": "ok", "checks": {"mongodb", "redis"}}`
 * when both datastores answer (a refusal is "down" at once, a slow answer only once
 * the datastore watch has waited 5 s for one: answersNow) and every queue worker's
 * blocking connection (the one BullMQ waits for jobs on) is ready, and 503 naming
 * the one that did not otherwise (for readiness and alerts). A worker that cannot reach Redis takes no jobs and one that
 * cannot reach MongoDB cannot record deliveries: either way it is not healthy,
 * even though its process is alive. Off unless WORKER_HEALTH_PORT is set.
 *
 * The blocking connections are checked on their own because they can die alone: one
 * made while Redis (or the path to it) accepted connections without answering stays
 * "connecting" for good (ioredis has no timeout once the TCP connect succeeded), and
 * its worker takes no job, while the producer connection, made before, answers pings.
 * The worker mends it itself after 30 s (blocking-connections.ts); /healthz says 503 meanwhile.
 */
import { createServer, type Server } from 'node:http';
import type { Worker } from 'bullmq';
import type { Connection } from 'mongoose';
import { z } from 'zod';
import type { Logger } from 'pino';
import { answersNow, envOptional, listenOn, parseEnv, warnAtMostEvery, type DatastoreWatch, type RedisClient } from '@connect/shared';

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
  /** The running queue workers (none before they start); each one's blocking connection must be ready. */
  queueWorkers?: () => Iterable<Worker>;
  /** Where to say which queue's blocking connection is not ready. */
  log?: Logger;
  /** The running worker's datastore watch (none before it starts): a ping still waiting is judged by it (answersNow). */
  watch?: () => DatastoreWatch | undefined;
}

/** ioredis's Cluster may report `connect` as its connected state, where a single server says `ready` (as BullMQ reads it). */
const isLive = (client: RedisClient) => client.status === 'ready' || (client.status === 'connect' && client.isCluster);

/** Resolves once `client` is ready (at once if it is); rejects after `ms`. */
function readyWithin(client: RedisClient, ms: number): Promise<void> {
  if (isLive(client)) return Promise.resolve();
  return within(
    ms,
    new Promise<void>((resolve) => {
      const poll = setInterval(() => {
        if (!isLive(client)) return;
        clearInterval(poll);
        resolve();
      }, 50);
      setTimeout(() => clearInterval(poll), ms + 100);
    }),
  );
}

/** The queues (of those still running) whose blocking connection did not become ready within `ms`. */
async function queuesNotTakingJobs(workers: Iterable<Worker>, ms: number): Promise<string[]> {
  const running = [...workers].filter((w) => !w.closing);
  const results = await Promise.allSettled(
    running.map(async (w) => {
      const started = Date.now();
      // A worker's waitUntilReady resolves to its blocking client once that connection was first ready.
      const blocking = (await within(ms, w.waitUntilReady())) as unknown as RedisClient;
      await readyWithin(blocking, Math.max(0, ms - (Date.now() - started)));
    }),
  );
  return running.filter((_, i) => results[i]!.status === 'rejected').map((w) => w.name);
}

export async function checkWorkerHealth(t: HealthTargets, warn = t.log && warnAtMostEvery(t.log)): Promise<{ healthy: boolean; checks: { mongodb: 'ok' | 'down'; redis: 'ok' | 'down' } }> {
  const watch = t.watch?.();
  // A refusal is "down" at once; a slow answer is not, until the watch has waited 5 s for one.
  const [mongo, redis, idle] = await Promise.all([
    answersNow('MongoDB', () => t.mongo.db!.admin().ping(), watch),
    answersNow('Redis', () => t.redis.ping(), watch),
    queuesNotTakingJobs(t.queueWorkers?.() ?? [], 1000).catch(() => [] as string[]),
  ]);
  const deaf = idle;
  if (redis && deaf.length > 0) {
    warn?.(`deaf ${deaf.join(',')}`, { queues: deaf }, 'Redis answers, but the connections these queues wait for jobs on are not ready: they take no job (restart the worker if it lasts)');
  }
  const checks = { mongodb: mongo ? 'ok' : 'down', redis: redis && deaf.length === 0 ? 'ok' : 'down' } as const;
  return { healthy: checks.mongodb === 'ok' && checks.redis === 'ok', checks };
}

export async function serveWorkerHealth(t: HealthTargets, port: number, host = '0.0.0.0'): Promise<Server> {
  const warn = t.log && warnAtMostEvery(t.log);
  const server = createServer((req, res) => {
    const path = req.url?.split('?')[0];
    if (req.method !== 'GET' || (path !== '/healthz' && path !== '/livez')) return void res.writeHead(404).end();
    // Liveness: the process answers. A datastore outage is no reason to restart a worker: one started
    // while MongoDB is down exits at once, and restarts would go on until it is back (docs/operations.md).
    if (path === '/livez') return void res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}');
    void checkWorkerHealth(t, warn).then(({ healthy, checks }) => {
      res.writeHead(healthy ? 200 : 503, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ status: healthy ? 'ok' : 'unhealthy', checks }));
    });
  });
  await listenOn(server, port, host);
  return server;
}
