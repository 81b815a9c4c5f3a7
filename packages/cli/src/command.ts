/**
 * What a CLI command is, and the errors it may end with. Commands live in their
 * own files (org-commands.ts, client-commands.ts, ...) and are listed once in
 * main.ts's COMMANDS; main.ts parses the arguments, opens the database, runs the
 * command and prints its result as one JSON document on stdout.
 */
import { createRedis, DomainError, ConfigError, type Config, type Models, type RedisClient } from '@connect/shared';

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

export interface Command {
  /** The words that select it, e.g. "client create". */
  name: string;
  /** Its arguments as the usage line shows them, e.g. "--org ID (--public-key-file F | --jwks-url U)". */
  synopsis: string;
  /** Plain text for `pnpm cli NAME --help`: what it does and what it prints. */
  description: string;
  options?: Record<string, OptionSpec>;
  /** How many positional arguments it takes at most (default 0). */
  positionals?: number;
  run(input: CommandInput, ctx: CliContext): Promise<unknown>;
}

/** A string option that must be given (a usage error otherwise). */
export function required(input: CommandInput, name: string): string {
  const v = input.values[name];
  if (typeof v !== 'string' || v.trim() === '') throw new CliError('usage', `--${name} is required`);
  return v;
}

export function optional(input: CommandInput, name: string): string | undefined {
  const v = input.values[name];
  return typeof v === 'string' && v.trim() !== '' ? v : undefined;
}

/** The first positional argument, named in the usage error when missing. */
export function positional(input: CommandInput, label: string): string {
  const v = input.positionals[0];
  if (!v) throw new CliError('usage', `${label} is required`);
  return v;
}

/** `user:password@` out of a connection string, so an error message can show where it tried. */
export function redactUrl(url: string): string {
  return url.replace(/\/\/[^@/]*@/, '//***@');
}

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

/** How long the CLI waits for MongoDB or Redis before answering `unavailable` (the contract says within 5 s). */
export const DATASTORE_TIMEOUT_MS = 3_000;

/** Opens Redis for a command, or fails `unavailable` when it does not answer in time. */
export async function connectRedis(config: Readonly<Config>): Promise<RedisClient> {
  if (!config.redisUrl) throw new CliError('configuration', 'REDIS_URL: is required for this command', { variable: 'REDIS_URL' });
  // Commands queue their first calls until the connection is up; the ping
  // below bounds that wait, so a down Redis is an answer, not a hang.
  const redis = createRedis(config.redisUrl, 'producer', { enableOfflineQueue: true, connectTimeout: DATASTORE_TIMEOUT_MS / 2 });
  redis.on('error', () => undefined);
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      redis.ping(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new CliError('unavailable', `Redis at ${redactUrl(config.redisUrl)} did not answer within ${DATASTORE_TIMEOUT_MS / 1000} s`)), DATASTORE_TIMEOUT_MS);
      }),
    ]);
  } catch (err) {
    redis.disconnect();
    throw err instanceof CliError ? err : new CliError('unavailable', `Redis at ${redactUrl(config.redisUrl)}: ${(err as Error).message}`);
  } finally {
    clearTimeout(timer);
  }
  return redis;
}
