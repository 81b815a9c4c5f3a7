import type { ResyncProgress } from '@connect/shared';
import { CliError, defineCommand, optional, targetNameOf, type Command } from './command.ts';

/** Non-terminal stderr gets one JSON line at most this often. */
const PROGRESS_EVERY_MS = 3000;

/**
 * `targets resync NAME [--org ID] [--force]`: enqueues what the target is
 * missing (see packages/shared/src/deliveries/resync-target.ts and
 * docs/operations.md); the worker delivers it. Progress goes to stderr, a bar
 * on a terminal and a JSON line every few seconds otherwise; stdout gets the
 * one final document. SIGINT or SIGTERM (ctx.stop, main.ts) stops after the batch
 * in progress: the cursor is saved, the same command continues, and this run's
 * counts are printed with `"interrupted": true` (exit 130).
 *
 * A signal during start-up (settings, drivers, datastores still loading) gives the
 * same document with zero counts: the walk sees the stop before its first batch,
 * nothing is enqueued and no position stored. Chosen over an `{"error"}` document:
 * a script already handles exit 130 with the counts ("interrupted, run it again"),
 * and that is exactly what happened; an error kind would say something failed.
 */
export const resyncCommand: Command = defineCommand({
  name: 'targets resync',
  needsRedis: true,
  // A batch is a sorted read from where the last one ended: on FerretDB (no sort pushed down) it
  // reads and sorts the collection, 20 to 40 s at 9,000 users on a loaded machine (an audit), past
  // the 10 s every other command's operations get.
  operationTimeoutMs: 180_000,
  synopsis: 'NAME [--org ID] [--force] [--batch-size N] [--max-waiting N]',
  description: `Brings one target up to date with every user (of one organization with --org): user.created
(the original event) for users it never received, then the newest event; users it has at an
older version get the newest; users it has at the current version are skipped unless --force.
Live deliveries go first; at most --max-waiting (2000) resync jobs wait at once. Ctrl-C stops after
the batch in progress (so does SIGTERM); the same command continues, and this run's counts are
printed with "interrupted": true (exit 130). Needs REDIS_URL; the worker delivers.
Progress on stderr. Prints {"target", "users_scanned", "enqueued", "skipped"}.`,
  options: { org: { type: 'string' }, force: { type: 'boolean' }, 'batch-size': { type: 'string' }, 'max-waiting': { type: 'string' } },
  positionals: 1,
  stopNotice: 'interrupted: stopping after the batch in progress (run the same command again to continue)',
  parse(input) {
    return {
      target: targetNameOf(input),
      organizationId: optional(input, 'org'),
      force: input.values.force === true,
      batchSize: count('batch-size', optional(input, 'batch-size'), 500),
      maxOutstanding: count('max-waiting', optional(input, 'max-waiting'), 2000),
    };
  },
  async run(args, ctx) {
    const [{ DeliveryQueues, DeliveryStore, requireOrganization, resyncTarget }, { jobPolicy }] = await Promise.all([import('@connect/shared'), import('./delivery-job-policy.ts')]);
    // An unknown organization has no users: say so rather than report a resync of nothing.
    if (args.organizationId) await requireOrganization(ctx.models, args.organizationId);
    const redis = await ctx.redis();
    const queues = new DeliveryQueues(redis, ctx.config.queuePrefix, ctx.config.downstreamTargets, jobPolicy());
    try {
      const result = await resyncTarget(
        { store: new DeliveryStore(ctx.models), queues, targets: ctx.config.downstreamTargets },
        { ...args, signal: ctx.stop, onProgress: progressWriter() },
      );
      const { interrupted, ...counts } = result;
      if (!interrupted) return counts;
      process.exitCode = 130;
      return { ...counts, interrupted: true };
    } finally {
      await queues.close();
    }
  },
});

/** `--batch-size` (users read per round trip) and `--max-waiting` (resync jobs allowed to wait at once: the pace). */
function count(name: string, raw: string | undefined, fallback: number): number {
  if (raw === undefined) return fallback;
  if (!/^\d+$/.test(raw) || Number(raw) < 1 || Number(raw) > 100_000) throw new CliError('usage', `--${name}: a whole number from 1 to 100000, got "${raw}"`);
  return Number(raw);
}

/** Where progress goes: stderr, a terminal or not. */
export interface ProgressOut {
  isTTY?: boolean;
  write(text: string): unknown;
}

/** A bar redrawn in place on a terminal; otherwise one JSON line at most every `everyMs`, and the last one always. */
export function progressWriter(out: ProgressOut = process.stderr, everyMs = PROGRESS_EVERY_MS, now: () => number = Date.now): (p: ResyncProgress) => void {
  const tty = out.isTTY === true;
  let lastLine = Number.NEGATIVE_INFINITY;
  return (p) => {
    const scanned = p.resumed_after + p.users_scanned;
    if (tty) {
      const width = 30;
      const counts = `${p.enqueued} enqueued, ${p.skipped} skipped${p.done ? '\n' : ''}`;
      if (p.total === null) {
        out.write(`\r${scanned} users scanned, ${counts}`);
        return;
      }
      const ratio = p.total > 0 ? Math.min(1, scanned / p.total) : 1;
      const bar = '#'.repeat(Math.round(ratio * width)).padEnd(width, '.');
      out.write(`\r[${bar}] ${(ratio * 100).toFixed(0).padStart(3)}% ${scanned}/${p.total} users, ${counts}`);
      return;
    }
    const t = now();
    if (!p.done && t - lastLine < everyMs) return;
    lastLine = t;
    out.write(`${JSON.stringify({ progress: { target: p.target, scanned, total: p.total, enqueued: p.enqueued, skipped: p.skipped, done: p.done } })}\n`);
  };
}

