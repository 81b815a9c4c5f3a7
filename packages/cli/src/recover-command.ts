import { createRedis, DeliveryQueues, DeliveryStore, recoverDeliveries, ValidationError } from '@connect/shared';
import { jobPolicy } from './delivery-job-policy.ts';
import type { CliContext } from './main.ts';

/** An ISO 8601 instant with a date and a time (a zone, or UTC when none is given). */
function instant(name: string, value: string | undefined): Date | undefined {
  if (value === undefined) return undefined;
  const ms = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}/.test(value) ? Date.parse(value) : Number.NaN;
  if (Number.isNaN(ms)) throw new ValidationError([{ path: name, message: `an ISO 8601 date and time, e.g. 2026-03-01T09:00:00Z, got "${value}"` }]);
  return new Date(ms);
}

/**
 * `deliveries recover --target NAME --since ISO [--until ISO]` → `{"recovered": N}`:
 * puts back every dead letter of the target dead-lettered in the window (see
 * packages/shared/src/deliveries/recover-deliveries.ts and docs/operations.md).
 */
export async function runRecoverCommand(ctx: CliContext, args: { target?: string; since?: string; until?: string }): Promise<unknown> {
  if (!args.target) throw new ValidationError([{ path: 'target', message: '--target is required' }]);
  if (!args.since) throw new ValidationError([{ path: 'since', message: '--since is required' }]);
  const since = instant('since', args.since)!;
  const until = instant('until', args.until);
  if (until && until <= since) throw new ValidationError([{ path: 'until', message: '--until must be after --since' }]);
  if (!ctx.config.redisUrl) throw new ValidationError([{ path: 'REDIS_URL', message: 'recovering needs REDIS_URL' }]);
  const redis = createRedis(ctx.config.redisUrl, 'producer', { enableOfflineQueue: true });
  const queues = new DeliveryQueues(redis, ctx.config.queuePrefix, ctx.config.downstreamTargets, jobPolicy());
  try {
    return await recoverDeliveries({ store: new DeliveryStore(ctx.models), queues, targets: ctx.config.downstreamTargets }, { target: args.target, since, until });
  } finally {
    await queues.close();
    redis.disconnect();
  }
}

