import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';

/** A Redis connection: one server (or a Sentinel-managed primary), or a Redis Cluster. */
export type RedisClient = Redis | Cluster;

export type RedisTarget =
  | { kind: 'single'; url: string }
  | { kind: 'sentinel'; sentinels: { host: string; port: number }[]; name: string; password?: string; db: number; tls: boolean }
  | { kind: 'cluster'; nodes: { host: string; port: number }[]; password?: string; tls: boolean };

function hostsOf(list: string, defaultPort: number): { host: string; port: number }[] {
  return list.split(',').map((hp) => {
    // A name or IPv4 address, or [IPv6], then an optional :port. Not echoed: a password with an
    // unescaped "/" lands here (the "@" after it is read as part of the path).
    const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9._-]+))(?::(\d{1,5}))?$/.exec(hp.trim());
    if (!m) throw new Error('bad host: each must be a name or address, or [IPv6], with an optional :port (percent-encode a password\'s "/", "@" or ":")');
    return { host: (m[1] ?? m[2])!, port: m[3] ? Number(m[3]) : defaultPort };
  });
}

/**
 * REDIS_URL forms (docs/guarantees.md, Scaling out):
 * - `redis://[:password@]host:port[/db]`, `rediss://…` (TLS): one server;
 * - `redis+sentinel://[:password@]host1:26379,host2:26379/<master name>[/db]` (`rediss+sentinel` for TLS): the primary Sentinel names;
 * - `redis+cluster://[:password@]host1:6379,host2:6379` (`rediss+cluster`): a Redis Cluster (QUEUE_PREFIX then needs a hash tag).
 */
export function parseRedisUrl(raw: string): RedisTarget {
  const trimmed = raw.trim();
  // A query (`?password=`) is not read by every client we pass the URL to; a "?" or "#" in a password must be encoded.
  if (/^rediss?(\+sentinel|\+cluster)?:\/\/[^?#]*[?#]/.test(trimmed)) {
    throw new Error('takes no query or fragment: put the password before the host (":PASSWORD@"), with "?", "#", "/" and "@" in it percent-encoded as %3F, %23, %2F and %40');
  }
  // The credentials run to the last "@" before the host (as URL parsing reads them): a password with an unencoded "@" works.
  const m = /^(rediss?)(\+sentinel|\+cluster)?:\/\/(?:([^/]*)@)?([^/?#@]+)(\/[^?#]*)?$/.exec(trimmed);
  if (!m) throw new Error('not a redis://, rediss://, redis+sentinel:// or redis+cluster:// URL with a host');
  const [, scheme, mode, auth, hosts, path] = m;
  const tls = scheme === 'rediss';
  const password = auth ? decodeURIComponent(auth.includes(':') ? auth.slice(auth.indexOf(':') + 1) : auth) || undefined : undefined;
  if (!mode) {
    // ioredis would take "/x" as database "x" and fail its SELECT at every connection.
    if (path && path !== '/' && !/^\/\d+$/.test(path)) throw new Error('bad database number (the path must be /0 to /N)');
    // What ioredis will parse it with: a port past 65535 or an unencoded character failed there, at connection time.
    if (!URL.canParse(trimmed)) throw new Error('is not a valid URL: the port must be 1 to 65535, and the password percent-encoded');
    return { kind: 'single', url: trimmed };
  }
  if (mode === '+cluster') return { kind: 'cluster', nodes: hostsOf(hosts!, 6379), password, tls };
  const parts = (path ?? '').split('/').filter(Boolean);
  if (!parts[0]) throw new Error('redis+sentinel:// needs the master name as the path');
  const db = parts[1] ? Number(parts[1]) : 0;
  if (!Number.isInteger(db) || db < 0) throw new Error('bad database number');
  return { kind: 'sentinel', sentinels: hostsOf(hosts!, 26379), name: decodeURIComponent(parts[0]), password, db, tls };
}

/**
 * A connection for BullMQ and the rate limiter. Producers (the API's relay, the
 * CLI) fail fast while Redis is away (`enableOfflineQueue: false`), so a request
 * never waits on Redis: the event stays in MongoDB and the sweep publishes it
 * later. Workers need `maxRetriesPerRequest: null` so blocking commands survive
 * reconnects.
 */
export function createRedis(url: string, role: 'producer' | 'worker', extra: RedisOptions = {}): RedisClient {
  const options: RedisOptions = {
    ...(role === 'producer'
      ? { enableOfflineQueue: false, maxRetriesPerRequest: 1, connectTimeout: 2000 }
      : { maxRetriesPerRequest: null }),
    retryStrategy: (times) => Math.min(times * 200, 2000),
    ...extra,
  };
  const target = parseRedisUrl(url);
  switch (target.kind) {
    case 'single':
      return new Redis(target.url, options);
    case 'sentinel':
      return new Redis({
        ...options,
        sentinels: target.sentinels,
        name: target.name,
        db: target.db,
        ...(target.password ? { password: target.password, sentinelPassword: target.password } : {}),
        ...(target.tls ? { tls: {}, enableTLSForSentinelMode: true } : {}),
      });
    case 'cluster': {
      const clusterOptions: ClusterOptions = {
        enableOfflineQueue: options.enableOfflineQueue ?? true,
        clusterRetryStrategy: (times) => Math.min(times * 200, 2000),
        redisOptions: {
          ...options,
          ...(target.password ? { password: target.password } : {}),
          ...(target.tls ? { tls: {} } : {}),
        },
      };
      return new Cluster(target.nodes, clusterOptions);
    }
  }
}

/** Whether connections to `url` select a database: a cluster has database 0 only, and no SELECT. */
export function selectsDatabase(url: string): boolean {
  return parseRedisUrl(url).kind !== 'cluster';
}

/** Redis refusing the database number of REDIS_URL (`SELECT`): ioredis reports it and goes on with database 0. */
export function isMissingDatabaseError(err: Error): boolean {
  return /DB index is out of range|invalid DB index/i.test(err.message);
}

/** REDIS_URL names a database the server does not have. */
export class RedisDatabaseMissingError extends Error {
  override readonly name = 'RedisDatabaseMissingError';
}

/**
 * At start, on a connection of its own: whether the server has the database REDIS_URL names (a
 * server has 0 to 15 unless its `databases` setting says otherwise). Without this, ioredis would
 * run every queue on database 0 after a refused SELECT. A Redis that cannot be reached within
 * `timeoutMs` is not this check's business: the services start without Redis and wait for it.
 */
export async function checkRedisDatabase(url: string, timeoutMs = 1000): Promise<void> {
  if (!selectsDatabase(url)) return;
  const options = { lazyConnect: true, enableReadyCheck: false, enableOfflineQueue: true, retryStrategy: () => null, connectTimeout: timeoutMs, commandTimeout: timeoutMs, maxRetriesPerRequest: 0 };
  const client = createRedis(url, 'producer', options) as Redis;
  let refused: Error | undefined;
  client.on('error', (err: Error) => {
    if (isMissingDatabaseError(err)) refused = err;
  });
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      // The PING is answered after the SELECT, which goes first on the connection: its refusal has been seen by then.
      client.connect().then(() => client.ping()),
      new Promise((resolve) => (timer = setTimeout(resolve, 2 * timeoutMs))),
    ]);
  } catch {
    // Unreachable, silent, or refusing for another reason: the connections that follow will say so.
  } finally {
    clearTimeout(timer);
    client.disconnect();
  }
  if (refused) throw new RedisDatabaseMissingError(`the server has no database of the number REDIS_URL names (${refused.message}); it has 0 to 15 unless its "databases" setting says otherwise`);
}
