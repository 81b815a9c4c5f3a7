import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { Queue, Worker } from 'bullmq';
import mongoose from 'mongoose';
import { afterAll, describe, expect, it } from 'vitest';
import { createRedis, type RedisClient } from '@connect/shared';
import { serveWorkerHealth, watchBlockingConnections, workerHealthPort } from '@connect/worker';
import { createLogger } from '@connect/shared';
import { startFerretDb, startPrivateRedis, startTcpProxy, type RunningService } from '@connect/local-services';
import { eventually } from '../worker/callback-receiver.ts';

// Datastores of this test's own, so it can stop them without touching anyone else's.
const cleanups: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

describe('worker GET /healthz (the compose health check of the worker) and GET /livez', () => {
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
    // Liveness is the process alone: 200 with MongoDB down (a restart could not start the worker then).
    const live = await fetch(url.replace('/healthz', '/livez'));
    expect({ status: live.status, body: await live.json() }).toEqual({ status: 200, body: { status: 'ok' } });
  }, 120_000);

  /**
   * A queue worker whose blocking connection is dropped while the path to Redis accepts new
   * connections and never answers them: ioredis reconnects, the connect succeeds, nothing answers.
   */
  async function deafWorker(label: string, watch?: { stuckMs: number }) {
    const ferret: RunningService = await startFerretDb({ database: `worker_health_${label}_${Date.now().toString(36)}` });
    cleanups.push(ferret.stop);
    const redisServer = await startPrivateRedis();
    cleanups.push(() => redisServer.stop());
    const mongo = await mongoose.createConnection(`${ferret.url}health`).asPromise();
    cleanups.push(() => mongo.close());
    // Everything the worker says to Redis goes through a proxy that can, from a moment on,
    // accept new connections and never answer them; connections made before keep working.
    const proxy = await startTcpProxy(redisServer.port);
    cleanups.push(() => proxy.close());
    const viaProxy = `redis://127.0.0.1:${proxy.port}`;
    const producer: RedisClient = createRedis(viaProxy, 'producer');
    const shared: RedisClient = createRedis(viaProxy, 'worker');
    for (const r of [producer, shared]) r.on('error', () => undefined);
    cleanups.push(async () => (producer.disconnect(), shared.disconnect()));
    if (watch) {
      const watching = watchBlockingConnections(shared, { stuckMs: watch.stuckMs, everyMs: 100, log: createLogger('silent', 'test') });
      cleanups.push(async () => watching.stop());
    }
    const processed: string[] = [];
    const queueName = `deaf_${label}_${Date.now().toString(36)}`;
    // drainDelay 1: an idle worker's blocking command returns each second, the way BullMQ's own watchdog expects.
    const worker = new Worker(queueName, async (job) => void processed.push(job.name), { connection: shared, drainDelay: 1 });
    worker.on('error', () => undefined);
    cleanups.push(() => worker.close(true));
    await worker.waitUntilReady();
    const queue = new Queue(queueName, { connection: { host: '127.0.0.1', port: redisServer.port } });
    cleanups.push(() => queue.close());

    const server: Server = await serveWorkerHealth({ mongo, redis: producer, queueWorkers: () => [worker] }, 0, '127.0.0.1');
    cleanups.push(() => new Promise((r) => server.close(r)));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/healthz`;
    const health = async () => {
      const res = await fetch(url);
      return { status: res.status, body: await res.json() };
    };
    await queue.add('before', {});
    await eventually(async () => processed.includes('before'), 10_000);
    expect(await health()).toEqual({ status: 200, body: { status: 'ok', checks: { mongodb: 'ok', redis: 'ok' } } });

    proxy.holdNew();
    const admin = createRedis(redisServer.url, 'producer');
    cleanups.push(async () => admin.disconnect());
    if (admin.status !== 'ready') await new Promise((r) => admin.once('ready', r));
    const clients = String(await admin.call('CLIENT', 'LIST')).split('\n');
    const blocking = clients.filter((line) => / cmd=bzpopmin/.test(line)).map((line) => /^id=(\d+)/.exec(line)![1]!);
    expect(blocking.length).toBe(1);
    await admin.call('CLIENT', 'KILL', 'ID', blocking[0]!);
    // The producer connection still answers, so a ping alone said healthy.
    expect(await producer.ping()).toBe('PONG');
    await queue.add('after', {});
    return { proxy, queue, processed, health };
  }

  it('is 503 naming Redis when a queue worker cannot wait for jobs, though Redis answers its pings (a connection accepted and never answered)', async () => {
    const { queue, processed, health } = await deafWorker('deaf');
    expect(await eventually(async () => ((await health()).status === 503 ? health() : false), 15_000)).toEqual({
      status: 503,
      body: { status: 'unhealthy', checks: { mongodb: 'ok', redis: 'down' } },
    });
    expect(await queue.getJobCounts('waiting', 'completed')).toMatchObject({ waiting: 1, completed: 1 });
    expect(processed).toEqual(['before']);
  }, 120_000);

  it('the worker drops a blocking connection stuck unanswered and connects again: once the path to Redis is whole, the queue takes its job and /healthz is 200', async () => {
    const { proxy, processed, health } = await deafWorker('mend', { stuckMs: 1500 });
    // Stuck: 503 while the proxy swallows every new connection (the watch's new attempts included).
    expect((await eventually(async () => ((await health()).status === 503 ? health() : false), 15_000)).status).toBe(503);
    proxy.restore();
    // Without the watch the stuck connection waits for ever (the test above); with it, the next attempt gets through.
    await eventually(async () => processed.includes('after'), 20_000);
    expect(processed).toEqual(['before', 'after']);
    expect(await health()).toEqual({ status: 200, body: { status: 'ok', checks: { mongodb: 'ok', redis: 'ok' } } });
  }, 120_000);

  it('WORKER_HEALTH_PORT: unset is off, a port number is on, anything else is a configuration error naming it', () => {
    expect(workerHealthPort({})).toBeUndefined();
    expect(workerHealthPort({ WORKER_HEALTH_PORT: '8081' })).toBe(8081);
    expect(() => workerHealthPort({ WORKER_HEALTH_PORT: 'eighty' })).toThrow(/^WORKER_HEALTH_PORT: must be a port number/);
    expect(() => workerHealthPort({ WORKER_HEALTH_PORT: '70000' })).toThrow(/WORKER_HEALTH_PORT/);
  });
});
