import { DeliveryQueues, DeliveryStore, recoverDeliveries } from '@connect/shared';
import { CliError, optional, required, type Command } from './command.ts';
import { jobPolicy } from './delivery-job-policy.ts';

/** An ISO 8601 instant with a date and a time (a zone, or UTC when none is given). */
function instant(name: string, value: string | undefined): Date | undefined {
  if (value === undefined) return undefined;
  const ms = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}/.test(value) ? Date.parse(value) : Number.NaN;
  if (Number.isNaN(ms)) throw new CliError('usage', `--${name}: an ISO 8601 date and time, e.g. 2026-03-01T09:00:00Z, got "${value}"`);
  return new Date(ms);
}

/**
 * `deliveries recover --target NAME --since ISO [--until ISO]` → `{"recovered": N}`:
 * puts back every dead letter of the target dead-lettered in the window (see
 * packages/shared/src/deliveries/recover-deliveries.ts and docs/operations.md).
 */
export const recoverCommand: Command = {
  name: 'deliveries recover',
  synopsis: '--target NAME --since ISO [--until ISO]',
  description: `Re-sends every delivery of the target that was dead-lettered in [since, until) (until: now),
as the newest state of each user, with the usual ordering rules. Needs REDIS_URL.
Prints {"recovered": N}, N being the dead letters put back.`,
  options: { target: { type: 'string' }, since: { type: 'string' }, until: { type: 'string' } },
  async run(input, ctx) {
    const target = required(input, 'target');
    const since = instant('since', required(input, 'since'))!;
    const until = instant('until', optional(input, 'until'));
    if (until && until <= since) throw new CliError('usage', '--until must be after --since');
    const redis = await ctx.redis();
    const queues = new DeliveryQueues(redis, ctx.config.queuePrefix, ctx.config.downstreamTargets, jobPolicy());
    try {
      return await recoverDeliveries({ store: new DeliveryStore(ctx.models), queues, targets: ctx.config.downstreamTargets }, { target, since, until });
    } finally {
      await queues.close();
    }
  },
};
