import { createLogger, loadConfigOrExit, onTerminationSignals, runShutdownSequence } from '@connect/shared';
import { createApiDeps } from './api-deps.ts';
import { buildApp } from './build-app.ts';
import { apiShutdownSteps } from './shutdown.ts';

const config = loadConfigOrExit();
const log = createLogger(config.logLevel, 'api');
const deps = await createApiDeps(config, log);
const app = await buildApp(deps);
onTerminationSignals(log, async () => {
  const steps = apiShutdownSteps(app, deps);
  const done = await runShutdownSequence(steps, log, 25_000);
  return done.length === steps.length;
});
await app.listen({ port: config.port, host: config.host });
log.info({ issuer: config.issuer }, 'api ready');
