import { createDeliveriesQueue, listDeliveries, replayAllFailed, replayDelivery, ReplayError } from '@connect/worker';
import { ValidationError, type DeliveryStatus } from '@connect/shared';
import { CliError, type CliContext, type Command } from './command.ts';

const STATUSES: DeliveryStatus[] = ['pending', 'delivered', 'failed', 'superseded'];

/**
 * `deliveries list --status S` reads the execution log; `deliveries replay ID |
 * --all-failed` puts dead letters back on the deliveries queue (needs REDIS_URL).
 */
export async function runDeliveriesCommand(
  ctx: CliContext,
  verb: string | undefined,
  args: { status?: string; allFailed: boolean; id?: string },
): Promise<unknown> {
  if (verb === 'list') {
    const status = (args.status ?? 'failed') as DeliveryStatus;
    if (!STATUSES.includes(status)) throw new ValidationError([{ path: 'status', message: `one of ${STATUSES.join(', ')}` }]);
    const deliveries = await listDeliveries(ctx.models, { status });
    return { status, count: deliveries.length, deliveries };
  }
  if (!args.allFailed && !args.id) throw new ValidationError([{ path: 'id', message: 'give a delivery id or --all-failed' }]);
  // Answers `unavailable` within a few seconds when Redis is down, rather than queueing forever.
  const redis = await ctx.redis();
  const deliveries = createDeliveriesQueue(redis, ctx.config.queuePrefix);
  try {
    const deps = { models: ctx.models, deliveries, targets: ctx.config.downstreamTargets };
    if (args.allFailed) return await replayAllFailed(deps);
    try {
      return { replayed: [await replayDelivery(deps, args.id!)] };
    } catch (err) {
      // The delivery is not in a state that can be replayed (delivered, pending, being replayed): a conflict, not bad usage.
      if (err instanceof ReplayError) throw new CliError('conflict', err.message);
      throw err;
    }
  } finally {
    await deliveries.close();
  }
}

export const deliveriesCommands: Command[] = [
  {
    name: 'deliveries list',
    synopsis: '[--status failed|pending|delivered|superseded]',
    description: `Lists deliveries with a status (default failed: the dead letters), without user data.
Prints {"status", "count", "deliveries": [...]}.`,
    options: { status: { type: 'string' } },
    run: (input, ctx) => runDeliveriesCommand(ctx, 'list', { status: input.values.status as string | undefined, allFailed: false }),
  },
  {
    name: 'deliveries replay',
    synopsis: 'ID | --all-failed',
    description: `Sends dead letters again (the user's newest state, same ordering rules). Needs REDIS_URL.
Prints {"replayed": [...]}.`,
    options: { 'all-failed': { type: 'boolean' } },
    positionals: 1,
    run: (input, ctx) => runDeliveriesCommand(ctx, 'replay', { allFailed: input.values['all-failed'] === true, id: input.positionals[0] }),
  },
];
