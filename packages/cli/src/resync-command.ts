import { createRedis, DeliveryQueues, DeliveryStore, resyncTarget, ValidationError, type ResyncProgress } from '@connect/shared';
import { jobPolicy } from './delivery-job-policy.ts';
import type { CliContext } from './main.ts';

/** Non-terminal stderr gets one JSON line at most this often. */
const PROGRESS_EVERY_MS = 3000;

/**
 * `targets resync NAME [--org ID] [--force]`: enqueues what the target is
 * missing (see packages/shared/src/deliveries/resync-target.ts and docs/operations.md); the
 * worker delivers it. Progress goes to stderr, a bar on a terminal and a JSON
 * line every few seconds otherwise; stdout gets the one final document.
 * SIGINT stops after the batch in progress: the cursor is saved, the same
 * command continues, and this run's counts are printed with `"interrupted":
 * true` (exit 130).
 */
export async function runResyncCommand(
  ctx: CliContext,
  args: { target?: string; org?: string; force: boolean; batchSize?: string; maxWaiting?: string },
): Promise<unknown> {
  if (!args.target) throw new ValidationError([{ path: 'target', message: 'targets resync needs a target name' }]);
  const batchSize = count('batch-size', args.batchSize, 500);
  const maxOutstanding = count('max-waiting', args.maxWaiting, 2000);
  if (!ctx.config.redisUrl) throw new ValidationError([{ path: 'REDIS_URL', message: 'resync needs REDIS_URL' }]);
  const redis = createRedis(ctx.config.redisUrl, 'producer', { enableOfflineQueue: true });
  const queues = new DeliveryQueues(redis, ctx.config.queuePrefix, ctx.config.downstreamTargets, jobPolicy());
  const abort = new AbortController();
  const onSigint = () => {
    process.stderr.write('\ninterrupted: stopping after the batch in progress (run the same command again to continue)\n');
    abort.abort();
  };
  process.on('SIGINT', onSigint);
  const progress = progressWriter();
  try {
    const result = await resyncTarget(
      { store: new DeliveryStore(ctx.models), queues, targets: ctx.config.downstreamTargets },
      { target: args.target, organizationId: args.org, force: args.force, batchSize, maxOutstanding, signal: abort.signal, onProgress: progress },
    );
    const { interrupted, ...counts } = result;
    if (!interrupted) return counts;
    process.exitCode = 130;
    return { ...counts, interrupted: true };
  } finally {
    process.off('SIGINT', onSigint);
    await queues.close();
    redis.disconnect();
  }
}

/** `--batch-size` (users read per round trip) and `--max-waiting` (resync jobs allowed to wait at once: the pace). */
function count(name: string, raw: string | undefined, fallback: number): number {
  if (raw === undefined) return fallback;
  if (!/^\d+$/.test(raw) || Number(raw) < 1 || Number(raw) > 100_000) throw new ValidationError([{ path: name, message: `a whole number from 1 to 100000, got "${raw}"` }]);
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
      const ratio = p.total > 0 ? Math.min(1, scanned / p.total) : 1;
      const bar = '#'.repeat(Math.round(ratio * width)).padEnd(width, '.');
      out.write(`\r[${bar}] ${(ratio * 100).toFixed(0).padStart(3)}% ${scanned}/${p.total} users, ${p.enqueued} enqueued, ${p.skipped} skipped${p.done ? '\n' : ''}`);
      return;
    }
    const t = now();
    if (!p.done && t - lastLine < everyMs) return;
    lastLine = t;
    out.write(`${JSON.stringify({ progress: { target: p.target, scanned, total: p.total, enqueued: p.enqueued, skipped: p.skipped, done: p.done } })}\n`);
  };
}

