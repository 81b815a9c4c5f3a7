import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Queue } from 'bullmq';
import type { Models } from '@connect/shared';

export interface ApiMetrics {
  registry: Registry;
  httpDuration: Histogram<'method' | 'route' | 'status_code'>;
  upserts: Counter<'outcome'>;
  publishFailures: Counter;
}

/**
 * The API's Prometheus metrics, in a registry of its own (tests build several
 * apps in one process). Queue depths and delivery states are read on scrape, from
 * Redis and MongoDB, so they are the same whichever instance is scraped.
 */
export function createApiMetrics(deps: { models: Models; queues: Queue[]; publishedAmong: (eventIds: string[]) => Promise<Set<string>> }): ApiMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'connect_api_' });
  const httpDuration = new Histogram({
    name: 'connect_http_request_duration_seconds',
    help: 'HTTP request latency by route and status',
    labelNames: ['method', 'route', 'status_code'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  });
  const upserts = new Counter({
    name: 'connect_provider_user_upserts_total',
    help: 'POST /users outcomes: created, updated, unchanged, conflict',
    labelNames: ['outcome'] as const,
    registers: [registry],
  });
  const publishFailures = new Counter({
    name: 'connect_outbox_publish_failures_total',
    help: 'Events the API could not hand to Redis right after the write (the sweep publishes them later)',
    registers: [registry],
  });
  new Gauge({
    name: 'connect_queue_jobs',
    help: 'Jobs per queue and state',
    labelNames: ['queue', 'state'] as const,
    registers: [registry],
    async collect() {
      this.reset();
      for (const queue of deps.queues) {
        const counts = await queue.getJobCounts('waiting', 'paused', 'active', 'delayed', 'failed', 'prioritized', 'waiting-children').catch(() => ({}));
        for (const [state, n] of Object.entries(counts)) this.set({ queue: queue.name, state }, n as number);
      }
    },
  });
  new Gauge({
    name: 'connect_deliveries',
    help: 'Deliveries recorded, by target and status (pending, delivered, failed = dead-lettered, superseded)',
    labelNames: ['target', 'status'] as const,
    registers: [registry],
    async collect() {
      this.reset();
      const rows = await deps.models.Delivery.aggregate<{ _id: { target: string; status: string }; n: number }>([
        { $group: { _id: { target: '$target', status: '$status' }, n: { $sum: 1 } } },
      ]).catch(() => []);
      for (const r of rows) this.set({ target: r._id.target, status: r._id.status }, r.n);
    },
  });
  new Gauge({
    name: 'connect_outbox_unpublished_events',
    help: 'Users whose newest event is not in the queue yet, among those changed in the last 10 minutes',
    registers: [registry],
    async collect() {
      // Within BullMQ's retention of completed jobs (the marker), at any sane rate.
      const since = new Date(Date.now() - 600_000);
      const recent = await deps.models.ProviderUser.find({ updated_at: { $gte: since } }).select({ 'last_event.id': 1 }).limit(10_000).lean().catch(() => []);
      if (recent.length === 0) return this.set(0);
      const ids = recent.map((u) => u.last_event.id);
      const published = await deps.publishedAmong(ids).catch(() => new Set(ids));
      this.set(ids.length - published.size);
    },
  });
  return { registry, httpDuration, upserts, publishFailures };
}
