import type { FastifyInstance } from 'fastify';
import type { ShutdownStep } from '@connect/shared';
import type { ApiDeps } from './api-deps.ts';

/**
 * The API's shutdown order. This list is the one the code runs (below), the log
 * reports ("shutdown step done" with each name, in order) and the tests assert.
 * 1. mark-not-ready: /readyz answers 503 from the moment SIGTERM arrives, so a
 *    load balancer stops routing here while requests still finish (as
 *    OpenPanel's shutdown does); before this, readiness said "ok" until the
 *    listener was already gone. Every answer from now on ends its keep-alive
 *    connection (build-app.ts), so pooled connections drain.
 * 2. wait-for-load-balancer: keep serving, new connections included, for
 *    API_SHUTDOWN_DELAY_MS (0 by default), the time a load balancer that polls
 *    /readyz needs to stop sending here; without it, a request sent meanwhile
 *    meets a closed port or a reset.
 * 3. stop-http: stop accepting connections and let requests in flight finish.
 *    A request that got its answer has written its change and event to MongoDB.
 * 4. drain-relay: wait for the publishes started after those writes, so events
 *    reach Redis now rather than at the next sweep.
 * 5. close-datastores: the queues, Redis, then MongoDB, only once nothing above
 *    needs them; closing MongoDB first would fail the last requests' writes.
 * API_SHUTDOWN_GRACE_MS bounds them all together (runShutdown).
 */
export const API_SHUTDOWN_STEPS = ['mark-not-ready', 'wait-for-load-balancer', 'stop-http', 'drain-relay', 'close-datastores'] as const;
export type ApiShutdownStepName = (typeof API_SHUTDOWN_STEPS)[number];

export function apiShutdownSteps(app: FastifyInstance, deps: ApiDeps): ShutdownStep[] {
  const run: Record<ApiShutdownStepName, () => Promise<unknown>> = {
    'mark-not-ready': async () => deps.markShuttingDown(),
    'wait-for-load-balancer': () => new Promise((resolve) => setTimeout(resolve, deps.config.shutdownDelayMs)),
    'stop-http': () => app.close(),
    'drain-relay': () => deps.relay.drain(),
    'close-datastores': () => deps.close(),
  };
  return API_SHUTDOWN_STEPS.map((name) => ({ name, run: run[name] }));
}
