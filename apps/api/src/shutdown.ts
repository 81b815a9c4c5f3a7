import type { FastifyInstance } from 'fastify';
import type { ShutdownStep } from '@connect/shared';
import type { ApiDeps } from './api-deps.ts';

/**
 * The API's shutdown order. This list is the one the code runs (below), the log
 * reports ("shutdown step done" with each name, in order) and the tests assert.
 * 1. mark-not-ready: /readyz answers 503 from the moment SIGTERM arrives, so a
 *    load balancer stops routing here while requests still finish (as
 *    OpenPanel's shutdown does); before this, readiness said "ok" until the
 *    listener was already gone.
 * 2. stop-http: stop accepting connections and let requests in flight finish.
 *    A request that got its answer has written its change and event to MongoDB.
 * 3. drain-relay: wait for the publishes started after those writes, so events
 *    reach Redis now rather than at the next sweep.
 * 4. close-datastores: the queues, Redis, then MongoDB, only once nothing above
 *    needs them; closing MongoDB first would fail the last requests' writes.
 */
export const API_SHUTDOWN_STEPS = ['mark-not-ready', 'stop-http', 'drain-relay', 'close-datastores'] as const;
export type ApiShutdownStepName = (typeof API_SHUTDOWN_STEPS)[number];

export function apiShutdownSteps(app: FastifyInstance, deps: ApiDeps): ShutdownStep[] {
  const run: Record<ApiShutdownStepName, () => Promise<unknown>> = {
    'mark-not-ready': async () => deps.markShuttingDown(),
    'stop-http': () => app.close(),
    'drain-relay': () => deps.relay.drain(),
    'close-datastores': () => deps.close(),
  };
  return API_SHUTDOWN_STEPS.map((name) => ({ name, run: run[name] }));
}
