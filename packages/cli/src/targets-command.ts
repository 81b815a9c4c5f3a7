import { collectionsOf, DeliveryQueues, HeldStates, listTargets, pauseTarget, resumeTarget, TargetHealth } from '@connect/shared';
import { defineCommand, positional, type CliContext, type Command } from './command.ts';

/**
 * `targets list`, `targets pause NAME`, `targets resume NAME`: the health every
 * worker process shares, read and changed in Redis, the held states kept in
 * MongoDB too (docs/delivery.md). `list` prints `{"targets": [...]}`; pause and
 * resume print the target's row after the change.
 */
async function withTargets<T>(ctx: CliContext, run: (deps: { health: TargetHealth; queues: DeliveryQueues }) => Promise<T>): Promise<T> {
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
    synopsis: '',
    description: `Every configured downstream target with its shared health. Needs REDIS_URL.
Prints {"targets": [{"name", "state", "consecutive_failures", "failing_since", "last_success_at", "backlog"}]}.`,
    parse: () => undefined,
    run: (_args, ctx) => withTargets(ctx, async (deps) => ({ targets: await listTargets(deps) })),
  }),
  defineCommand({
    name: 'targets pause',
    synopsis: 'NAME',
    description: `An operator's hold: the target's deliveries wait (nothing is dropped) until resume.
Prints the target's row.`,
    positionals: 1,
    parse: (input) => positional(input, 'a target name'),
    run: (name, ctx) => withTargets(ctx, (deps) => pauseTarget(deps, name)),
  }),
  defineCommand({
    name: 'targets resume',
    synopsis: 'NAME',
    description: `Ends a pause, and also leaves failing or disabled: the held deliveries drain in order.
Prints the target's row.`,
    positionals: 1,
    parse: (input) => positional(input, 'a target name'),
    run: (name, ctx) => withTargets(ctx, (deps) => resumeTarget(deps, name)),
  }),
];
