import { CliError, defineCommand, optional, required, type Command } from './command.ts';

/**
 * ISO 8601 / RFC 3339: a date, extended (2026-03-01) or basic (20260301), then optionally a time
 * after `T`, `t` or a space (RFC 3339 allows the last two), with or without seconds and fractions,
 * and a zone (`Z`, `z`, or an offset of hours and optional minutes).
 */
const ISO_INSTANT = /^(\d{4})-?(\d{2})-?(\d{2})(?:[Tt ](\d{2}):?(\d{2})(?::?(\d{2})(?:[.,](\d{1,9}))?)?([Zz]|([+-])(\d{2})(?::?(\d{2}))?)?)?$/;

/**
 * An ISO 8601 instant: a date and a time, and a zone (`Z` or an offset; UTC when none is given),
 * or a date alone, meaning its midnight UTC. A date or time that does not exist (30 February,
 * 24:00, minute 60) is refused, not rolled over into the next month or day.
 */
export function parseInstant(name: string, value: string): Date {
  const bad = (why: string) => new CliError('usage', `--${name}: ${why}, e.g. 2026-03-01T09:00:00Z or 2026-03-01, got "${value}"`);
  const m = ISO_INSTANT.exec(value);
  if (!m) throw bad('an ISO 8601 date, or date and time');
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map((v) => Number(v ?? 0)) as [number, number, number, number, number, number];
  if (month < 1 || month > 12) throw bad(`there is no month ${m[2]}`);
  const date = new Date(0);
  date.setUTCFullYear(year, month, 0); // the last day of the month
  if (day < 1 || day > date.getUTCDate()) throw bad(`there is no such date (${m[1]}-${m[2]} has ${date.getUTCDate()} days)`);
  if (hour > 23 || minute > 59 || second > 59) throw bad('there is no such time of day (hours 00-23, minutes and seconds 00-59)');
  const offsetHours = Number(m[10] ?? 0);
  const offsetMinutes = Number(m[11] ?? 0);
  if (offsetHours > 23 || offsetMinutes > 59) throw bad('there is no such UTC offset');
  date.setUTCFullYear(year, month - 1, day);
  date.setUTCHours(hour, minute, second, Number((m[7] ?? '').padEnd(3, '0').slice(0, 3)));
  return new Date(date.getTime() - (m[9] === '-' ? -1 : 1) * (offsetHours * 60 + offsetMinutes) * 60_000);
}

/**
 * `deliveries recover --target NAME --since ISO [--until ISO]` → `{"recovered": N}`:
 * puts back every dead letter of the target dead-lettered in the window (see
 * packages/shared/src/deliveries/recover-deliveries.ts and docs/operations.md).
 */
export const recoverCommand: Command = defineCommand({
  name: 'deliveries recover',
  needsRedis: true,
  synopsis: '--target NAME --since ISO [--until ISO]',
  description: `Re-sends every delivery of the target that was dead-lettered in [since, until) (until: now),
as the newest state of each user, with the usual ordering rules. Times are ISO 8601, e.g.
2026-03-01T09:00:00Z; Z or an offset (+01:00) names the zone, and a time without one is UTC;
a date alone (2026-03-01) is its midnight UTC.
Needs REDIS_URL. Ctrl-C (or SIGTERM) stops after the user in progress: this run's count is printed
with "interrupted": true (exit 130), and the same command recovers the rest.
Prints {"recovered": N}, N being the dead letters put back.`,
  stopNotice: 'interrupted: stopping after the user in progress (run the same command again to recover the rest)',
  options: { target: { type: 'string' }, since: { type: 'string' }, until: { type: 'string' } },
  parse(input) {
    const target = required(input, 'target');
    const since = parseInstant('since', required(input, 'since'));
    const rawUntil = optional(input, 'until');
    const until = rawUntil === undefined ? undefined : parseInstant('until', rawUntil);
    if (until && until <= since) throw new CliError('usage', '--until must be after --since');
    // Without --until the window ends now: a --since in the future is an empty window, said plainly rather than {"recovered": 0}.
    if (!until && since > new Date()) throw new CliError('usage', '--since is in the future; the window [since, until) ends now unless --until is given');
    return { target, since, until };
  },
  async run(window, ctx) {
    const [{ DeliveryQueues, DeliveryStore, recoverDeliveries }, { jobPolicy }] = await Promise.all([import('@connect/shared'), import('./delivery-job-policy.ts')]);
    const redis = await ctx.redis();
    const queues = new DeliveryQueues(redis, ctx.config.queuePrefix, ctx.config.downstreamTargets, jobPolicy());
    try {
      const result = await recoverDeliveries({ store: new DeliveryStore(ctx.models), queues, targets: ctx.config.downstreamTargets }, { ...window, signal: ctx.stop });
      if (result.interrupted) process.exitCode = 130;
      return result;
    } finally {
      await queues.close();
    }
  },
});
