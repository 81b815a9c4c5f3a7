import { createDeliveriesQueue, listDeliveries, replayAllFailed, replayDelivery, ReplayError } from '@connect/worker';
import { createRedis, ValidationError, type DeliveryStatus } from '@connect/shared';
import type { CliContext } from './main.ts';

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
  if (!ctx.config.redisUrl) throw new ValidationError([{ path: 'REDIS_URL', message: 'replaying needs REDIS_URL' }]);
  const redis = createRedis(ctx.config.redisUrl, 'producer', { enableOfflineQueue: true });
  const deliveries = createDeliveriesQueue(redis, ctx.config.queuePrefix);
  try {
    const deps = { models: ctx.models, deliveries, targets: ctx.config.downstreamTargets };
    if (args.allFailed) return await replayAllFailed(deps);
    try {
      return { replayed: [await replayDelivery(deps, args.id!)] };
    } catch (err) {
      if (err instanceof ReplayError) throw new ValidationError([{ path: 'id', message: err.message }]);
      throw err;
    }
  } finally {
    await deliveries.close();
    redis.disconnect();
  }
}
