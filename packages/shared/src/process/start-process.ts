import type { Server } from 'node:http';
import type { Logger } from 'pino';
import { ConfigError, loadConfig, type Config, type ConfigProblem, type LoadConfigOptions } from '../config.ts';
import { endLogs, withoutCredentials } from '../logger.ts';
import { isMissingDatabaseError, selectsDatabase, type RedisClient } from '../events/redis-connection.ts';

/**
 * Runs each configuration loader and returns their results, or prints every
 * problem any of them found (one line per variable: `configuration error: NAME:
 * problem`) and exits 1 before anything listens (docs/operations.md). Loaders run even after
 * one failed, so a process with its own options (the worker's) still reports
 * all of its mistakes at once.
 */
export function loadOrExit<const L extends readonly (() => unknown)[]>(...loaders: L): { [K in keyof L]: ReturnType<L[K]> } {
  const results: unknown[] = [];
  const problems: ConfigProblem[] = [];
  for (const load of loaders) {
    try {
      results.push(load());
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      problems.push(...err.problems.filter((p) => !problems.some((q) => q.variable === p.variable)));
    }
  }
  if (problems.length > 0) {
    process.stderr.write(problems.map((p) => `configuration error: ${p.variable}: ${p.problem}\n`).join(''));
    process.exit(1);
  }
  return results as { [K in keyof L]: ReturnType<L[K]> };
}

/** The shared configuration from `process.env`, or every problem printed and exit 1. */
export function loadConfigOrExit(options?: LoadConfigOptions): Readonly<Config> {
  const [config] = loadOrExit(() => loadConfig(process.env, options));
  return config;
}

/** Where a start-up step failed, in the operator's terms: the variable to look at. */
export interface StartupVariables {
  /** Named when MongoDB cannot be reached or refuses the connection string. */
  mongo?: string;
  /** Named when the address cannot be bound: the host does not resolve or is not this machine's. */
  host?: string;
  /** Named when the port is taken or not allowed. */
  port?: string;
  /** Named when Redis refuses what its URL asks (checkRedisDatabase). */
  redis?: string;
}

const HOST_ERRORS = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_NONAME', 'EADDRNOTAVAIL']);
const PORT_ERRORS = new Set(['EADDRINUSE', 'EACCES', 'ERR_SOCKET_BAD_PORT']);

/** The variable an error of a start-up step points at, if any. */
export function startupVariableOf(err: unknown, names: StartupVariables): string | undefined {
  const { name = '', code = '' } = (err ?? {}) as { name?: string; code?: string };
  if (names.mongo && /^Mongo/.test(name)) return names.mongo;
  if (names.host && HOST_ERRORS.has(code)) return names.host;
  if (names.port && PORT_ERRORS.has(code)) return names.port;
  if (names.redis && name === 'RedisDatabaseMissingError') return names.redis;
  return undefined;
}

/**
 * Runs one start-up step (connecting to MongoDB, binding a port); when it fails, the
 * process writes out its log, prints one line naming the variable to look at
 * (`startup error: NAME: what failed: why`, like a configuration error) and exits 1,
 * instead of an unhandled rejection's stack trace.
 */
export async function startupStep<T>(log: Logger, what: string, names: StartupVariables, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (err) {
    const variable = startupVariableOf(err, names);
    const why = withoutCredentials(((err as Error)?.message ?? String(err)).split('\n')[0]!);
    log.error({ step: what, err: why, code: (err as { code?: string })?.code }, 'start-up failed');
    await endLogs(log);
    process.stderr.write(`startup error: ${variable ? `${variable}: ` : ''}${what} failed: ${why}\n`);
    process.exit(1);
  }
}

/**
 * Stops the process (exit 1, one line naming REDIS_URL) when Redis refuses, on a
 * reconnection, the database REDIS_URL names: a server restarted with a smaller `databases`
 * setting. ioredis would go on with database 0, running the queues where another deployment's
 * may be. At once, without the shutdown sequence, which would hand its events to that database:
 * what is in flight is in MongoDB already (the outbox; the sweep publishes it), and a delivery
 * under way is made again by the next worker once its lock lapses. Restarted, the process
 * refuses to start with the same line (checkRedisDatabase) until REDIS_URL or the server is set right.
 */
export function stopOnLostRedisDatabase(log: Logger, client: RedisClient, redisUrl: string): void {
  if (!selectsDatabase(redisUrl)) return;
  let stopping = false;
  client.on('error', (err: Error) => {
    if (stopping || !isMissingDatabaseError(err)) return;
    stopping = true;
    const why = `the Redis server no longer has the database REDIS_URL names (${err.message}; restarted with a smaller "databases" setting?): stopping rather than running the queues on database 0`;
    log.fatal({ variable: 'REDIS_URL', err: err.message }, why);
    void endLogs(log).then(() => {
      process.stderr.write(`error: REDIS_URL: ${why}\n`);
      process.exit(1);
    });
  });
}

/** `server.listen` as a promise that rejects when the port cannot be bound (taken, not allowed), instead of an uncaught 'error' event. */
export function listenOn(server: Server, port: number, host: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}
