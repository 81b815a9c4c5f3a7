import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { createLogger, watchRedisMemory } from '@connect/shared';
import { startPrivateRedis, type RunningService } from '@connect/local-services';
import { LogCapture, startTestApi } from '../support/harness.ts';

/**
 * A Redis that may delete queued jobs (a maxmemory-policy other than noeviction), or that is full
 * and refuses writes while it still answers PING: a resource audit found neither said anywhere
 * (docs/operations.md, Logs). A real redis-server of the test's own, set as the audit set it.
 */

let redis: RunningService;
let client: Redis;

beforeAll(async () => {
  redis = await startPrivateRedis(undefined, ['--maxmemory-policy', 'allkeys-lru']);
  client = new Redis(redis.url, { lazyConnect: true });
  await client.connect();
});

afterAll(async () => {
  client?.disconnect();
  await redis?.stop();
});

const lines = (logs: LogCapture) => logs.lines.map((l) => JSON.parse(l) as { level: number; msg: string; redis_maxmemory_policy?: string });

describe("Redis's memory, said in the log", () => {
  it('the API started on a Redis with allkeys-lru says at warn that it must be noeviction', async () => {
    const api = await startTestApi({ label: 'redis_memory', env: { REDIS_URL: redis.url } });
    try {
      await expect.poll(() => lines(api.logs).find((l) => l.msg.startsWith("Redis's maxmemory-policy is allkeys-lru, not noeviction")), { timeout: 10_000 }).toMatchObject({ level: 40, redis_maxmemory_policy: 'allkeys-lru' });
    } finally {
      await api.close();
    }
  });

  it('warns once while Redis is nearly full or evicting, and says when it is over; a reading with nothing wrong says nothing', async () => {
    const logs = new LogCapture();
    const watch = watchRedisMemory(client, createLogger('debug', 'memory-test', logs), { intervalMs: 3_600_000 });
    try {
      await watch.check();
      await client.config('SET', 'maxmemory-policy', 'noeviction');
      // Full: maxmemory a little under what it uses now.
      const used = Number(/^used_memory:(\d+)/m.exec(await client.info('memory'))![1]);
      await client.config('SET', 'maxmemory', String(used + 10_000));
      await watch.check();
      await watch.check();
      expect(await client.set('some-key', 'x'.repeat(100_000)).catch((err: Error) => err.message)).toMatch(/^OOM/);
      await client.config('SET', 'maxmemory', '0');
      await watch.check();
      await watch.check();
      expect(lines(logs).map((l) => [l.level, l.msg.split(':')[0]])).toEqual([
        [40, "Redis's maxmemory-policy is allkeys-lru, not noeviction"],
        [30, "Redis's maxmemory-policy is noeviction again"],
        [40, expect.stringMatching(/^Redis uses \d+ MB of its maxmemory \d+ MB$/)],
        [30, expect.stringMatching(/^Redis has room again/)],
      ]);
    } finally {
      watch.stop();
    }
  });
});
