import { LRUCache } from 'lru-cache';

/**
 * Remembers which callbacks were handled, by `request_uuid` (the event id, the
 * same on every retry of a delivery). Delivery is at-least-once, so the same
 * event can arrive twice: after a timeout the sender could not tell from a
 * failure, or from a replay.
 *
 * An id goes through two marks. `claim` marks it "being handled" for a lease, in
 * one atomic step, so two copies arriving together cannot both be handled; the
 * reply protocol marks it `handled` once `onEvent` succeeds. A copy that arrives
 * while the first is still being handled is told to retry (it is not
 * acknowledged: if the first then fails, or its process dies, the event must not
 * be lost), and a claim whose process died lapses with its lease, so the
 * sender's next retry is handled.
 */
export type DedupeClaim = 'claimed' | 'in_progress' | 'handled';

export interface DedupeStore {
  /** `claimed`: this caller handles it now; `in_progress`: another copy is being handled; `handled`: done before. */
  claim(requestUuid: string): Promise<DedupeClaim>;
  /** `onEvent` succeeded: remember the id for the store's whole TTL. */
  handled(requestUuid: string): Promise<void>;
  /** Unmarks it: the handler failed, and the sender's retry must be handled. */
  forget(requestUuid: string): Promise<void>;
  /**
   * Forgets every id: for a receiver that lost its data, so that a forced resync's events (sent
   * again under their original ids) are handled, not answered as duplicates. Answers how many
   * marks went. Optional: a store of one's own need not have it.
   */
  clear?(): Promise<number>;
}

/** How long a claim holds before a copy may be handled again: longer than a handler should ever run. */
export const DEFAULT_LEASE_MS = 60_000;
/** How long a handled id is remembered: longer than the sender's whole retry schedule (about 28 h). */
export const DEFAULT_DEDUPE_TTL_MS = 48 * 3600_000;

/**
 * A count or duration option, checked when the store is made: NaN (an unset variable
 * through `Number()`), 0, a negative or a fractional value would make Redis refuse
 * every mark, or lru-cache keep nothing, and the store would silently stop deduping.
 */
export function wholePositive(given: number | undefined, fallback: number, name: string, who: string): number {
  if (given === undefined) return fallback;
  if (typeof given !== 'number' || !Number.isSafeInteger(given) || given <= 0) throw new TypeError(`${who}: ${name} must be a whole number above 0, got ${String(given)}`);
  return given;
}

export interface MemoryDedupeOptions {
  /** How many ids to remember; the oldest are dropped first. 100,000 by default (a few MB). */
  max?: number;
  /** How long a handled id is remembered; 48 h by default. */
  ttlMs?: number;
  /** How long a claim lasts without `handled` or `forget`; 60 s by default. */
  leaseMs?: number;
}

/** In one process, bounded in count and time (lru-cache). Lost on restart: use the Redis store when that matters. */
export class MemoryDedupeStore implements DedupeStore {
  private readonly cache: LRUCache<string, 'in_progress' | 'handled'>;
  private readonly ttlMs: number;
  private readonly leaseMs: number;
  constructor(options: MemoryDedupeOptions = {}) {
    this.ttlMs = wholePositive(options.ttlMs, DEFAULT_DEDUPE_TTL_MS, 'ttlMs', 'MemoryDedupeStore');
    this.leaseMs = wholePositive(options.leaseMs, DEFAULT_LEASE_MS, 'leaseMs', 'MemoryDedupeStore');
    this.cache = new LRUCache({ max: wholePositive(options.max, 100_000, 'max', 'MemoryDedupeStore'), ttl: this.ttlMs });
  }
  async claim(requestUuid: string): Promise<DedupeClaim> {
    const mark = this.cache.get(requestUuid);
    if (mark) return mark;
    this.cache.set(requestUuid, 'in_progress', { ttl: this.leaseMs });
    return 'claimed';
  }
  async handled(requestUuid: string): Promise<void> {
    this.cache.set(requestUuid, 'handled', { ttl: this.ttlMs });
  }
  async forget(requestUuid: string): Promise<void> {
    this.cache.delete(requestUuid);
  }
  async clear(): Promise<number> {
    const marks = this.cache.size;
    this.cache.clear();
    return marks;
  }
}

/** The commands the Redis store needs, with ioredis's argument order (an ioredis client fits as is). */
export interface RedisLike {
  set(key: string, value: string, px: 'PX', milliseconds: number, nx: 'NX'): Promise<string | null>;
  set(key: string, value: string, px: 'PX', milliseconds: number): Promise<string | null>;
  get(key: string): Promise<string | null>;
  del(key: string): Promise<number>;
  /** Only for `clear()`. */
  scan?(cursor: string, match: 'MATCH', pattern: string, count: 'COUNT', howMany: number): Promise<[cursor: string, keys: string[]]>;
}

export interface RedisDedupeOptions {
  /**
   * Key prefix, required: each receiving service its own. The sender gives an event the
   * same `request_uuid` at every target, so two services sharing a prefix on one Redis
   * would each take the other's events as handled, and answer them 200 unhandled.
   */
  prefix: string;
  /** How long a handled id is remembered; 48 h by default. */
  ttlMs?: number;
  /** How long a claim lasts without `handled` or `forget`; 60 s by default. */
  leaseMs?: number;
}

/**
 * Shared by every instance of a receiver: `SET key in_progress NX PX lease` is
 * atomic, so of two instances that get the same event at once exactly one claims
 * it. Keys expire on their own (a claim after its lease, a handled id after the
 * TTL), so the store stays bounded without a sweeper.
 */
export class RedisDedupeStore implements DedupeStore {
  readonly prefix: string;
  readonly ttlMs: number;
  readonly leaseMs: number;
  constructor(
    private readonly redis: RedisLike,
    options: RedisDedupeOptions,
  ) {
    const prefix: unknown = options?.prefix;
    if (typeof prefix !== 'string' || prefix.trim() === '') {
      throw new TypeError('RedisDedupeStore: prefix is required, one per receiving service (e.g. "dictation:seen:"): every target gets an event under the same request_uuid');
    }
    this.prefix = prefix;
    this.ttlMs = wholePositive(options.ttlMs, DEFAULT_DEDUPE_TTL_MS, 'ttlMs', 'RedisDedupeStore');
    this.leaseMs = wholePositive(options.leaseMs, DEFAULT_LEASE_MS, 'leaseMs', 'RedisDedupeStore');
  }
  async claim(requestUuid: string): Promise<DedupeClaim> {
    const key = this.prefix + requestUuid;
    if ((await this.redis.set(key, 'in_progress', 'PX', this.leaseMs, 'NX')) === 'OK') return 'claimed';
    // Gone between the two commands (a lapsed claim, a failure's forget): retry rather than guess.
    return (await this.redis.get(key)) === 'handled' ? 'handled' : 'in_progress';
  }
  async handled(requestUuid: string): Promise<void> {
    await this.redis.set(this.prefix + requestUuid, 'handled', 'PX', this.ttlMs);
  }
  async forget(requestUuid: string): Promise<void> {
    await this.redis.del(this.prefix + requestUuid);
  }
  /** Deletes this store's keys (its prefix's only), a batch at a time (SCAN, never KEYS, which blocks Redis). */
  async clear(): Promise<number> {
    if (!this.redis.scan) throw new TypeError('RedisDedupeStore: clear() needs a client with scan() (an ioredis client has it)');
    // The prefix is matched literally: its glob characters are escaped.
    const pattern = `${this.prefix.replace(/[*?[\]\\]/g, '\\$&')}*`;
    let cursor = '0';
    let deleted = 0;
    do {
      const [next, keys] = await this.redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      // Sent together: one connection carries them back to back, not a round trip each.
      for (const n of await Promise.all(keys.map((key) => this.redis.del(key)))) deleted += n;
      cursor = next;
    } while (cursor !== '0');
    return deleted;
  }
}
