import type { Queue } from 'bullmq';

/**
 * `read` for a metrics scrape, waiting at most `waitMs`; after that the newest value any read
 * brought (one that finished after its own scrape gave up included), or undefined before the
 * first. So a Redis outage or a slow Redis never leaves a scrape, and the process figures in it,
 * without an answer. A Redis client queues commands while it (re)connects, so a read still in
 * flight is shared by the scrapes that follow instead of queueing one more per scrape.
 */
export function boundedRead<T>(read: () => Promise<T>, waitMs: number): () => Promise<T | undefined> {
  let inFlight: Promise<T | undefined> | undefined;
  let latest: T | undefined;
  return () => {
    inFlight ??= read()
      .then((value) => (latest = value))
      .catch(() => latest)
      .finally(() => (inFlight = undefined));
    let timer: NodeJS.Timeout | undefined;
    const gaveUp = new Promise<T | undefined>((resolve) => (timer = setTimeout(() => resolve(latest), waitMs)));
    return Promise.race([inFlight, gaveUp]).finally(() => clearTimeout(timer));
  };
}

/** How long a scrape waits for Redis before it answers with the values last read (API and worker alike). */
export const SCRAPE_WAIT_MS = 2000;

/** BullMQ states `connect_queue_jobs` reports ("completed" is history nobody owes anything for). */
const QUEUE_STATES = ['waiting', 'paused', 'active', 'delayed', 'failed', 'prioritized', 'waiting-children'] as const;

/**
 * The options of `connect_queue_jobs{queue,state}` (pass `registers`): each queue's job counts by
 * BullMQ state, read from Redis when scraped (a few O(1) commands per queue), the same whichever
 * process is scraped. The API and the worker both export it.
 */
export function queueJobsGaugeOptions(queues: readonly Queue[], waitMs = SCRAPE_WAIT_MS): {
  name: string;
  help: string;
  labelNames: readonly ['queue', 'state'];
  collect(this: { set(labels: { queue: string; state: string }, v: number): void }): Promise<void>;
} {
  const readCounts = boundedRead(() => Promise.all(queues.map((queue) => queue.getJobCounts(...QUEUE_STATES))), waitMs);
  return {
    name: 'connect_queue_jobs',
    help: 'Jobs per queue and BullMQ state. "failed" and "completed" are BullMQ\'s history, kept after a replay; dead letters owed are `pnpm cli deliveries list --status failed`',
    labelNames: ['queue', 'state'] as const,
    // No reset: a count Redis cannot give now keeps its last value (as the other gauges do), rather
    // than the series vanishing for the outage and an alert on it going quiet.
    async collect() {
      const all = await readCounts();
      queues.forEach((queue, i) => {
        for (const [state, n] of Object.entries(all?.[i] ?? {})) this.set({ queue: queue.name, state }, n);
      });
    },
  };
}
