import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Queue } from 'bullmq';
import { boundedRead, clockOffsetGaugeOptions, queueJobsGaugeOptions, SCRAPE_WAIT_MS, type ProviderUserMetrics } from '@connect/shared';

export interface ApiMetrics {
  registry: Registry;
  httpDuration: Histogram<'method' | 'route' | 'status_code'>;
  upserts: Counter<'outcome'>;
  deactivations: Counter<'outcome'>;
  publishFailures: Counter;
  /** The port the write use cases count their outcomes through. */
  writes: ProviderUserMetrics;
}

/**
 * A value refreshed in the background: a scrape reads the last one and, when
 * it is older than `everyMs`, starts one refresh (never two at once) for the
 * next scrape. So the database work behind a gauge happens at most once per
 * `everyMs` per instance however often Prometheus scrapes, and a scrape costs
 * the same on day 1 and day 300. A scrape with no value yet (the first, or
 * every earlier load failed) waits for one at most `firstWaitMs`, then answers
 * without the gauge: a slow query (on FerretDB it may scan a large collection)
 * must not hold the scrape past the API's request deadline and turn it into a 503.
 */
export class BackgroundValue<T> {
  private value: T | undefined;
  private at = 0;
  private inFlight: Promise<void> | undefined;

  constructor(
    private readonly load: () => Promise<T>,
    private readonly everyMs: number,
    private readonly firstWaitMs = 5_000,
  ) {}

  async get(): Promise<T | undefined> {
    if (Date.now() - this.at >= this.everyMs && !this.inFlight) {
      this.inFlight = this.load()
        .then((v) => {
          this.value = v;
        })
        .catch(() => undefined)
        .finally(() => {
          this.at = Date.now();
          this.inFlight = undefined;
        });
    }
    if (this.value === undefined && this.inFlight) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.inFlight, new Promise<void>((resolve) => (timer = setTimeout(resolve, this.firstWaitMs)))]);
      clearTimeout(timer);
    }
    return this.value;
  }
}

export interface ApiMetricsDeps {
  /** Every queue (events and one per target), for `connect_queue_jobs`. */
  queues: Queue[];
  /** The delivery queue of each target, for `connect_target_backlog`. */
  targetQueues: { target: string; queue: Queue }[];
  /** Events not yet published (see OutboxRelay.unpublishedCount). */
  unpublished: () => Promise<{ count: number; capped: boolean }>;
  /** The database's clock minus this machine's (reference-clock.ts). */
  clockOffsetMs?: () => number;
  /** How often the database-backed gauges are refreshed at most (default 15 s). */
  refreshMs?: number;
}

/**
 * The API's Prometheus metrics, in a registry of its own (tests build several
 * apps in one process). Nothing here grows with the data stored
 * (docs/operations.md):
 * - counters are counted as things happen, in this process;
 * - queue depths and each target's backlog are Redis counters read on scrape
 *   (a few O(1) commands per queue), the same whichever instance is scraped;
 * - unpublished events come from a bounded query (the outbox's backlog after
 *   the sweep cursor, at most 10,000 users), refreshed in the background at
 *   most every `refreshMs`, never on the scrape's path.
 * What used to be a per-scrape aggregation over every delivery row (counts by
 * status) is the worker's `connect_deliveries_total{target,outcome}` counter,
 * and `pnpm cli deliveries list` for the rows themselves.
 */
export function createApiMetrics(deps: ApiMetricsDeps): ApiMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'connect_api_' });
  const httpDuration = new Histogram({
    name: 'connect_http_request_duration_seconds',
    help: 'HTTP request latency by route and status',
    labelNames: ['method', 'route', 'status_code'] as const,
    // Up to the request deadline (10 s: a datastore that does not answer) and past it: with 2.5 s at
    // the top, a p99 read 2.5 s through a whole outage of 10-second answers.
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15],
    registers: [registry],
  });
  const upserts = new Counter({
    name: 'connect_provider_user_upserts_total',
    help: 'POST /users outcomes: created, updated, reactivated, unchanged, conflict',
    labelNames: ['outcome'] as const,
    registers: [registry],
  });
  const deactivations = new Counter({
    name: 'connect_provider_user_deactivations_total',
    help: 'DELETE /users/{id} outcomes: deactivated, unchanged (already deactivated), not_found',
    labelNames: ['outcome'] as const,
    registers: [registry],
  });
  // Every outcome exists from the start at 0, so increase() over an alert window sees the first one after a start.
  for (const outcome of ['created', 'updated', 'reactivated', 'unchanged', 'conflict']) upserts.inc({ outcome }, 0);
  for (const outcome of ['deactivated', 'unchanged', 'not_found']) deactivations.inc({ outcome }, 0);
  const publishFailures = new Counter({
    name: 'connect_outbox_publish_failures_total',
    help: 'Events the API could not hand to Redis right after the write (the sweep publishes them later)',
    registers: [registry],
  });
  // Read within SCRAPE_WAIT_MS: a Redis down since the API started queues the commands until it
  // connects, and an unbounded wait turned the whole scrape into a 503 at the request deadline.
  const readBacklogs = boundedRead(
    () => Promise.all(deps.targetQueues.map(({ queue }) => queue.getJobCounts('wait', 'paused', 'delayed', 'prioritized', 'active', 'waiting-children'))),
    SCRAPE_WAIT_MS,
  );
  new Gauge({ ...queueJobsGaugeOptions(deps.queues), registers: [registry] });
  new Gauge({
    name: 'connect_target_backlog',
    help: 'Deliveries of each target not finished yet (waiting, held, delayed for a retry, resync, or running)',
    labelNames: ['target'] as const,
    registers: [registry],
    async collect() {
      const all = await readBacklogs();
      deps.targetQueues.forEach(({ target }, i) => {
        const counts = all?.[i];
        if (counts) this.set({ target }, Object.values(counts).reduce((a, b) => a + b, 0));
      });
    },
  });
  if (deps.clockOffsetMs) new Gauge({ ...clockOffsetGaugeOptions(deps.clockOffsetMs), registers: [registry] });
  const unpublished = new BackgroundValue(deps.unpublished, deps.refreshMs ?? 15_000);
  new Gauge({
    name: 'connect_outbox_unpublished_events',
    help: 'Changes whose event is not in the queue yet (the outbox backlog; at most 10000 counted, see connect_outbox_unpublished_capped)',
    registers: [registry],
    async collect() {
      const v = await unpublished.get();
      if (v) this.set(v.count);
    },
  });
  new Gauge({
    name: 'connect_outbox_unpublished_capped',
    help: '1 when the outbox backlog was larger than what connect_outbox_unpublished_events counts',
    registers: [registry],
    async collect() {
      const v = await unpublished.get();
      if (v) this.set(v.capped ? 1 : 0);
    },
  });
  const writes: ProviderUserMetrics = {
    upsert: (outcome) => upserts.inc({ outcome }),
    deactivate: (outcome) => deactivations.inc({ outcome }),
  };
  return { registry, httpDuration, upserts, deactivations, publishFailures, writes };
}
