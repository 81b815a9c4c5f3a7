/**
 * BullMQ waits for jobs on a connection of its own per worker (the "blocking" one), made by
 * duplicating the connection it is given. One made while Redis, or the path to it, accepted
 * connections without answering stays in ioredis's `connect` state for good: ioredis's connect
 * timeout ends with the TCP connect, its ready check has no timeout, and BullMQ waits for `ready`
 * without a bound. That worker then takes no job until the process restarts, while every other
 * connection answers (docs/operations.md, "Configuration").
 *
 * This watch keeps the duplicates made from the worker's shared connection and, when one has
 * sat in `connect` longer than `stuckMs`, drops it: ioredis connects again on its own (its retry
 * strategy), and BullMQ's wait for `ready` ends once Redis answers. A ready check that is merely
 * slow (Redis loading its data after a restart) is started over, which costs nothing.
 * `GET /healthz` says 503 meanwhile (health-server.ts).
 */
import type { Logger } from 'pino';
import type { Redis, RedisOptions } from 'ioredis';
import type { RedisClient } from '@connect/shared';

export interface BlockingConnectionWatch {
  stop(): void;
}

export function watchBlockingConnections(shared: RedisClient, options: { stuckMs: number; everyMs?: number; log: Logger }): BlockingConnectionWatch {
  if (shared.isCluster) return { stop: () => undefined };
  const made = new Set<Redis>();
  const stuckSince = new Map<Redis, number>();
  // Redis Cluster's blocking connections are not made this way; only a standalone client is watched.
  const standalone = shared as Redis;
  const duplicate = standalone.duplicate.bind(standalone);
  standalone.duplicate = (override?: Partial<RedisOptions>) => {
    const client = duplicate(override);
    made.add(client);
    client.once('end', () => {
      made.delete(client);
      stuckSince.delete(client);
    });
    return client;
  };

  const timer = setInterval(() => {
    const now = Date.now();
    for (const client of made) {
      if (client.status !== 'connect') {
        stuckSince.delete(client);
        continue;
      }
      const since = stuckSince.get(client) ?? now;
      stuckSince.set(client, since);
      if (now - since < options.stuckMs) continue;
      options.log.warn(
        { connection: (client.options as { connectionName?: string }).connectionName, stuck_ms: now - since },
        'a connection BullMQ waits for jobs on was accepted by Redis but never answered: dropping it to connect again',
      );
      stuckSince.delete(client);
      client.disconnect(true);
    }
  }, options.everyMs ?? Math.max(100, Math.min(5000, Math.floor(options.stuckMs / 4))));
  timer.unref();
  return {
    stop: () => {
      clearInterval(timer);
      standalone.duplicate = duplicate;
    },
  };
}
