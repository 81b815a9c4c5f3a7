import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import mongoose from 'mongoose';
import { afterAll, describe, expect, it } from 'vitest';
import { createRedis, type RedisClient } from '@connect/shared';
import { serveWorkerHealth, workerHealthPort } from '@connect/worker';
import { startFerretDb, startPrivateRedis, type RunningService } from '@connect/local-services';
import { eventually } from '../worker/callback-receiver.ts';

// Datastores of this test's own, so it can stop them without touching anyone else's.
const cleanups: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

describe('worker GET /healthz (the compose health check of the worker)', () => {
  it('is 200 while MongoDB and Redis answer, 503 naming Redis when Redis stops, 200 again when it is back, 503 naming MongoDB when MongoDB stops', async () => {
    const ferret: RunningService = await startFerretDb({ database: `worker_health_${Date.now().toString(36)}` });
    cleanups.push(ferret.stop);
    let redisServer = await startPrivateRedis();
    cleanups.push(() => redisServer.stop());
    const mongo = await mongoose.createConnection(`${ferret.url}health`).asPromise();
    cleanups.push(() => mongo.close());
    // The worker's producer connection: fails fast while Redis is away.
    const redis: RedisClient = createRedis(redisServer.url, 'producer');
    redis.on('error', () => undefined);
    if (redis.status !== 'ready') await new Promise((r) => redis.once('ready', r));
    cleanups.push(async () => redis.disconnect());
    const server: Server = await serveWorkerHealth({ mongo, redis }, 0, '127.0.0.1');
    cleanups.push(() => new Promise((r) => server.close(r)));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/healthz`;
    const health = async () => {
      const res = await fetch(url);
      return { status: res.status, body: await res.json() };
    };

    expect(await health()).toEqual({ status: 200, body: { status: 'ok', checks: { mongodb: 'ok', redis: 'ok' } } });

    await redisServer.stop();
    expect(await eventually(async () => ((await health()).status === 503 ? health() : false), 10_000)).toEqual({
      status: 503,
      body: { status: 'unhealthy', checks: { mongodb: 'ok', redis: 'down' } },
    });

    redisServer = await startPrivateRedis(redisServer.port);
    await eventually(async () => (await health()).status === 200, 15_000);

    ferret.process!.kill('SIGKILL');
    expect(await eventually(async () => ((await health()).status === 503 ? health() : false), 15_000)).toEqual({
      status: 503,
      body: { status: 'unhealthy', checks: { mongodb: 'down', redis: 'ok' } },
    });
    expect((await fetch(url.replace('/healthz', '/other'))).status).toBe(404);
  }, 120_000);

  it('WORKER_HEALTH_PORT: unset is off, a port number is on, anything else is a configuration error naming it', () => {
    expect(workerHealthPort({})).toBeUndefined();
    expect(workerHealthPort({ WORKER_HEALTH_PORT: '8081' })).toBe(8081);
    expect(() => workerHealthPort({ WORKER_HEALTH_PORT: 'eighty' })).toThrow(/^WORKER_HEALTH_PORT: must be a port number/);
    expect(() => workerHealthPort({ WORKER_HEALTH_PORT: '70000' })).toThrow(/WORKER_HEALTH_PORT/);
  });
});
