import type { Logger } from 'pino';
import type { OutboxRelay } from '@connect/shared';
import { startPeriodic } from './periodic.ts';

export interface OutboxSweep {
  /** Resolves once the pass in progress, if any, has finished. */
  stop(): Promise<void>;
}

/**
 * Runs the relay's sweep every `intervalMs`, so an event whose publish failed
 * (API crashed after its write, Redis down) reaches the queue once Redis answers.
 * A pass whose cursor passed everything it read, with settled slots still after
 * it, means there is a backlog (after a long outage): the next pass runs at once
 * instead of waiting a whole interval. A pass the cursor could not carry to the
 * end (slots younger than the safety lag, a publish that failed) waits for the
 * interval: running again at once would read the same users again, in a loop,
 * as long as writes keep coming. Passes never overlap.
 *
 * The first pass first gives a slot to users that have none (OutboxRelay.backfillSlots:
 * written by an earlier version, or by an API of that version during a rolling upgrade),
 * so the sweep sees them; again every `backfillEveryMs` (an hour) for as long as the last
 * run found some. Once one finds none, it stops: on FerretDB each run reads the whole
 * users collection (47-51 s at 200,000 users, measured), on MongoDB it is an index lookup.
 */
export function startOutboxSweep(relay: OutboxRelay, log: Logger, intervalMs: number, batchSize: number, backfillEveryMs = 3_600_000): OutboxSweep {
  let nextBackfill = 0;

  const backfill = async () => {
    if (Date.now() < nextBackfill) return;
    try {
      const r = await relay.backfillSlots(batchSize);
      nextBackfill = r.backfilled > 0 ? Date.now() + backfillEveryMs : Infinity;
      if (r.backfilled > 0) log.info(r, 'outbox sweep gave a slot to users written without one (an earlier version); unpublished ones go out now');
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'outbox slot backfill failed; the next pass retries');
    }
  };

  const pass = async (): Promise<boolean> => {
    await backfill();
    try {
      const r = await relay.sweep(batchSize);
      if (r.published > 0) log.info({ published: r.published, scanned: r.scanned }, 'outbox sweep published events');
      return !r.failed && r.more;
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'outbox sweep failed; next pass retries');
      return false;
    }
  };

  const loop = startPeriodic(pass, (more) => (more ? 0 : intervalMs), 0);
  return { stop: () => loop.stop() };
}
