import { createServer, type Server } from 'node:http';
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface DeliveryMetrics {
  registry: Registry;
  /** Attempts by target and outcome: delivered, retry, failed (dead letter), superseded. */
  deliveries: Counter<'target' | 'outcome'>;
  /** From the event's occurred_at to the target's 2xx, by target and event type. */
  latency: Histogram<'target' | 'type'>;
}

export function createDeliveryMetrics(): DeliveryMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'connect_worker_' });
  return {
    registry,
    deliveries: new Counter({
      name: 'connect_deliveries_total',
      help: 'Delivery attempts by target and outcome (delivered, retry, failed = dead letter, superseded)',
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
  await new Promise<void>((resolve) => server.listen(port, host, resolve));
  return server;
}
