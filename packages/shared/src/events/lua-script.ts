import { createHash } from 'node:crypto';
import type { RedisClient } from './redis-connection.ts';

/**
 * A Lua script run by its SHA1 (EVALSHA), its source sent only when the server
 * does not know it yet (NOSCRIPT: a fresh Redis, a restart, another cluster node).
 * EVAL sends and hashes the whole source on every call: for the target-health
 * scripts, run twice per delivery, that was most of the bytes the worker wrote
 * to Redis and a measurable share of Redis's CPU (docs/delivery.md).
 */
export class LuaScript {
  readonly sha: string;

  constructor(readonly source: string) {
    this.sha = createHash('sha1').update(source).digest('hex');
  }

  async run(redis: RedisClient, keys: readonly string[], args: readonly (string | number)[]): Promise<unknown> {
    const argv = args.map(String);
    try {
      return await redis.evalsha(this.sha, keys.length, ...keys, ...argv);
    } catch (err) {
      if (!String((err as Error).message).startsWith('NOSCRIPT')) throw err;
      return redis.eval(this.source, keys.length, ...keys, ...argv);
    }
  }
}
