/**
 * What a CLI command is, and the errors it may end with. Commands live in their
 * own files (org-commands.ts, client-commands.ts, ...) and are listed once in
 * COMMANDS (commands.ts); main.ts parses the arguments, opens the database, runs the
 * command and prints its result as one JSON document on stdout.
 */
import mongoose, { type Connection, type mongo } from 'mongoose';
import { createRedis, DomainError, ConfigError, withoutCredentials, type Config, type Models, type RedisClient } from '@connect/shared';

/**
 * The five error kinds scripts can branch on (docs/operations.md), plus
 * `internal` for a bug (an error nobody mapped).
 */
export type ErrorKind = 'usage' | 'configuration' | 'unavailable' | 'not_found' | 'conflict' | 'internal';

export class CliError extends Error {
  constructor(
    readonly kind: ErrorKind,
    message: string,
    readonly extra: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'CliError';
  }
}

export interface CliContext {
  config: Readonly<Config>;
  models: Models;
  /**
   * A Redis connection for commands that need one (opened on first call, closed
   * by main.ts). Fails with kind `unavailable` within a few seconds when Redis
   * does not answer, and with `configuration` without REDIS_URL.
   */
  redis(): Promise<RedisClient>;
}

export type OptionSpec = { type: 'string' | 'boolean'; multiple?: boolean };

export interface CommandInput {
  values: Record<string, string | boolean | (string | boolean)[] | undefined>;
  positionals: string[];
}

/**
 * A command in two steps. `parse` checks the arguments and turns them into what
 * `run` needs, with no configuration loaded and no datastore open, so a usage
 * error is reported first (before a missing MONGO_URL or a database that is
 * down). `run` gets them with the configuration, the models and Redis.
 */
export interface Command<A = unknown> {
  /** The words that select it, e.g. "client create". */
  name: string;
  /** Its arguments as the usage line shows them, e.g. "--org ID (--public-key-file F | --jwks-url U)". */
  synopsis: string;
  /** Plain text for `pnpm cli NAME --help`: what it does and what it prints. */
  description: string;
  options?: Record<string, OptionSpec>;
  /** How many positional arguments it takes at most (default 0). */
  positionals?: number;
  /** Checks the arguments: throws a `usage` CliError, or returns `run`'s first argument. */
  parse(input: CommandInput): A;
  run(args: A, ctx: CliContext): Promise<unknown>;
}

/** Keeps `parse` and `run` of one command in step (the list of commands holds them as Command<unknown>). */
export function defineCommand<A>(command: Command<A>): Command {
  return command as Command;
}

/** A string option that must be given (a usage error otherwise). */
export function required(input: CommandInput, name: string): string {
  const v = input.values[name];
  if (typeof v !== 'string' || v.trim() === '') throw new CliError('usage', `--${name} is required`);
  return v;
}

/** A string option that may be left out; given, it needs a value (`--org ""` is a usage error, not "no --org"). */
export function optional(input: CommandInput, name: string): string | undefined {
  const v = input.values[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || v.trim() === '') throw new CliError('usage', `--${name} needs a value (leave the option out for the default)`);
  return v;
}

/** The first positional argument, named in the usage error when missing. */
export function positional(input: CommandInput, label: string): string {
  const v = input.positionals[0];
  if (!v?.trim()) throw new CliError('usage', `${label} is required`);
  return v;
}

/** `user:password@` out of a connection string, so an error message can show where it tried. */
export const redactUrl = withoutCredentials;

const UNAVAILABLE_NAMES = new Set([
  'MongooseServerSelectionError',
  'MongoServerSelectionError',
  'MongoNetworkError',
  'MongoNetworkTimeoutError',
  'MongoTopologyClosedError',
  'MaxRetriesPerRequestError',
]);

/** Any error a command can end with, as the kind and message the CLI prints. */
export function toCliError(err: unknown): CliError {
  if (err instanceof CliError) return err;
  if (err instanceof ConfigError) return new CliError('configuration', err.message, { variable: err.variable });
  if (err instanceof DomainError) {
    const extra = err.errors ? { errors: err.errors } : {};
    if (err.status === 404) return new CliError('not_found', err.message, extra);
    if (err.status === 409) return new CliError('conflict', err.message, extra);
    if (err.status === 400) return new CliError('usage', err.message, extra);
    return new CliError('internal', err.message, extra);
  }
  const e = err as { name?: string; code?: string; message?: string };
  if (typeof e?.code === 'string' && e.code.startsWith('ERR_PARSE_ARGS')) return new CliError('usage', e.message ?? 'bad arguments');
  if ((e?.name && UNAVAILABLE_NAMES.has(e.name)) || e?.code === 'ECONNREFUSED' || /Connection is closed|ECONNREFUSED|ETIMEDOUT/.test(e?.message ?? '')) {
    return new CliError('unavailable', e.message ?? 'a datastore did not answer');
  }
  return new CliError('internal', e?.message ?? String(err));
}

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

const seconds = (ms: number) => `${ms / 1000} s`;

/**
 * Opens MongoDB, or fails `unavailable`: as soon as every server the driver
 * knows has failed its first check (refused, unresolvable, or no answer within
 * CONNECT_TIMEOUT_MS), and at the latest after DATASTORE_TIMEOUT_MS. Server
 * selection alone would wait out its whole timeout even when the connection was
 * refused at once.
 */
export async function connectMongo(url: string, where = ''): Promise<Connection> {
  const conn = mongoose.createConnection(url, { serverSelectionTimeoutMS: DATASTORE_TIMEOUT_MS, connectTimeoutMS: CONNECT_TIMEOUT_MS });
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
  const redis = createRedis(config.redisUrl, 'producer', { enableOfflineQueue: true, connectTimeout: CONNECT_TIMEOUT_MS });
  // Errors after the connection are met by the call that runs into them; without a listener ioredis logs them to stderr.
  redis.on('error', () => undefined);
  let timer: NodeJS.Timeout | undefined;
  let onError: ((err: Error) => void) | undefined;
  try {
    await Promise.race([
      redis.ping(),
      new Promise((_, reject) => {
        onError = (err) => reject(new CliError('unavailable', `${where} is unavailable: ${err.message}`));
        redis.on('error', onError);
        timer = setTimeout(() => reject(new CliError('unavailable', `${where} did not answer within ${seconds(DATASTORE_TIMEOUT_MS)}`)), DATASTORE_TIMEOUT_MS);
      }),
    ]);
  } catch (err) {
    redis.disconnect();
    throw err instanceof CliError ? err : new CliError('unavailable', `${where}: ${(err as Error).message}`);
  } finally {
    clearTimeout(timer);
    redis.off('error', onError!);
  }
  return redis;
}
