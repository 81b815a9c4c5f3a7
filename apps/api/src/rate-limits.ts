import type { FastifyInstance, FastifyRequest } from 'fastify';
import rateLimit from '@fastify/rate-limit';
import { RateLimitedError } from './http-errors.ts';
import type { ApiDeps } from './api-deps.ts';
import { LeasedRedisStore } from './leased-rate-limit-store.ts';

/**
 * Rate limits shared by every API instance through Redis: per OAuth client on
 * {base} routes (counted after authentication, before the body is parsed), per
 * client IP on the token endpoint (the peer address, or X-Forwarded-For as
 * TRUST_PROXY allows). Answers 429 with Retry-After and the draft RateLimit-* headers.
 * Counts are leased from Redis in slices of 1 % of the limit
 * (leased-rate-limit-store.ts), so a request rarely waits on Redis.
 *
 * When Redis does not answer, requests are let through (`skipOnError`): the
 * limits protect the service, but POST /users must keep working in an outage
 * (its events wait in MongoDB), and a limiter that fails closed would turn a
 * Redis outage into a full one.
 */
export async function registerRateLimits(app: FastifyInstance, deps: ApiDeps): Promise<void> {
  const namespace = `${deps.config.queuePrefix}:rate-limit:`;
  await app.register(rateLimit, {
    global: false,
    // The plugin constructs the store itself; this one takes slots from Redis in leases.
    store: class extends LeasedRedisStore {
      constructor() {
        super(deps.redis, namespace);
      }
    } as never,
    skipOnError: true,
    enableDraftSpec: true,
    timeWindow: 60_000,
    errorResponseBuilder: (_request, context) => new RateLimitedError(Math.max(1, Math.ceil(context.ttl / 1000))),
  });
}

/** Route config for {base} routes behind bearer auth: one bucket per OAuth client, shared by those routes. */
export function perClientLimit(deps: ApiDeps) {
  if (deps.config.rateLimitPerClient === 0) return {};
  return {
    rateLimit: {
      max: deps.config.rateLimitPerClient,
      // After authentication (onRequest, which names the client), before the body is read
      // and validated: a malformed or invalid request spends the client's budget too.
      hook: 'preParsing' as const,
      // One budget per client across every route under /users (create, read, list, deactivate),
      // not one per route: the limit is the client's, as the README states it.
      // Keys read `{QUEUE_PREFIX}:rate-limit:group:client:{id}/users` (the plugin appends the group).
      groupId: 'users',
      keyGenerator: (request: FastifyRequest) => `client:${request.auth?.clientId ?? request.ip}/`,
    },
  };
}

/** Route config for the token endpoint: one bucket per client IP. */
export function perIpTokenLimit(deps: ApiDeps) {
  if (deps.config.rateLimitTokenPerIp === 0) return {};
  return { rateLimit: { max: deps.config.rateLimitTokenPerIp, keyGenerator: (request: FastifyRequest) => `token-ip:${request.ip}` } };
}
