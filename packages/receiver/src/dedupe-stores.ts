import { LRUCache } from 'lru-cache';

/**
 * Remembers which callbacks were already handled, by `request_uuid` (the event id,
 * the same on every retry of a delivery). Delivery is at-least-once, so the same
 * event can arrive twice: after a timeout the sender could not tell from a failure,
 * or from a replay. `seen` marks and answers in one step, so two copies arriving
 * together cannot both be handled.
 */
export interface DedupeStore {
  /** true when `requestUuid` was marked before; marks it otherwise. */
  seen(requestUuid: string): Promise<boolean>;
  /** Unmarks it: the handler failed, and the sender's retry must be handled. */
  forget(requestUuid: string): Promise<void>;
}

export interface MemoryDedupeOptions {
  /** How many ids to remember; the oldest are dropped first. 100,000 by default (a few MB). */
  max?: number;
  /** How long an id is remembered; 48 h by default, longer than the sender's whole retry schedule (about 28 h). */
  ttlMs?: number;
}

/** In one process, bounded in count and time (lru-cache). Lost on restart: use the Redis store when that matters. */
export class MemoryDedupeStore implements DedupeStore {
  private readonly cache: LRUCache<string, true>;
  constructor(options: MemoryDedupeOptions = {}) {
    this.cache = new LRUCache<string, true>({ max: options.max ?? 100_000, ttl: options.ttlMs ?? 48 * 3600_000 });
  }
  async seen(requestUuid: string): Promise<boolean> {
    if (this.cache.has(requestUuid)) return true;
    this.cache.set(requestUuid, true);
    return false;
  }
  async forget(requestUuid: string): Promise<void> {
    this.cache.delete(requestUuid);
  }
}

/** The two commands the Redis store needs, with ioredis's argument order (an ioredis client fits as is). */
export interface RedisLike {
  set(key: string, value: string, px: 'PX', milliseconds: number, nx: 'NX'): Promise<string | null>;
  del(key: string): Promise<number>;
}

export interface RedisDedupeOptions {
  /** Key prefix; give each receiver its own. `connect-receiver:seen:` by default. */
  prefix?: string;
  ttlMs?: number;
}

/**
 * Shared by every instance of a receiver: `SET key 1 NX PX ttl` is atomic, so of
 * two instances that get the same event at once exactly one sees "not seen".
 * Keys expire on their own, so the store stays bounded without a sweeper.
 */
export class RedisDedupeStore implements DedupeStore {
  readonly prefix: string;
  readonly ttlMs: number;
  constructor(
    private readonly redis: RedisLike,
    options: RedisDedupeOptions = {},
  ) {
    this.prefix = options.prefix ?? 'connect-receiver:seen:';
    this.ttlMs = options.ttlMs ?? 48 * 3600_000;
  }
  async seen(requestUuid: string): Promise<boolean> {
    const answer = await this.redis.set(this.prefix + requestUuid, '1', 'PX', this.ttlMs, 'NX');
    return answer !== 'OK';
  }
  async forget(requestUuid: string): Promise<void> {
    await this.redis.del(this.prefix + requestUuid);
  }
}
