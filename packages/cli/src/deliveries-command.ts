import {
  createRedis,
  DeliveryQueues,
  DeliveryStore,
  listDeliveries,
  replayAllFailed,
  replayDelivery,
  ReplayError,
  showDelivery,
  ValidationError,
  type DeliveryStatus,
} from '@connect/shared';
import type { CliContext } from './main.ts';

const STATUSES: DeliveryStatus[] = ['pending', 'delivered', 'failed', 'superseded'];

export interface DeliveriesArgs {
  status?: string;
  target?: string;
  allFailed: boolean;
  id?: string;
}

/**
 * `deliveries list [--target NAME] [--status S]` and `deliveries show ID` read
 * the execution log (and the attempt history); `deliveries replay ID |
 * --all-failed` puts dead letters back on their target's queue (needs REDIS_URL).
 */
export async function runDeliveriesCommand(ctx: CliContext, verb: string | undefined, args: DeliveriesArgs): Promise<unknown> {
  const store = new DeliveryStore(ctx.models);
  if (verb === 'list') {
    const status = (args.status ?? 'failed') as DeliveryStatus;
    if (!STATUSES.includes(status)) throw new ValidationError([{ path: 'status', message: `one of ${STATUSES.join(', ')}` }]);
    const deliveries = await listDeliveries(store, { status, target: args.target });
    return { status, ...(args.target ? { target: args.target } : {}), count: deliveries.length, deliveries };
  }
  if (verb === 'show') {
    if (!args.id) throw new ValidationError([{ path: 'id', message: 'give a delivery id' }]);
    return showDelivery(store, args.id);
  }
  if (!args.allFailed && !args.id) throw new ValidationError([{ path: 'id', message: 'give a delivery id or --all-failed' }]);
  if (!ctx.config.redisUrl) throw new ValidationError([{ path: 'REDIS_URL', message: 'replaying needs REDIS_URL' }]);
  const redis = createRedis(ctx.config.redisUrl, 'producer', { enableOfflineQueue: true });
  const queues = new DeliveryQueues(redis, ctx.config.queuePrefix, ctx.config.downstreamTargets);
  try {
    const deps = { store, queues, targets: ctx.config.downstreamTargets };
    if (args.allFailed) return await replayAllFailed(deps);
    try {
      return { replayed: [await replayDelivery(deps, args.id!)] };
    } catch (err) {
      if (err instanceof ReplayError) throw new ValidationError([{ path: 'id', message: err.message }]);
      throw err;
    }
  } finally {
    await queues.close();
    redis.disconnect();
  }
}
