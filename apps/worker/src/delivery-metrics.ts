import { createServer, type Server } from 'node:http';
import type { Queue } from 'bullmq';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { boundedRead, clockOffsetGaugeOptions, listenOn, queueJobsGaugeOptions, SCRAPE_WAIT_MS, TARGET_STATES, type DeliveryQueues, type ReferenceClock, type TargetHealth } from '@connect/shared';

export interface DeliveryMetrics {
  registry: Registry;
  /** Attempts by target and outcome: delivered, retry, held, failed (dead letter), superseded, internal (our own failure). */
  deliveries: Counter<'target' | 'outcome'>;
  /** From the event's occurred_at to the target's 2xx, by target and event type. */
  latency: Histogram<'target' | 'type'>;
}

/** The outcomes `connect_deliveries_total` counts. */
export const DELIVERY_OUTCOMES = ['delivered', 'retry', 'held', 'failed', 'superseded', 'internal'] as const;

export function createDeliveryMetrics(clock?: Pick<ReferenceClock, 'offsetMs'>): DeliveryMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'connect_worker_' });
  if (clock) new Gauge({ ...clockOffsetGaugeOptions(() => clock.offsetMs()), registers: [registry] });
  return {
    registry,
    deliveries: new Counter({
      name: 'connect_deliveries_total',
      help: 'Delivery attempts by target and outcome (delivered, retry, held, failed = dead letter, superseded, internal = our own failure, such as MongoDB down: retried, never a dead letter)',
      labelNames: ['target', 'outcome'] as const,
      registers: [registry],
    }),
    latency: new Histogram({
      name: 'connect_delivery_latency_seconds',
      help: 'Time from the change (event occurred_at) to the target answering 2xx',
      labelNames: ['target', 'type'] as const,
      buckets: [0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900],
      registers: [registry],
    }),
  };
}

/**
 * `connect_target_state{target,state}` (1 for the current state, 0 for the
 * others), `connect_target_backlog{target}` and `connect_queue_jobs{queue,state}`, read from Redis when scraped:
 * the state is shared by every worker process, so each one reports the same.
 * The cost is one hash read and one count per target per scrape, whatever the
 * number of deliveries stored.
 */
export function watchTargets(metrics: DeliveryMetrics, source: { health: TargetHealth; queues: DeliveryQueues; eventsQueue?: Queue }, waitMs = SCRAPE_WAIT_MS): void {
  const names = [...source.queues.byTarget.keys()];
  if (metrics.registry.getSingleMetric('connect_target_state')) return;
  // The queues' depths by state, as the API exports them: a worker scraped alone shows the events
  // waiting for fan-out too (the figure a worker autoscaler wants).
  new Gauge({ ...queueJobsGaugeOptions([...(source.eventsQueue ? [source.eventsQueue] : []), ...source.queues.all()], waitMs), registers: [metrics.registry] });
  // Every target's outcomes exist from the start at 0: an alert on increase(...{outcome="failed"}) sees
  // the first dead letter after a start, which a series born at 1 would not show as an increase.
  for (const target of names) for (const outcome of DELIVERY_OUTCOMES) metrics.deliveries.inc({ target, outcome }, 0);
  const readStates = boundedRead(() => Promise.all(names.map((n) => source.health.get(n))), waitMs);
  const readBacklogs = boundedRead(() => Promise.all(names.map((n) => source.queues.backlog(n))), waitMs);
  new Gauge({
    name: 'connect_target_state',
    help: 'Health of each target: 1 for its current state (healthy, failing, paused, disabled), 0 for the others',
    labelNames: ['target', 'state'] as const,
    registers: [metrics.registry],
    async collect() {
      for (const row of (await readStates()) ?? []) for (const state of TARGET_STATES) this.set({ target: row.name, state }, row.state === state ? 1 : 0);
    },
  });
  new Gauge({
    name: 'connect_target_backlog',
    help: 'Deliveries of each target not finished yet (waiting, held, delayed for a retry, or running)',
    labelNames: ['target'] as const,
    registers: [metrics.registry],
    async collect() {
      const counts = await readBacklogs();
      if (counts) names.forEach((n, i) => this.set({ target: n }, counts[i]!));
    },
  });
}

/**
 * The worker has no HTTP API, so its metrics get a listener of their own
 * (WORKER_METRICS_PORT; 0 or unset: none). GET /metrics only.
 */
export async function serveDeliveryMetrics(metrics: DeliveryMetrics, port: number, host = '0.0.0.0'): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.method !== 'GET' || req.url?.split('?')[0] !== '/metrics') {
      res.writeHead(404).end();
      return;
    }
    metrics.registry.metrics().then(
      (text) => {
        res.writeHead(200, { 'content-type': metrics.registry.contentType });
        res.end(text);
      },
      () => res.writeHead(500).end(),
    );
  });
  await listenOn(server, port, host);
  return server;
}
