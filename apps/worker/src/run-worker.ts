import { checkRedisDatabase, createLogger, endLogs, loadConfig, loadOrExit, onTerminationSignals, runShutdown, startupStep, stopOnLostRedisDatabase } from '@connect/shared';
import { workerShutdownSteps } from './shutdown.ts';
import { serveDeliveryMetrics } from './delivery-metrics.ts';
import { serveWorkerHealth } from './health-server.ts';
import { startWorker, type RunningWorker } from './start-worker.ts';
import { targetsLeftOut } from './targets-left-out.ts';
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
// From here on a stop signal is handled: during start-up it exits 0 before any job is taken.
const signals = onTerminationSignals(log);
log.info('worker starting');
for (const name of REMOVED_WORKER_VARIABLES) {
  if (process.env[name]) log.warn({ variable: name }, `${name} is no longer read: WORKER_RETRY_SCHEDULE sets the retries (docs/delivery.md)`);
}
await startupStep(log, 'checking the Redis database', { redis: 'REDIS_URL' }, () => checkRedisDatabase(config.redisUrl));
const deps = await startupStep(log, 'connecting to the datastores', { mongo: 'MONGO_URL' }, () => createWorkerDeps(config, log, options));
// Every connection reconnects to the same server after it restarts: watching one of them is enough.
stopOnLostRedisDatabase(log, deps.producerRedis, config.redisUrl);
// No target set while MongoDB shows this deployment delivers to some: refuse, as for a bad variable.
const leftOut = await startupStep(log, 'reading which targets this deployment delivers to', { mongo: 'MONGO_URL' }, () =>
  targetsLeftOut(deps.models, process.env, config.downstreamTargets.length),
);
if (leftOut) {
  log.error({ variable: 'DOWNSTREAM_TARGETS' }, 'DOWNSTREAM_TARGETS is not set, but targets were delivered to: not starting');
  await endLogs(log);
  process.stderr.write(`configuration error: DOWNSTREAM_TARGETS: ${leftOut}\n`);
  process.exit(1);
}
// Ports first: a port that cannot be bound stops the worker before it takes any job.
if (options.metricsPort) {
  const port = options.metricsPort;
  await startupStep(log, `listening on port ${port} for /metrics`, { port: 'WORKER_METRICS_PORT' }, () => serveDeliveryMetrics(deps.metrics, port));
  log.info({ port }, 'worker metrics at GET /metrics');
}
let running: RunningWorker | undefined;
if (healthPort) {
  const queueWorkers = () => (running ? [running.fanOut, ...running.deliveries.values()] : []);
  await startupStep(log, `listening on port ${healthPort} for /healthz`, { port: 'WORKER_HEALTH_PORT' }, () =>
    serveWorkerHealth({ mongo: deps.mongo, redis: deps.producerRedis, queueWorkers, log, watch: () => running?.datastores }, healthPort),
  );
  log.info({ port: healthPort }, 'worker health at GET /healthz');
}
// A signal during start-up is exiting already (onTerminationSignals): take no job.
if (!signals.stopping) {
  const worker = startWorker(deps);
  running = worker;
  signals.setShutdown(async () => {
    const steps = workerShutdownSteps(worker, deps);
    // Deliveries still running when the grace period ends are left to BullMQ, which gives them
    // to another worker once their lock lapses: the bound the operator chose, not a failure.
    const { failed } = await runShutdown(steps, log, options.shutdownGraceMs);
    return failed.length === 0;
  });
  log.info('worker ready');
}
