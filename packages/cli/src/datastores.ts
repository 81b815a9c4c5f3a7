/**
 * Opening MongoDB and Redis for a command, with bounded waits. Loaded by main.ts only
 * when a command runs (it pulls in mongoose and ioredis).
 */
import mongoose, { type Connection, type mongo } from 'mongoose';
import { createRedis, isMissingDatabaseError, type Config, type RedisClient } from '@connect/shared';
import { CliError, redactUrl } from './command.ts';

/**
 * How long the CLI waits for a connection to MongoDB or Redis (TCP, TLS and the
 * first hello) before answering `unavailable`. A refused connection (nothing
 * listens there, a name that does not resolve) is an answer at once; this bounds
 * a host that does not answer at all. Not shorter: a healthy datastore on a busy
 * machine may take a second to say hello, and must not be called unavailable.
 */
export const CONNECT_TIMEOUT_MS = 1_500;

/**
 * The most the CLI waits for either datastore to become usable (MongoDB's server
 * selection, Redis's first PING). With start-up (about 1.5 to 2.5 s) the CLI answers
 * `unavailable` within the contract's 5 s.
 */
export const DATASTORE_TIMEOUT_MS = 2_000;

/**
 * The most one operation may wait for an answer once connected: a datastore that accepted the
 * connection and then went silent (FerretDB with its PostgreSQL stuck, Redis paused by a failover's
 * CLIENT PAUSE) held the command for ever. MongoDB's socket timeout and ioredis' command timeout; the
 * error is `unavailable`. Long enough for any one operation the CLI makes on a healthy database.
 */
export const OPERATION_TIMEOUT_MS = 10_000;

const seconds = (ms: number) => `${ms / 1000} s`;

/**
 * Opens MongoDB, or fails `unavailable`: as soon as every server the driver
 * knows has failed its first check (refused, unresolvable, or no answer within
 * CONNECT_TIMEOUT_MS), and at the latest after DATASTORE_TIMEOUT_MS. Server
 * selection alone would wait out its whole timeout even when the connection was
 * refused at once.
 */
export async function connectMongo(url: string, where = '', operationTimeoutMs = OPERATION_TIMEOUT_MS): Promise<Connection> {
  const conn = mongoose.createConnection(url, { serverSelectionTimeoutMS: DATASTORE_TIMEOUT_MS, connectTimeoutMS: CONNECT_TIMEOUT_MS, socketTimeoutMS: operationTimeoutMs });
  const client = conn.getClient();
  let onChange: ((e: mongo.TopologyDescriptionChangedEvent) => void) | undefined;
  const allFailed = new Promise<never>((_, reject) => {
    onChange = (e) => {
      const servers = [...e.newDescription.servers.values()];
      const failed = servers.filter((s) => s.type === 'Unknown' && s.error);
      if (servers.length > 0 && failed.length === servers.length) reject(new CliError('unavailable', `MongoDB at ${redactUrl(url)} is unavailable${where}: ${failed[0]!.error!.message}`));
    };
    client.on('topologyDescriptionChanged', onChange);
  });
  try {
    await Promise.race([conn.asPromise(), allFailed]);
    return conn;
  } catch (err) {
    // The client first: closing the connection alone would wait for the pending server selection to time out.
    await client.close().catch(() => undefined);
    await conn.close().catch(() => undefined);
    if (err instanceof CliError) throw err;
    throw new CliError('unavailable', `MongoDB at ${redactUrl(url)} did not answer within ${seconds(DATASTORE_TIMEOUT_MS)}${where}: ${(err as Error).message}`);
  } finally {
    client.off('topologyDescriptionChanged', onChange!);
  }
}

/**
 * Opens Redis for a command, or fails `unavailable`: at its first connection
 * error (refused at once, or no connection within CONNECT_TIMEOUT_MS), and at the
 * latest when it has not answered a PING within DATASTORE_TIMEOUT_MS.
 */
export async function connectRedis(config: Readonly<Config>): Promise<RedisClient> {
  if (!config.redisUrl) throw new CliError('configuration', 'REDIS_URL: is required for this command', { variable: 'REDIS_URL' });
  const where = `Redis at ${redactUrl(config.redisUrl)}`;
  // Commands queue their first calls until the connection is up; the ping
  // below bounds that wait, so a down Redis is an answer, not a hang.
  const redis = createRedis(config.redisUrl, 'producer', { enableOfflineQueue: true, connectTimeout: CONNECT_TIMEOUT_MS, commandTimeout: OPERATION_TIMEOUT_MS });
  // Errors after the connection are met by the call that runs into them; without a listener ioredis logs them to stderr.
  redis.on('error', () => undefined);
  let timer: NodeJS.Timeout | undefined;
  let onError: ((err: Error) => void) | undefined;
  try {
    await Promise.race([
      redis.ping(),
      new Promise((_, reject) => {
        onError = (err) => reject(redisFailure(err, where));
        redis.on('error', onError);
        timer = setTimeout(() => reject(new CliError('unavailable', `${where} did not answer within ${seconds(DATASTORE_TIMEOUT_MS)}`)), DATASTORE_TIMEOUT_MS);
      }),
    ]);
  } catch (err) {
    redis.disconnect();
    throw err instanceof CliError ? err : redisFailure(err as Error, where);
  } finally {
    clearTimeout(timer);
    redis.off('error', onError!);
  }
  return redis;
}

/**
 * Redis answering, but refusing what REDIS_URL asks (its credentials, its database number), is the
 * URL's to fix, not an outage: `configuration`. (A database number the server lacks would otherwise
 * leave the connection on database 0.) Anything else is `unavailable`.
 */
function redisFailure(err: Error, where: string): CliError {
  if (/^(WRONGPASS|NOAUTH)\b/.test(err.message)) {
    return new CliError('configuration', `REDIS_URL: ${where} refused the credentials: ${err.message}`, { variable: 'REDIS_URL' });
  }
  if (isMissingDatabaseError(err)) {
    return new CliError('configuration', `REDIS_URL: ${where} has no database of that number (${err.message}); a server has databases 0 to 15 unless its "databases" setting says otherwise`, { variable: 'REDIS_URL' });
  }
  return new CliError('unavailable', `${where} is unavailable: ${err.message}`);
}
