/**
 * Resolves MongoDB and Redis for the whole run, in the order docs/operations.md (Tests) gives, and
 * says which it used: MONGO_URL / REDIS_URL from the environment; else
 * testcontainers (mongo:8, redis:7) when a container runtime answers; else local
 * processes (FerretDB on the local PostgreSQL with a fresh database; the local
 * Redis, or a private redis-server when none answers).
 */
import type { TestProject } from 'vitest/node';
import { redisAnswers, startFerretDb, startPrivateRedis, type RunningService } from '@connect/local-services';
import { buildEntryPoints } from './support/build-entry-points.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    mongoUrl: string;
    mongoKind: 'mongodb' | 'ferretdb' | 'unknown';
    redisUrl: string;
    runId: string;
  }
}

async function containerRuntimeAvailable(): Promise<boolean> {
  try {
    const { getContainerRuntimeClient } = await import('testcontainers');
    await getContainerRuntimeClient();
    return true;
  } catch {
    return false;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const runId = `${Date.now().toString(36)}${process.pid.toString(36)}`;
  const stops: (() => Promise<void>)[] = [];
  let mongoUrl = process.env.MONGO_URL;
  let redisUrl = process.env.REDIS_URL;
  let mongoKind: 'mongodb' | 'ferretdb' | 'unknown' = 'unknown';
  const said: string[] = [];
  // The processes tests start run from bundles of the sources (test/support/entry-points.ts).
  said.push(`entry points (CLI, API, worker, importer) bundled for child processes in ${await buildEntryPoints()} ms`);

  if (mongoUrl) said.push(`MongoDB: MONGO_URL from the environment`);
  if (redisUrl) said.push(`Redis: REDIS_URL from the environment`);

  if ((!mongoUrl || !redisUrl) && (await containerRuntimeAvailable())) {
    if (!mongoUrl) {
      const { MongoDBContainer } = await import('@testcontainers/mongodb');
      const c = await new MongoDBContainer('mongo:8').start();
      stops.push(async () => void (await c.stop()));
      mongoUrl = `${c.getConnectionString()}/?directConnection=true`;
      mongoKind = 'mongodb';
      said.push(`MongoDB: testcontainers mongo:8 at ${mongoUrl}`);
    }
    if (!redisUrl) {
      const { RedisContainer } = await import('@testcontainers/redis');
      const c = await new RedisContainer('redis:7').withCommand(['redis-server', '--maxmemory-policy', 'noeviction']).start();
      stops.push(async () => void (await c.stop()));
      redisUrl = c.getConnectionUrl();
      said.push(`Redis: testcontainers redis:7 at ${redisUrl}`);
    }
  }

  if (!mongoUrl) {
    const ferret: RunningService = await startFerretDb({ database: `connect_test_${runId}` });
    stops.push(ferret.stop);
    mongoUrl = ferret.url;
    mongoKind = 'ferretdb';
    said.push(`MongoDB: no container runtime; local FerretDB at ${mongoUrl} on PostgreSQL database connect_test_${runId}`);
  }
  if (!redisUrl) {
    if (await redisAnswers(6379)) {
      redisUrl = 'redis://127.0.0.1:6379';
      said.push('Redis: the local redis-server at 127.0.0.1:6379 (each test file uses its own queue prefix)');
    } else {
      const r = await startPrivateRedis();
      stops.push(r.stop);
      redisUrl = r.url;
      said.push(`Redis: a private redis-server at ${redisUrl}`);
    }
  }

  if (mongoKind === 'unknown') {
    const { MongoClient } = await import('mongodb');
    const client = await MongoClient.connect(mongoUrl, { serverSelectionTimeoutMS: 10_000 });
    const info = await client.db('admin').command({ buildInfo: 1 });
    mongoKind = 'ferretdbVersion' in info ? 'ferretdb' : 'mongodb';
    await client.close();
  }

  console.log(`\n[test setup] ${said.join('\n[test setup] ')}\n[test setup] database kind: ${mongoKind}\n`);
  project.provide('mongoUrl', mongoUrl);
  project.provide('mongoKind', mongoKind);
  project.provide('redisUrl', redisUrl);
  project.provide('runId', runId);

  return async () => {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
  };
}
