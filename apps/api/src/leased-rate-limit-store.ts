import type { RedisClient } from '@connect/shared';

/**
 * A store for @fastify/rate-limit that keeps one Redis counter per bucket and
 * window, shared by every API instance, but does not ask Redis on every
 * request: an instance takes slots from the counter in leases of 1 % of the
 * limit (INCRBY), hands them out locally, and goes back to Redis when they run
 * out or the window ends.
 *
 * - The shared count never passes the limit's worth of granted requests: an
 *   instance only grants slots it has leased, and leases past the limit are
 *   refused by every instance alike.
 * - What it costs: slots leased and not used when a window ends are lost, so
 *   with N instances a bucket can refuse up to N leases (N % of the limit) early.
 *   Limits under 100 lease one slot at a time: exact, one Redis call a request,
 *   as with the plugin's own Redis store.
 * - Redis errors go to the plugin, which lets the request through (skipOnError).
 */
export class LeasedRedisStore {
  private readonly leases = new Map<string, Lease>();
  private readonly pending = new Map<string, Promise<void>>();
  /** The store every grouped route shares (the plugin appends the group's id to each key). */
  private group?: LeasedRedisStore;

  constructor(
    private readonly redis: RedisClient,
    private readonly prefix: string,
  ) {
    if (!(redis as unknown as Record<string, unknown>).rateLimitLease) {
      redis.defineCommand('rateLimitLease', {
        numberOfKeys: 1,
        lua: `
          local current = redis.call('INCRBY', KEYS[1], ARGV[1])
          local ttl = redis.call('PTTL', KEYS[1])
          if current == tonumber(ARGV[1]) or ttl < 0 then
            redis.call('PEXPIRE', KEYS[1], ARGV[2])
            ttl = tonumber(ARGV[2])
          end
          return {current, ttl}`,
      });
    }
  }

  incr(key: string, cb: (err: Error | null, res: { current: number; ttl: number } | null) => void, timeWindow: number, max: number): void {
    const fullKey = this.prefix + key;
    const taken = this.takeLocal(fullKey);
    if (taken) return cb(null, taken);
    this.take(fullKey, timeWindow, max).then(
      (res) => cb(null, res),
      (err: Error) => cb(err, null),
    );
  }

  /** A slot of the current lease, if it has one left (synchronous: no two callers get the same slot). */
  private takeLocal(fullKey: string): Taken | undefined {
    const lease = this.leases.get(fullKey);
    const now = Date.now();
    if (!lease || now >= lease.windowEnd || lease.used >= lease.granted) return undefined;
    lease.used++;
    return { current: lease.base + lease.used, ttl: lease.windowEnd - now };
  }

  private take(fullKey: string, timeWindow: number, max: number): Promise<Taken> {
    const size = max >= 100 ? Math.floor(max / 100) : 1;
    // One slot a lease: each request counts itself, at once, as the plugin's own Redis
    // store does. Waiting for another request's fetch would queue a client's requests
    // one Redis round trip apart (with Redis 2 s away, 0.5 requests a second).
    if (size === 1) {
      return (this.redis as unknown as LeaseCommand).rateLimitLease(fullKey, 1, timeWindow).then(([current, ttl]) => ({ current, ttl }));
    }
    // Requests arriving while a lease is being fetched wait for it, then try again.
    const inFlight = this.pending.get(fullKey);
    if (inFlight) return inFlight.then(() => this.takeLocal(fullKey) ?? this.take(fullKey, timeWindow, max));
    const fetched = (this.redis as unknown as LeaseCommand).rateLimitLease(fullKey, size, timeWindow).then(([current, ttl]) => {
      const base = current - size;
      const lease: Lease = { base, granted: Math.max(0, Math.min(size, max - base)), used: 0, windowEnd: Date.now() + ttl };
      if (this.leases.size > 10_000) this.dropEnded();
      this.leases.set(fullKey, lease);
      return lease;
    });
    const settled = fetched.then(
      () => undefined,
      () => undefined,
    );
    this.pending.set(fullKey, settled);
    void settled.finally(() => this.pending.delete(fullKey));
    return fetched.then((lease) => {
      const slot = this.takeLocal(fullKey);
      if (slot) return slot;
      // Nothing left under the limit: the plugin answers 429 from a count past it.
      if (lease.granted < size) return { current: max + 1, ttl: Math.max(0, lease.windowEnd - Date.now()) };
      return this.take(fullKey, timeWindow, max); // others took this lease's slots first
    });
  }

  private dropEnded(): void {
    const now = Date.now();
    for (const [k, l] of this.leases) if (l.windowEnd <= now) this.leases.delete(k);
    if (this.leases.size > 10_000) this.leases.clear();
  }

  /**
   * The store of one route's limit: its own buckets, or, for routes whose limit names a `groupId`,
   * the buckets of the group, shared by every route in it (one instance, so one set of leases).
   */
  child(routeOptions: { routeInfo: { method: string; url: string }; groupId?: string }): LeasedRedisStore {
    if (routeOptions.groupId === undefined) return new LeasedRedisStore(this.redis, `${this.prefix}${routeOptions.routeInfo.method}${routeOptions.routeInfo.url}-`);
    return (this.group ??= new LeasedRedisStore(this.redis, `${this.prefix}group:`));
  }
}

interface Taken {
  current: number;
  ttl: number;
}

interface Lease {
  /** The shared count before this lease. */
  base: number;
  /** Slots of this lease under the limit. */
  granted: number;
  used: number;
  windowEnd: number;
}

interface LeaseCommand {
  rateLimitLease(key: string, size: number, windowMs: number): Promise<[number, number]>;
}
