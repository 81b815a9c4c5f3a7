import { checkRedisDatabase, createLogger, loadConfigOrExit, onTerminationSignals, runShutdown, startupStep, stopOnLostRedisDatabase } from '@connect/shared';
import { createApiDeps } from './api-deps.ts';
import { buildApp } from './build-app.ts';
import { apiShutdownSteps } from './shutdown.ts';

const config = loadConfigOrExit();
const log = createLogger(config.logLevel, 'api');
// From here on a stop signal is handled: during start-up it exits 0 before anything listens.
const signals = onTerminationSignals(log);
log.info('api starting');
// CONNECT_TEST_FAULT=crash-after-write: die between the write and the enqueue, for
// the test that shows the sweep still delivers the event. Off by default.
const crashAfterWrite = process.env.CONNECT_TEST_FAULT === 'crash-after-write';
if (crashAfterWrite) log.warn('test fault injection on: the process kills itself after its first write');
await startupStep(log, 'checking the Redis database', { redis: 'REDIS_URL' }, () => checkRedisDatabase(config.redisUrl));
const deps = await startupStep(log, 'connecting to the datastores', { mongo: 'MONGO_URL' }, () =>
  createApiDeps(config, log, {
    faults: crashAfterWrite ? { afterWrite: () => process.kill(process.pid, 'SIGKILL') } : {},
  }),
);
stopOnLostRedisDatabase(log, deps.redis, config.redisUrl);
const app = await buildApp(deps);
// A signal during start-up is exiting already (onTerminationSignals): do not start listening.
if (!signals.stopping) {
  signals.setShutdown(async () => {
    const steps = apiShutdownSteps(app, deps);
    const { failed } = await runShutdown(steps, log, config.shutdownGraceMs);
    return failed.length === 0;
  });
  // The bound address is logged so a supervisor (or a test) can start the API on PORT=0 and read the port it got.
  const address = await startupStep(log, `listening on ${config.host}:${config.port}`, { host: 'HOST', port: 'PORT' }, () => app.listen({ port: config.port, host: config.host }));
  log.info({ issuer: config.issuer, address }, 'api ready');
}
