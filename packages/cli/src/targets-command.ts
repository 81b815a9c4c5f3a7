import { createRedis, DeliveryQueues, listTargets, pauseTarget, resumeTarget, TargetHealth, ValidationError } from '@connect/shared';
import type { CliContext } from './main.ts';

/**
 * `targets list`, `targets pause NAME`, `targets resume NAME`: the health every
 * worker process shares, read and changed in Redis (docs/delivery.md). `list`
 * prints `{"targets": [...]}`; pause and resume print the target's row after
 * the change.
 */
export async function runTargetsCommand(ctx: CliContext, verb: string | undefined, name: string | undefined): Promise<unknown> {
  if (!ctx.config.redisUrl) throw new ValidationError([{ path: 'REDIS_URL', message: 'targets commands need REDIS_URL' }]);
  if ((verb === 'pause' || verb === 'resume') && !name) throw new ValidationError([{ path: 'name', message: `targets ${verb} needs a target name` }]);
  const redis = createRedis(ctx.config.redisUrl, 'producer', { enableOfflineQueue: true });
  const queues = new DeliveryQueues(redis, ctx.config.queuePrefix, ctx.config.downstreamTargets);
  const deps = { health: new TargetHealth(redis, ctx.config.queuePrefix), queues };
  try {
    if (verb === 'list') return { targets: await listTargets(deps) };
    if (verb === 'pause') return await pauseTarget(deps, name!);
    return await resumeTarget(deps, name!);
  } finally {
    await queues.close();
    redis.disconnect();
  }
}
