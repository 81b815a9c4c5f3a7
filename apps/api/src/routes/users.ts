import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import {
  getProviderUser,
  providerUserSchema,
  providerUserWithSyncSchema,
  toProviderUserView,
  upsertProviderUser,
  upsertProviderUserBodySchema,
  DomainError,
  EmailConflictError,
  EmailMismatchError,
} from '@connect/shared';
import { z } from 'zod';
import type { ApiDeps } from '../api-deps.ts';
import { perClientLimit } from '../rate-limits.ts';
import { authenticate } from './authenticate.ts';

/** POST /users exists from this version on (docs/contract.md, Versioning). */
export const USERS_SINCE = '2026-03-23';

class UnsupportedMediaTypeError extends DomainError {
  constructor() {
    super('unsupported-media-type', 'Unsupported media type', 415, 'Send the body as application/json.');
  }
}

const problemRef = z.object({ type: z.string(), title: z.string(), status: z.number(), detail: z.string() }).loose();

export async function usersRoutes(instance: FastifyInstance, deps: ApiDeps): Promise<void> {
  const app = instance.withTypeProvider<ZodTypeProvider>();
  const onRequest = authenticate(deps, USERS_SINCE);

  app.post(
    '/users',
    {
      onRequest,
      config: perClientLimit(deps),
      // The token endpoint takes form bodies too, so the form parser is registered; /users takes JSON only.
      preValidation: async (request: FastifyRequest) => {
        const type = request.headers['content-type'] ?? '';
        if (!/^application\/([a-z0-9.+-]*\+)?json\s*(;|$)/i.test(type)) throw new UnsupportedMediaTypeError();
      },
      schema: {
        summary: 'Create or update a provider user',
        tags: ['users'],
        security: [{ bearer: [] }],
        body: upsertProviderUserBodySchema,
        response: { 200: providerUserSchema, 201: providerUserSchema, 400: problemRef, 401: problemRef, 404: problemRef, 409: problemRef, 415: problemRef },
      },
    },
    async (request, reply) => {
      const { organizationId } = request.auth!;
      let result;
      try {
        result = await upsertProviderUser(deps, { organizationId, body: request.body });
      } catch (err) {
        if (err instanceof EmailMismatchError || err instanceof EmailConflictError) deps.metrics.upserts.inc({ outcome: 'conflict' });
        throw err;
      }
      deps.metrics.upserts.inc({ outcome: result.outcome });
      request.log.info({ outcome: result.outcome, version: result.user.version }, 'provider user upserted');
      if (result.outcome !== 'unchanged') {
        deps.faults.afterWrite?.();
        deps.relay.publishSoon(result.user);
      }
      const view = toProviderUserView(result.user);
      if (result.outcome === 'created') {
        reply.header('location', `${deps.config.issuer}/users/${encodeURIComponent(view.external_provider_id)}`);
        return reply.status(201).send(view);
      }
      return reply.status(200).send(view);
    },
  );

  app.get(
    '/users/:external_provider_id',
    {
      onRequest,
      config: perClientLimit(deps),
      schema: {
        summary: 'A provider user and where each downstream target stands',
        tags: ['users'],
        security: [{ bearer: [] }],
        params: z.object({ external_provider_id: z.string().min(1).max(256) }),
        response: { 200: providerUserWithSyncSchema, 401: problemRef, 404: problemRef },
      },
    },
    async (request) => {
      return getProviderUser(deps.models, deps.config.downstreamTargets, request.auth!.organizationId, request.params.external_provider_id);
    },
  );
}
