import type { DeliveryQueues, TargetHealth } from '@connect/shared';
import { defineCommand, targetNameOf, type CliContext, type Command } from './command.ts';

/** The domain code, loaded when a command runs (command.ts). */
const shared = () => import('@connect/shared');

/**
 * `targets list`, `targets pause NAME`, `targets resume NAME`: the health every
 * worker process shares, read and changed in Redis, the held states kept in
 * MongoDB too (docs/delivery.md). `list` prints `{"targets": [...]}`; pause and
 * resume print the target's row after the change.
 */
async function withTargets<T>(ctx: CliContext, run: (deps: { health: TargetHealth; queues: DeliveryQueues }) => Promise<T>): Promise<T> {
  const { collectionsOf, DeliveryQueues, HeldStates, TargetHealth } = await shared();
  const redis = await ctx.redis();
  const queues = new DeliveryQueues(redis, ctx.config.queuePrefix, ctx.config.downstreamTargets);
  try {
    return await run({ health: new TargetHealth(redis, ctx.config.queuePrefix, Date.now, new HeldStates(collectionsOf(ctx.models).targetStates)), queues });
  } finally {
    await queues.close();
  }
}

export const targetsCommands: Command[] = [
  defineCommand({
    name: 'targets list',
    needsRedis: true,
    synopsis: '',
    description: `Every configured downstream target with its shared health. Needs REDIS_URL.
Prints {"targets": [{"name", "state", "consecutive_failures", "failing_since", "last_success_at", "backlog"}]}.`,
    parse: () => undefined,
    run: (_args, ctx) => withTargets(ctx, async (deps) => ({ targets: await (await shared()).listTargets(deps) })),
  }),
  defineCommand({
    name: 'targets pause',
    needsRedis: true,
    synopsis: 'NAME',
    description: `An operator's hold: the target's deliveries wait (nothing is dropped) until resume.
Prints the target's row, plus "already_paused": true when it already was.`,
    positionals: 1,
    parse: targetNameOf,
    run: (name, ctx) => withTargets(ctx, async (deps) => (await shared()).pauseTarget(deps, name)),
  }),
  defineCommand({
    name: 'targets resume',
    needsRedis: true,
    synopsis: 'NAME',
    description: `Ends a pause, and also leaves failing or disabled: the held deliveries drain in order.
Prints the target's row.`,
    positionals: 1,
    parse: targetNameOf,
    run: (name, ctx) => withTargets(ctx, async (deps) => (await shared()).resumeTarget(deps, name)),
  }),
  defineCommand({
    name: 'targets forget',
    needsRedis: true,
    synopsis: 'NAME',
    description: `Deletes everything stored for a target taken out of DOWNSTREAM_TARGETS: its queue and
health in Redis, its delivery rows (pending ones too) with their attempts, its per-user sync
records, kept held state and resync cursors in MongoDB. Refused (conflict) while NAME is still
configured or a worker still serves it: remove it, restart the workers, then forget it.
Prints {"target", "jobs", "deliveries", "attempts", "sync_states"}; a second run prints zeros
(and says on stderr that nothing was stored under that name, as for a misspelt one).`,
    positionals: 1,
    parse: targetNameOf,
    run: async (name, ctx) => {
      const forgot = await (await shared()).forgetTarget({ models: ctx.models, redis: await ctx.redis(), queuePrefix: ctx.config.queuePrefix, configured: ctx.config.downstreamTargets.map((t) => t.name) }, name);
      if (forgot.jobs + forgot.deliveries + forgot.attempts + forgot.sync_states === 0) {
        process.stderr.write(`cli: no jobs, deliveries or sync records were stored for target ${name}: forgotten before, or never delivered to under this name (check the spelling)\n`);
      }
      return forgot;
    },
  }),
];
