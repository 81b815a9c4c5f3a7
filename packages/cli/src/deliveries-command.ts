import type { DeliveryStatus, DeliveryStore } from '@connect/shared';
import { CliError, defineCommand, isMaxTimeExpired, optional, positional, toCliError, type CliContext, type Command } from './command.ts';

const STATUSES: DeliveryStatus[] = ['pending', 'delivered', 'failed', 'superseded'];

function statusOf(raw: string | undefined): DeliveryStatus {
  const status = (raw ?? 'failed') as DeliveryStatus;
  if (!STATUSES.includes(status)) throw new CliError('usage', `--status must be one of ${STATUSES.join(', ')}, got "${raw}"`);
  return status;
}

/** How many rows `deliveries list` prints at most (`--limit`); `truncated` says when more matched. */
const LIST_LIMIT = { default: 1000, max: 10_000 };

/**
 * The database's time limit on the list's query (maxTimeMS), under the CLI's 10 s per-operation
 * limit (datastores.ts OPERATION_TIMEOUT_MS, not imported: it would load mongoose for `--help`).
 * On FerretDB the list reads and sorts every row of the status asked; at about 100,000 of them
 * that outlasted the socket timeout, the driver retried, and after 25 s the CLI said the
 * database was unavailable while the query ran on. Stopped in the database, it ends at once
 * with an answer that says what happened (docs/operations.md, The CLI).
 */
export const LIST_MAX_TIME_MS = 8_000;

function limitOf(raw: string | undefined): number {
  if (raw === undefined) return LIST_LIMIT.default;
  const n = /^\d+$/.test(raw) ? Number(raw) : NaN;
  if (!(n >= 1 && n <= LIST_LIMIT.max)) throw new CliError('usage', `--limit must be a whole number from 1 to ${LIST_LIMIT.max}, got "${raw}"`);
  return n;
}

/**
 * `--target NAME`: a configured target, or one taken out of DOWNSTREAM_TARGETS whose delivery
 * rows are still there (not yet `targets forget`), so an operator can see what it left behind.
 * A name that is neither is not_found.
 */
async function targetOf(ctx: CliContext, store: DeliveryStore, name: string | undefined): Promise<string | undefined> {
  if (name === undefined || ctx.config.downstreamTargets.some((t) => t.name === name)) return name;
  if (!(await store.hasRowsFor(name))) throw new (await import('@connect/shared')).UnknownTargetError(name);
  process.stderr.write(`cli: target ${name} is not in DOWNSTREAM_TARGETS; listing the deliveries it left (\`pnpm cli targets forget ${name}\` deletes them)\n`);
  return name;
}

/**
 * Puts dead letters back on their target's queue (needs Redis; `unavailable` within a few seconds when it is down).
 * With --all-failed, a dead letter that could not be replayed is an item of `errors` with its kind, and the
 * exit is 1: the document still lists what did replay, which an `{"error"}` document would hide.
 */
async function replay(ctx: CliContext, args: { allFailed: boolean; id?: string }): Promise<unknown> {
  const [{ DeliveryQueues, DeliveryStore, replayAllFailed, replayDelivery, ReplayError }, { jobPolicy }] = await Promise.all([import('@connect/shared'), import('./delivery-job-policy.ts')]);
  // The delivery is not in a state that can be replayed (delivered, pending, being replayed, its target no longer configured): a conflict, not bad usage.
  const errorOf = (err: unknown) => (err instanceof ReplayError ? new CliError('conflict', err.message) : toCliError(err));
  const redis = await ctx.redis();
  // The worker's attempts and retention (WORKER_RETRY_SCHEDULE, TARGET_*), as resync and recover use.
  const queues = new DeliveryQueues(redis, ctx.config.queuePrefix, ctx.config.downstreamTargets, jobPolicy());
  try {
    const deps = { store: new DeliveryStore(ctx.models), queues, targets: ctx.config.downstreamTargets };
    if (args.allFailed) {
      const result = await replayAllFailed(
        deps,
        (err) => {
          const e = errorOf(err);
          return { kind: e.kind, error: e.message };
        },
        ctx.stop,
      );
      if (result.interrupted) process.exitCode = 130;
      else if (result.errors.length > 0) process.exitCode = 1;
      return result;
    }
    try {
      return { replayed: [await replayDelivery(deps, args.id!)] };
    } catch (err) {
      if (err instanceof ReplayError) throw errorOf(err);
      throw err;
    }
  } finally {
    await queues.close();
  }
}

export const deliveriesCommands: Command[] = [
  defineCommand({
    name: 'deliveries list',
    synopsis: `[--target NAME] [--status pending|delivered|failed|superseded] [--limit N]`,
    description: `Lists deliveries with a status (default failed: the dead letters), of one target or all,
oldest change first, without user data; at most --limit of them (default ${LIST_LIMIT.default}, at most
${LIST_LIMIT.max}). --target also takes a target taken out of DOWNSTREAM_TARGETS whose deliveries
are still stored (until \`targets forget\`). Prints {"status", "target"?, "count", "truncated", "deliveries": [...]}: count is
how many are listed, truncated is true when more matched than the limit.`,
    options: { status: { type: 'string' }, target: { type: 'string' }, limit: { type: 'string' } },
    parse: (input) => ({ status: statusOf(optional(input, 'status')), target: optional(input, 'target'), limit: limitOf(optional(input, 'limit')), maxTimeMS: LIST_MAX_TIME_MS }),
    run: async (args, ctx) => {
      const { DeliveryStore, listDeliveries } = await import('@connect/shared');
      const store = new DeliveryStore(ctx.models);
      const target = await targetOf(ctx, store, args.target);
      // One more than asked: whether more matched, without counting a collection that may be large.
      const found = await listDeliveries(store, { status: args.status, target, limit: args.limit + 1, maxTimeMS: args.maxTimeMS }).catch((err: unknown) => {
        if (!isMaxTimeExpired(err)) throw err;
        const which = `${args.status} deliveries${target ? ` of ${target}` : ''}`;
        throw new CliError(
          'unavailable',
          `Listing the ${which} took over ${args.maxTimeMS / 1000} s and the database stopped it. On FerretDB the list reads and sorts every ${args.status} row; narrow it with --target${target ? ' to another target' : ''}, or read one delivery with \`deliveries show ID\`. On MongoDB an index answers it.`,
        );
      });
      const deliveries = found.slice(0, args.limit);
      return { status: args.status, ...(target ? { target } : {}), count: deliveries.length, truncated: found.length > args.limit, deliveries };
    },
  }),
  defineCommand({
    name: 'deliveries show',
    synopsis: 'ID',
    description: `One delivery with its attempts (time, duration, HTTP status or error class,
short message; never user data or response bodies). Prints the delivery, its attempts as a list
(attempts) and their number (attempt_count).`,
    positionals: 1,
    parse: (input) => positional(input, 'a delivery id'),
    async run(id, ctx) {
      const { DeliveryStore, showDelivery } = await import('@connect/shared');
      return showDelivery(new DeliveryStore(ctx.models), id);
    },
  }),
  defineCommand({
    name: 'deliveries replay',
    needsRedis: true,
    synopsis: 'ID | --all-failed',
    description: `Sends dead letters again (the user's newest state, same ordering rules): the delivery ID,
or with --all-failed every dead letter (not both). Needs REDIS_URL.
Prints {"replayed": [...]}; with --all-failed also "errors": [...], the dead letters that could not
be replayed, each with its id, its kind (not_found, conflict, unavailable or internal, as for one ID)
and why; then the exit code is 1, and the document still lists what was replayed. Ctrl-C (or
SIGTERM) stops after the dead letter in progress: what was replayed is printed with
"interrupted": true (exit 130), and the same command replays the rest.`,
    options: { 'all-failed': { type: 'boolean' } },
    stopNotice: 'interrupted: stopping after the dead letter in progress (run the same command again to replay the rest)',
    positionals: 1,
    parse(input) {
      const allFailed = input.values['all-failed'] === true;
      const id = input.positionals[0];
      if (allFailed && id !== undefined) throw new CliError('usage', `give a delivery id or --all-failed, not both (got "${id}" and --all-failed)`);
      if (!allFailed && !id?.trim()) throw new CliError('usage', 'give a delivery id or --all-failed');
      return { allFailed, id };
    },
    run: (args, ctx) => replay(ctx, args),
  }),
];
