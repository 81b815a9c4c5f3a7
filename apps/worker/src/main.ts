import { createLogger, loadConfig, loadOrExit, onTerminationSignals, runShutdownSequence } from '@connect/shared';
import { workerShutdownSteps } from './shutdown.ts';
import { serveDeliveryMetrics } from './delivery-metrics.ts';
import { serveWorkerHealth } from './health-server.ts';
import { startWorker } from './start-worker.ts';
import { createWorkerDeps } from './worker-deps.ts';
import { REMOVED_WORKER_VARIABLES, workerOptionsFromEnv } from './worker-options.ts';

// The shared schema and the worker's own (WORKER_*, TARGET_*, DELIVERY_RETENTION_DAYS,
// WORKER_HEALTH_PORT) both run before anything is used: every bad variable is reported in one go.
const [config, options] = loadOrExit(
  () => loadConfig(process.env),
  () => workerOptionsFromEnv(process.env),
);
const { healthPort } = options;
const log = createLogger(config.logLevel, 'worker');
for (const name of REMOVED_WORKER_VARIABLES) {
  if (process.env[name]) log.warn({ variable: name }, `${name} is no longer read: WORKER_RETRY_SCHEDULE sets the retries (docs/delivery.md)`);
}
const deps = await createWorkerDeps(config, log, options);
const worker = startWorker(deps);
if (options.metricsPort) {
  await serveDeliveryMetrics(deps.metrics, options.metricsPort);
  log.info({ port: options.metricsPort }, 'worker metrics at GET /metrics');
}
if (healthPort) {
  await serveWorkerHealth({ mongo: deps.mongo, redis: deps.producerRedis }, healthPort);
  log.info({ port: healthPort }, 'worker health at GET /healthz');
}
onTerminationSignals(log, async () => {
  const steps = workerShutdownSteps(worker, deps);
  const done = await runShutdownSequence(steps, log, options.shutdownGraceMs);
  return done.length === steps.length;
});
log.info('worker ready');
