import type { Logger } from 'pino';
import { conditionWarning } from './condition-warning.ts';

/**
 * What a Redis under memory pressure does to the queues, said in the log (docs/operations.md,
 * Logs). A `maxmemory-policy` other than `noeviction` lets Redis delete queued jobs: a resource
 * audit (allkeys-lru) lost 163 delivery jobs with nothing written anywhere but BullMQ's plain-text
 * warning at start. At `maxmemory` with `noeviction` Redis refuses writes: events wait in MongoDB
 * and deliveries stop, while PING, and so every health check, still answers.
 *
 * Every `intervalMs` this reads `INFO memory` (no write, and allowed where CONFIG is not, as on
 * managed services) and warns, at most once per `remindEveryMs` for each: a policy other than
 * `noeviction`, and memory used past `fullAtRatio` of `maxmemory`. It says so at info when it ends.
 */
export interface RedisMemoryState {
  policy: string | undefined;
  usedBytes: number;
  maxBytes: number;
}

export interface RedisMemoryWatch {
  stop(): void;
  /** Reads and judges now (the timer does it every `intervalMs`). Never rejects. */
  check(): Promise<RedisMemoryState | undefined>;
}

export interface RedisMemoryWatchOptions {
  intervalMs?: number;
  remindEveryMs?: number;
  fullAtRatio?: number;
}

/** The fields of `INFO memory` this reads. */
export function parseRedisMemory(info: string): RedisMemoryState {
  const field = (name: string) => new RegExp(`^${name}:(.*)$`, 'm').exec(info)?.[1]?.trim();
  return { policy: field('maxmemory_policy'), usedBytes: Number(field('used_memory') ?? 0), maxBytes: Number(field('maxmemory') ?? 0) };
}

const mb = (bytes: number) => Math.round(bytes / 1048576);

export function watchRedisMemory(redis: { info(section: 'memory'): Promise<string> }, log: Logger, o: RedisMemoryWatchOptions = {}): RedisMemoryWatch {
  const intervalMs = o.intervalMs ?? 60_000;
  const remindEveryMs = o.remindEveryMs ?? 600_000;
  const fullAtRatio = o.fullAtRatio ?? 0.95;
  const warn = { policy: conditionWarning(log, remindEveryMs, Date.now), full: conditionWarning(log, remindEveryMs, Date.now) };

  const check = async (): Promise<RedisMemoryState | undefined> => {
    let state: RedisMemoryState;
    try {
      state = parseRedisMemory(await redis.info('memory'));
    } catch {
      return undefined; // Redis not answering is the datastore watch's to report.
    }
    const fields = { redis_maxmemory_policy: state.policy, redis_used_mb: mb(state.usedBytes), redis_maxmemory_mb: mb(state.maxBytes) };
    if (state.policy !== undefined) {
      warn.policy(
        state.policy !== 'noeviction',
        fields,
        `Redis's maxmemory-policy is ${state.policy}, not noeviction: under memory pressure it deletes queued events and deliveries (the retention pass repairs deliveries it finds pending, in up to WORKER_PURGE_INTERVAL_MS). Set maxmemory-policy noeviction`,
        `Redis's maxmemory-policy is noeviction again`,
      );
    }
    const full = state.maxBytes > 0 && state.usedBytes >= fullAtRatio * state.maxBytes;
    warn.full(
      full,
      fields,
      `Redis uses ${mb(state.usedBytes)} MB of its maxmemory ${mb(state.maxBytes)} MB: when it is full it refuses writes (events wait in MongoDB, deliveries stop) while it still answers PING. Raise maxmemory, or find what fills it`,
      `Redis has room again (${mb(state.usedBytes)} MB of ${mb(state.maxBytes)} MB)`,
    );
    return state;
  };
  const timer = setInterval(() => void check(), intervalMs);
  timer.unref();
  void check();
  return { stop: () => clearInterval(timer), check };
}
