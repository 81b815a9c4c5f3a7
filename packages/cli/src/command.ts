/**
 * What a CLI command is, and the errors it may end with. Commands live in their
 * own files (org-commands.ts, client-commands.ts, ...) and are listed once in
 * COMMANDS (commands.ts); main.ts parses the arguments, opens the database (datastores.ts),
 * runs the command and prints its result as one JSON document on stdout.
 */
// Only light imports here (and in every command's `parse`): main.ts loads the drivers
// when a command runs, so `--help` and usage errors answer at once.
import { ConfigError, DomainError, TARGET_NAME, TARGET_NAME_RULE, urlWithoutSecrets } from '@connect/shared/input-rules';
import type { Config, Models, RedisClient } from '@connect/shared';

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
  /**
   * Aborted by SIGINT or SIGTERM for a command with `stopNotice` (main.ts); never
   * aborted for the others, which those signals end as before.
   */
  stop: AbortSignal;
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
  /**
   * Set for a command that stops cleanly when asked to (targets resync): from the
   * moment it is chosen, SIGINT and SIGTERM, any number of them, abort `ctx.stop`
   * instead of ending the process, and this goes to stderr at the first. `run` then
   * returns what it did (and sets exit 130), so stdout still gets one document.
   */
  stopNotice?: string;
  /** Set for a command that needs Redis: a Redis that refuses connections is told before the drivers load (main.ts). */
  needsRedis?: boolean;
  /** The most one database operation may wait for its answer, for a command whose reads are long by nature (default OPERATION_TIMEOUT_MS, 10 s). */
  operationTimeoutMs?: number;
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
  if (v === undefined) throw new CliError('usage', `--${name} is required`);
  if (typeof v !== 'string' || v.trim() === '') throw new CliError('usage', `--${name} is empty: give it a value`);
  return withinLength(`--${name}`, v);
}

/**
 * The longest value an option or argument takes (a URL, a name, an id are far shorter): a longer
 * one is a usage error, so it is neither stored nor echoed whole in a not_found message.
 */
export const MAX_ARGUMENT_LENGTH = 4096;

function withinLength(label: string, v: string): string {
  if (v.length > MAX_ARGUMENT_LENGTH) throw new CliError('usage', `${label} is ${v.length} characters long; at most ${MAX_ARGUMENT_LENGTH} are accepted`);
  return v;
}

/** A string option that may be left out; given, it needs a value (`--org ""` is a usage error, not "no --org"). */
export function optional(input: CommandInput, name: string): string | undefined {
  const v = input.values[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || v.trim() === '') throw new CliError('usage', `--${name} needs a value (leave the option out for the default)`);
  return withinLength(`--${name}`, v);
}

/** The first positional argument, named in the usage error when missing. */
export function positional(input: CommandInput, label: string): string {
  const v = input.positionals[0];
  if (!v?.trim()) throw new CliError('usage', `${label} is required`);
  return withinLength(label, v);
}

/**
 * A connection string without its credentials, query and fragment (where drivers take passwords and
 * tokens too), so an error message can show where it tried.
 */
export const redactUrl = urlWithoutSecrets;

const UNAVAILABLE_NAMES = new Set([
  'MongooseServerSelectionError',
  'MongoServerSelectionError',
  'MongoNetworkError',
  'MongoNetworkTimeoutError',
  'MongoTopologyClosedError',
  'MaxRetriesPerRequestError',
]);

/** The database stopped a query at its maxTimeMS (MongoDB and FerretDB alike). */
export function isMaxTimeExpired(err: unknown): boolean {
  return (err as { codeName?: string } | null)?.codeName === 'MaxTimeMSExpired';
}

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
  // The database stopped a query at its time limit (maxTimeMS): it is there, but too slow for this command now.
  if (isMaxTimeExpired(err)) return new CliError('unavailable', `The database stopped the query at its time limit: ${e.message ?? 'MaxTimeMSExpired'}`);
  // A network failure inside a bulk write comes as a MongoBulkWriteError with the connection's message
  // (`connection 10 to 127.0.0.1:42267 timed out`): a fairness audit's resync printed it as `internal`.
  const cause = (err as { cause?: { name?: string } } | null)?.cause;
  if (
    (e?.name && UNAVAILABLE_NAMES.has(e.name)) ||
    (cause?.name && UNAVAILABLE_NAMES.has(cause.name)) ||
    e?.code === 'ECONNREFUSED' ||
    /Connection is closed|ECONNREFUSED|ETIMEDOUT|^Command timed out|^connection \d+ to \S+ (timed out|closed)/.test(e?.message ?? '')
  ) {
    return new CliError('unavailable', e.message ?? 'a datastore did not answer');
  }
  return new CliError('internal', e?.message ?? String(err));
}

/** A target name argument: one that could never name a target is a usage error (as for every targets command), not `not_found`. */
export function targetNameOf(input: Parameters<typeof positional>[0]): string {
  const name = positional(input, 'a target name');
  if (!TARGET_NAME.test(name)) throw new CliError('usage', `${JSON.stringify(name.slice(0, 80))} is not a target name (${TARGET_NAME_RULE}).`);
  return name;
}
