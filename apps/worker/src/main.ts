import { ConfigError, createLogger, loadConfigOrExit, onTerminationSignals, runShutdownSequence } from '@connect/shared';
import { workerShutdownSteps } from './shutdown.ts';
import { serveDeliveryMetrics } from './delivery-metrics.ts';
import { startWorker } from './start-worker.ts';
import { createWorkerDeps } from './worker-deps.ts';
import { REMOVED_WORKER_VARIABLES, workerOptionsFromEnv, type WorkerOptions } from './worker-options.ts';

const config = loadConfigOrExit({});
let options: WorkerOptions;
try {
  options = workerOptionsFromEnv(process.env);
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  process.stderr.write(`configuration error: ${err.message}\n`);
  process.exit(1);
}
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
onTerminationSignals(log, async () => {
  const steps = workerShutdownSteps(worker, deps);
  const done = await runShutdownSequence(steps, log, options.shutdownGraceMs);
  return done.length === steps.length;
});
log.info('worker ready');
