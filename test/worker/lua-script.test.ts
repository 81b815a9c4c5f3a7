import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPrivateRedis, type RunningService } from '@connect/local-services';
import { createRedis, LuaScript, TargetHealth, type RedisClient } from '@connect/shared';

/**
 * The target-health scripts run twice per delivery: they go by SHA1 (EVALSHA),
 * and their source crosses the wire only when Redis does not know it (a fresh
 * or restarted Redis). A Redis of the test's own, so its command counts are
 * this test's alone.
 */
let server: RunningService;
let redis: RedisClient;

const calls = async (command: string): Promise<number> => {
  const stats = (await redis.info('commandstats')) as string;
  return Number(new RegExp(`cmdstat_${command}:calls=(\\d+)`).exec(stats)?.[1] ?? 0);
};

beforeAll(async () => {
  server = await startPrivateRedis();
  redis = createRedis(server.url, 'producer', { enableOfflineQueue: true });
});
afterAll(async () => {
  redis?.disconnect();
  await server?.stop();
});

describe('Lua scripts by SHA1', () => {
  it('sends the source once, then only the hash; after SCRIPT FLUSH (a restarted Redis) it sends the source again', async () => {
    const script = new LuaScript(`return redis.call('INCRBY', KEYS[1], ARGV[1])`);
    expect(await script.run(redis, ['n'], [2])).toBe(2);
    expect(await script.run(redis, ['n'], [3])).toBe(5);
    expect(await script.run(redis, ['n'], [4])).toBe(9);
    expect(await calls('eval')).toBe(1);
    expect(await calls('evalsha')).toBe(3);

    await redis.script('FLUSH');
    expect(await script.run(redis, ['n'], [1])).toBe(10);
    expect(await calls('eval')).toBe(2);
  });

  it('a script error other than NOSCRIPT reaches the caller, and is not retried with the source', async () => {
    const broken = new LuaScript(`return redis.call('NOSUCHCOMMAND')`);
    const evalsBefore = await calls('eval');
    await expect(broken.run(redis, [], [])).rejects.toThrow(/Unknown Redis command|unknown command/i);
    // The first call of an unknown script is NOSCRIPT, then EVAL; that EVAL's error is the one reported.
    expect(await calls('eval')).toBe(evalsBefore + 1);
    await expect(broken.run(redis, [], [])).rejects.toThrow(/Unknown Redis command|unknown command/i);
    expect(await calls('eval')).toBe(evalsBefore + 1);
  });

  it('target health runs on it: a delivery admitted and recorded sends no script source', async () => {
    const health = new TargetHealth(redis, 'lua-test');
    await health.admit('t', 5000);
    await health.recordSuccess('t');
    const evals = await calls('eval');
    for (let i = 0; i < 5; i++) {
      expect(await health.admit('t', 5000)).toEqual({ kind: 'send' });
      expect(await health.recordSuccess('t')).toEqual({ from: 'healthy', to: 'healthy' });
    }
    expect(await calls('eval')).toBe(evals);
  });
});
