import { ConfigError, createLogger, loadConfigOrExit, onTerminationSignals, runShutdownSequence } from '@connect/shared';
import { workerShutdownSteps } from './shutdown.ts';
import { serveDeliveryMetrics } from './delivery-metrics.ts';
import { serveWorkerHealth, workerHealthPort } from './health-server.ts';
import { startWorker } from './start-worker.ts';
import { createWorkerDeps } from './worker-deps.ts';
import { workerOptionsFromEnv, type WorkerOptions } from './worker-options.ts';

const config = loadConfigOrExit({});
let options: WorkerOptions;
let healthPort: number | undefined;
try {
  options = workerOptionsFromEnv(process.env);
  healthPort = workerHealthPort(process.env);
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  process.stderr.write(`configuration error: ${err.message}\n`);
  process.exit(1);
}
const log = createLogger(config.logLevel, 'worker');
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
