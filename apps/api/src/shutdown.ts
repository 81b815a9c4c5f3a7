import type { FastifyInstance } from 'fastify';
import type { ShutdownStep } from '@connect/shared';
import type { ApiDeps } from './api-deps.ts';

/**
 * The API's shutdown order, and why:
 * 1. stop-http: stop accepting connections and let requests in flight finish.
 *    A request that got its answer has written its change and event to MongoDB.
 * 2. drain-relay: wait for the publishes started after those writes, so events
 *    reach Redis now rather than at the next sweep.
 * 3. close-queue, close-redis, close-mongo: only once nothing above needs them;
 *    closing MongoDB first would fail the last requests' writes.
 */
export function apiShutdownSteps(app: FastifyInstance, deps: ApiDeps): ShutdownStep[] {
  return [
    { name: 'stop-http', run: () => app.close() },
    { name: 'drain-relay', run: () => deps.relay.drain() },
    { name: 'close-datastores', run: () => deps.close() },
  ];
}
