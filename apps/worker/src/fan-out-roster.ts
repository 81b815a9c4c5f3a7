import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { conditionWarning, LuaScript, type RedisClient } from '@connect/shared';

/**
 * Who may fan events out while workers run different target lists (docs/delivery.md, "Workers
 * with different target lists").
 *
 * Every worker takes events from the one `user-events` queue and fans each out to the targets of
 * its own DOWNSTREAM_TARGETS. In a rolling restart that adds a target T, an event taken by a worker
 * not restarted yet got no delivery for T, and nothing ever sent it (a configuration audit: 215 of
 * 678 users missing at T, T healthy with a backlog of 0). So each worker says in Redis which
 * targets it knows (a roster entry, renewed every `intervalMs`, gone `ttlMs` after its last renewal
 * or at once when it stops), and fans out only while no other live worker knows a target it does
 * not: the workers with the most targets do it, and the others leave it to them. Events wait in
 * the queue meanwhile, never dropped. Workers whose lists are not nested (one knows A, another B)
 * all stand back and say so every minute, until the lists agree.
 */
export interface RosterMember {
  id: string;
  host: string;
  pid: number;
  targets: string[];
}

/** The other live workers that know a target `own` does not, with those targets. */
export function workersKnowingMore(own: readonly string[], others: readonly RosterMember[]): (RosterMember & { missing: string[] })[] {
  const mine = new Set(own);
  return others.map((m) => ({ ...m, missing: m.targets.filter((t) => !mine.has(t)) })).filter((m) => m.missing.length > 0);
}

// KEYS[1]: a sorted set of worker ids by expiry (ms, by Redis's clock, so machines' clocks do not
// matter); KEYS[2]: a hash of worker id → JSON entry. ARGV: id, entry ('' to leave), ttl ms.
// Drops expired entries, renews (or removes) this one, returns every live entry.
const RENEW = new LuaScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, id in ipairs(expired) do redis.call('HDEL', KEYS[2], id) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[2] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
end
return redis.call('HVALS', KEYS[2])
`);

export interface FanOutRosterOptions {
  intervalMs?: number;
  ttlMs?: number;
  /** How often the "fan-out left to others" warning is repeated while it lasts. */
  remindEveryMs?: number;
}

export interface FanOutRoster {
  /** Renews this worker's entry and decides; resolves to whether it may fan out. Never rejects. */
  check(): Promise<boolean>;
  /** Stops renewing and removes this worker's entry (the others take over at once). */
  leave(): Promise<void>;
}

/**
 * Keeps this worker's roster entry and calls `onChange(true|false)` when its right to fan out
 * changes (first call after the first reading; a Redis that cannot be read keeps the last verdict,
 * and before any reading the worker fans out, as before the roster existed).
 */
export function joinFanOutRoster(
  redis: RedisClient,
  queuePrefix: string,
  targets: readonly string[],
  log: Logger,
  onChange: (mayFanOut: boolean) => void,
  o: FanOutRosterOptions = {},
): FanOutRoster {
  const intervalMs = o.intervalMs ?? 5000;
  const ttlMs = o.ttlMs ?? 20_000;
  const remindEveryMs = o.remindEveryMs ?? 60_000;
  const me: RosterMember = { id: randomUUID(), host: hostname(), pid: process.pid, targets: [...targets].sort() };
  const keys = [`${queuePrefix}:fan-out-roster`, `${queuePrefix}:fan-out-roster:entries`];
  let verdict: boolean | undefined;
  const warn = conditionWarning(log, remindEveryMs);
  let left = false;

  const check = async (): Promise<boolean> => {
    if (left) return verdict ?? true;
    let others: RosterMember[];
    try {
      const entries = (await RENEW.run(redis, keys, [me.id, JSON.stringify(me), ttlMs])) as string[];
      others = entries.map((e) => JSON.parse(e) as RosterMember).filter((m) => m.id !== me.id);
    } catch {
      return verdict ?? true; // Redis away: nothing fans out anyway; the datastore watch says so.
    }
    const ahead = workersKnowingMore(me.targets, others);
    const may = ahead.length === 0;
    const nested = ahead.every((m) => me.targets.every((t) => m.targets.includes(t)));
    const who = ahead.map((m) => `${m.host} pid ${m.pid} knows ${m.missing.map((t) => `"${t}"`).join(', ')}`).join('; ');
    warn(
      !may,
      may ? { targets: me.targets } : { targets: me.targets, workers_knowing_more: ahead.map((m) => ({ host: m.host, pid: m.pid, missing: m.missing })) },
      nested
        ? `this worker leaves fan-out to workers that know more targets (${who}), so no event misses a target while DOWNSTREAM_TARGETS differ (a rolling restart): restart this worker with the same targets`
        : `no worker fans events out: DOWNSTREAM_TARGETS differ and none knows every target (${who}); events wait in the queue, none is lost. Give every worker the same targets`,
      'this worker fans events out again: no live worker knows a target it does not',
    );
    if (may !== verdict) {
      verdict = may;
      onChange(may);
    }
    return may;
  };

  const timer = setInterval(() => void check(), intervalMs);
  timer.unref();
  return {
    check,
    leave: async () => {
      left = true;
      clearInterval(timer);
      // Bounded: a Redis that does not answer must not hold the shutdown (the entry expires anyway).
      let bound: NodeJS.Timeout | undefined;
      await Promise.race([RENEW.run(redis, keys, [me.id, '', ttlMs]).catch(() => undefined), new Promise((r) => (bound = setTimeout(r, 1000)))]);
      clearTimeout(bound);
    },
  };
}
