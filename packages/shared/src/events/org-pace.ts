import { LRUCache } from 'lru-cache';

/**
 * One organization's bulk work must not hold up the others' changes (docs/delivery.md, One
 * organization's burst). Queues are first come, first served: a 10,000-row import put 4,000
 * events in the shared events queue and as many deliveries in each target's queue, and another
 * organization's change waited behind all of them, 90 s at the median on the fastest target (a
 * fairness audit). So an organization publishing faster than BULK_AFTER events per
 * WINDOW_MS, in this process, has its events published at BULK_PRIORITY: BullMQ hands out jobs
 * without a priority first, so every other organization's changes go before its backlog, and its
 * own, in order, as fast as the worker goes. The fan-out gives the deliveries the event's priority.
 * Only while another organization has published within WINDOW_MS too: alone, an organization has
 * no one to be fair to, and prioritized jobs cost (the benchmark's delivery throughput halved).
 * A resync's jobs (RESYNC_PRIORITY, higher) still go after a bulk organization's.
 *
 * The pace is a sliding window: the previous window's count, weighted by how much of it is
 * still within WINDOW_MS, plus the current one's. Kept per process: with N API processes behind a
 * balancer an organization is bulk past about N × BULK_AFTER events per window.
 */
export const BULK_PRIORITY = 10;
export const BULK_AFTER = 50;
const WINDOW_MS = 10_000;

interface Pace {
  window: number;
  current: number;
  previous: number;
}

export class OrgPace {
  private readonly paces = new LRUCache<string, Pace>({ max: 10_000 });
  /** The two organizations that published last, the latest first: is anyone else publishing? */
  private latest: { org: string; at: number }[] = [];

  constructor(
    private readonly now: () => number = Date.now,
    private readonly bulkAfter = BULK_AFTER,
  ) {}

  /** Counts one event of the organization; answers the priority to publish it at (0: none, a live change). */
  note(organizationId: string): number {
    const t = this.now();
    const window = Math.floor(t / WINDOW_MS);
    let pace = this.paces.get(organizationId);
    if (!pace) {
      pace = { window, current: 0, previous: 0 };
      this.paces.set(organizationId, pace);
    } else if (pace.window !== window) {
      pace.previous = pace.window === window - 1 ? pace.current : 0;
      pace.current = 0;
      pace.window = window;
    }
    pace.current++;
    const other = this.latest.find((l) => l.org !== organizationId);
    this.latest = [{ org: organizationId, at: t }, ...(other ? [other] : [])];
    // Alone, an organization has no one to be fair to, and the prioritized path costs: about half
    // the delivery throughput of plain jobs in the benchmark.
    if (!other || t - other.at > WINDOW_MS) return 0;
    const rate = pace.previous * (1 - (t % WINDOW_MS) / WINDOW_MS) + pace.current;
    return rate > this.bulkAfter ? BULK_PRIORITY : 0;
  }
}
