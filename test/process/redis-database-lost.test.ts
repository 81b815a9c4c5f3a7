/**
 * A Redis restarted, while the services run, without the database REDIS_URL names (a smaller
 * `databases` setting): ioredis logs the refused SELECT and goes on with database 0. The API
 * and the worker stop instead (stopOnLostRedisDatabase, start-process.ts; docs/operations.md).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { startPrivateRedis, type RunningService } from '@connect/local-services';
import { startEntryPoint, waitFor, type Child } from '../support/child-process.ts';
import { databaseUrl, uniquePrefix } from '../support/harness.ts';

const cleanups: (() => unknown)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

describe('Redis restarted without the database REDIS_URL names', () => {
  it.each(['api', 'worker'] as const)('%s: exits 1 with one line naming REDIS_URL, instead of running on database 0', async (app) => {
    let redis: RunningService = await startPrivateRedis(undefined, ['--databases', '16']);
    cleanups.push(() => redis.stop());
    const label = `redis_db_lost_${app}`;
    const child: Child = startEntryPoint(app, {
      MONGO_URL: databaseUrl(label),
      REDIS_URL: `redis://127.0.0.1:${redis.port}/9`,
      QUEUE_PREFIX: uniquePrefix(label),
      PORT: '0',
      HOST: '127.0.0.1',
      LOG_LEVEL: 'info',
    });
    cleanups.push(() => child.proc.kill('SIGKILL'));
    await waitFor(() => child.stdout.some((l) => l.includes(`"${app} ready"`)), 60_000, `the ${app} to be ready`);
    expect(child.proc.exitCode).toBeNull();

    await redis.stop();
    redis = await startPrivateRedis(redis.port, ['--databases', '4']);
    await waitFor(() => child.proc.exitCode !== null, 20_000, `the ${app} to stop once Redis came back without database 9`);
    expect((await child.exited).code).toBe(1);
    expect(child.stderr, child.stderr.join('\n')).toHaveLength(1);
    expect(child.stderr[0]).toMatch(/^error: REDIS_URL: the Redis server no longer has the database REDIS_URL names \(ERR DB index is out of range; /);
    const fatal = child.stdout.map((l) => JSON.parse(l) as { level: number; variable?: string }).find((l) => l.level === 60);
    expect(fatal).toMatchObject({ variable: 'REDIS_URL' });
  });
});
