import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import {
  deactivateProviderUser,
  getProviderUser,
  providerUserForVersion,
  listProviderUsers,
  listUsersQuerySchema,
  listUsersResponseSchema,
  providerUserNextSchema,
  providerUserSchema,
  providerUserWithSyncNextSchema,
  providerUserWithSyncSchema,
  REQUEST_DEADLINE_MS,
  toProviderUserNextView,
  toProviderUserView,
  upsertProviderUser,
  upsertProviderUserBodySchema,
  ValidationError,
  type ApiVersion,
  type FieldError,
  type ProviderUserDoc,
} from '@connect/shared';
import { z } from 'zod';
import type { ApiDeps } from '../api-deps.ts';
import { RateLimitedError, UnsupportedMediaTypeError } from '../http-errors.ts';
import { decodeCursor, encodeCursor } from '../list-cursor.ts';
import { perClientLimit } from '../rate-limits.ts';
import { answeredAtDeadline, refusedUnapplied } from '../service-unavailable.ts';
import { API_VERSION_QUERY, authenticate } from './authenticate.ts';

/** POST /users exists from this version on (docs/contract.md, Versioning). */
export const USERS_SINCE = '2026-03-23';
/** The rest of the lifecycle (list, deactivate) is a preview: this version only (docs/api-lifecycle.md). */
export const LIFECYCLE_SINCE = 'x-nabla-next';

/** Tells a client what its POST /users came to without changing the body the public API defines. */
export const OUTCOME_HEADER = 'x-connect-outcome';

const problemRef = z.object({ type: z.string(), title: z.string(), status: z.number(), detail: z.string() }).loose();
const userParams = z.object({ external_provider_id: z.string().min(1, 'must not be empty').max(256, 'at most 256 characters') });
const userEitherVersion = z
  .union([providerUserSchema, providerUserNextSchema])
  .meta({ description: 'Under x-nabla-next the user also carries `status` and `deactivated_at`.' });
const userWithSyncEitherVersion = z
  .union([providerUserWithSyncSchema, providerUserWithSyncNextSchema])
  .meta({ description: 'Under x-nabla-next the user also carries `status` and `deactivated_at`.' });

/**
 * GET {base}/users pages one organization may have in flight on one API instance. On FerretDB a
 * page reads and sorts the whole organization (seconds at a few thousand users, up to its time
 * limit): with no bound of its own, one tenant looping over pages inside its request budget kept
 * the shared database busy for everyone. Past it: 429 with Retry-After: 1.
 */
export const LIST_PAGES_AT_ONCE = 2;

const LIST_PARAMETERS = new Set([...Object.keys(listUsersQuerySchema.shape), API_VERSION_QUERY]);

/**
 * What the list's query schema cannot see once the query is parsed: a parameter it does not
 * know (`status[]=deactivated`, a typo: silently ignored, it answered the unfiltered list), one
 * given twice (the schema saw an array: "expected a number"), and a limit written as anything but
 * digits (`0x10`, `1e2` and ` 5` were read as numbers).
 */
function listQueryProblems(query: Record<string, unknown>): FieldError[] {
  const problems: FieldError[] = [];
  for (const [name, value] of Object.entries(query)) {
    // As many as a body's errors (a URL of thousands of unknown parameters does not make a reply of thousands).
    if (problems.length === 10) break;
    const path = `querystring.${name.slice(0, 64)}`;
    if (!LIST_PARAMETERS.has(name)) problems.push({ path, message: `unknown parameter; the list takes ${[...LIST_PARAMETERS].join(', ')}` });
    else if (Array.isArray(value)) problems.push({ path, message: 'is given more than once' });
    // Digits past a safe integer (`999999999999999999999`) are a whole number too: the schema said "must be an integer".
    else if (name === 'limit' && (!/^[0-9]+$/.test(String(value)) || !Number.isSafeInteger(Number(value)))) {
      problems.push({ path, message: value === '' ? 'must not be empty' : 'must be a whole number from 1 to 200, in digits' });
    }
  }
  return problems;
}

/** Dated versions keep their shape: no lifecycle fields, whatever the user's status. */
function viewFor(user: ProviderUserDoc, version: ApiVersion) {
  return version === 'x-nabla-next' ? toProviderUserNextView(user) : toProviderUserView(user);
}

/** Routes translate HTTP to a use case's command and its result back; the use cases do the rest (events, metrics). */
export async function usersRoutes(instance: FastifyInstance, deps: ApiDeps): Promise<void> {
  /** GET {base}/users pages in flight per organization (LIST_PAGES_AT_ONCE). */
  const listsInFlight = new Map<string, number>();
  const app = instance.withTypeProvider<ZodTypeProvider>();
  const onRequest = authenticate(deps, USERS_SINCE);
  const onPreviewRequest = authenticate(deps, LIFECYCLE_SINCE);
  const writeDeps = { models: deps.models, lock: deps.lock, recent: deps.recent, emailClaims: deps.emailClaims, publisher: deps.publisher, metrics: deps.metrics.writes, now: deps.clock.now };

  app.post(
    '/users',
    {
      onRequest,
      // Every answer says what the request did (docs/api-lifecycle.md): a refusal (4xx: bad input,
      // a conflict, no valid token, a version without the route, over the limit; a 503 from an
      // instance shutting down, before it read the request) changed nothing. Another 5xx says
      // nothing: a write sent before the database stopped answering may yet land.
      onSend: async (request, reply, payload) => {
        if (reply.hasHeader(OUTCOME_HEADER)) return payload;
        if ((reply.statusCode >= 400 && reply.statusCode < 500) || refusedUnapplied.has(request)) reply.header(OUTCOME_HEADER, 'unchanged');
        return payload;
      },
      config: { ...perClientLimit(deps), apiVersionSince: USERS_SINCE },
      // The token endpoint takes form bodies too, so the form parser is registered; /users takes JSON only.
      preValidation: async (request: FastifyRequest) => {
        const type = request.headers['content-type'] ?? '';
        if (!/^application\/([a-z0-9.+-]*\+)?json\s*(;|$)/i.test(type)) throw new UnsupportedMediaTypeError();
      },
      schema: {
        operationId: 'upsertUser',
        summary: 'Create or update a provider user (reactivates a deactivated one)',
        description: 'The answer carries `X-Connect-Outcome: created | updated | unchanged`.',
        tags: ['users'],
        security: [{ bearer: [] }],
        body: upsertProviderUserBodySchema,
        response: { 200: userEitherVersion, 201: userEitherVersion, 400: problemRef, 401: problemRef, 404: problemRef, 409: problemRef, 415: problemRef },
      },
    },
    async (request, reply) => {
      const { organizationId, apiVersion } = request.auth!;
      const result = await upsertProviderUser(writeDeps, {
        organizationId,
        body: request.body,
        log: request.log,
        answered: () => answeredAtDeadline(request),
        receivedAt: new Date(deps.clock.nowMs() - reply.elapsedTime),
      });
      request.logFields = { outcome: result.outcome, reactivated: result.reactivated, version: result.user.version };
      reply.header(OUTCOME_HEADER, result.outcome);
      const view = viewFor(result.user, apiVersion);
      if (result.outcome === 'created') {
        reply.header('location', `${deps.config.issuer}/users/${encodeURIComponent(view.external_provider_id)}`);
        return reply.status(201).send(view);
      }
      return reply.status(200).send(view);
    },
  );

  app.get(
    '/users',
    {
      onRequest: onPreviewRequest,
      config: { ...perClientLimit(deps), apiVersionSince: LIFECYCLE_SINCE },
      preValidation: async (request: FastifyRequest) => {
        const problems = listQueryProblems(request.query as Record<string, unknown>);
        if (problems.length > 0) throw new ValidationError(problems);
      },
      schema: {
        operationId: 'listUsers',
        summary: "List the organization's provider users (preview: x-nabla-next only)",
        description: 'Ordered by external_provider_id. Pass `next_cursor` back as `cursor` for the next page; it is null on the last one.',
        tags: ['users'],
        security: [{ bearer: [] }],
        querystring: listUsersQuerySchema,
        response: { 200: listUsersResponseSchema, 400: problemRef, 401: problemRef, 404: problemRef },
      },
    },
    async (request, reply) => {
      const { organizationId } = request.auth!;
      const { limit, cursor, status } = request.query;
      const bound = { org: organizationId, status: status ?? null };
      const after = cursor === undefined ? undefined : decodeCursor(deps.cursorKey, cursor, bound);
      const running = listsInFlight.get(organizationId) ?? 0;
      if (running >= LIST_PAGES_AT_ONCE) {
        throw new RateLimitedError(1, `At most ${LIST_PAGES_AT_ONCE} list pages at once per organization; retry after 1 s, once a page in flight has been answered.`);
      }
      listsInFlight.set(organizationId, running + 1);
      let page;
      try {
        await deps.faults.beforeListQuery?.();
        // The query may take what the request deadline leaves, less a second to answer: past that its
        // result could not be sent (the request got its 503), and FerretDB would go on reading.
        const maxTimeMS = deps.faults.listMaxTimeMs ?? Math.max(100, REQUEST_DEADLINE_MS - Math.ceil(reply.elapsedTime) - 1000);
        page = await listProviderUsers(deps.models, { organizationId, limit, status, after, maxTimeMS });
      } finally {
        // Counted until the database is done with the page, past a 503 at the request's deadline.
        const left = listsInFlight.get(organizationId)! - 1;
        if (left === 0) listsInFlight.delete(organizationId);
        else listsInFlight.set(organizationId, left);
      }
      return {
        data: page.users.map(toProviderUserNextView),
        next_cursor: page.nextAfter === null ? null : encodeCursor(deps.cursorKey, { ...bound, after: page.nextAfter }),
      };
    },
  );

  app.get(
    '/users/:external_provider_id',
    {
      onRequest,
      config: { ...perClientLimit(deps), apiVersionSince: USERS_SINCE },
      schema: {
        operationId: 'getUser',
        summary: 'A provider user and where each downstream target stands',
        tags: ['users'],
        security: [{ bearer: [] }],
        params: userParams,
        response: { 200: userWithSyncEitherVersion, 401: problemRef, 404: problemRef },
      },
    },
    async (request) => {
      const user = await getProviderUser(deps.models, deps.config.downstreamTargets, request.auth!.organizationId, request.params.external_provider_id);
      return providerUserForVersion(user, request.auth!.apiVersion);
    },
  );

  app.delete(
    '/users/:external_provider_id',
    {
      onRequest: onPreviewRequest,
      config: { ...perClientLimit(deps), apiVersionSince: LIFECYCLE_SINCE },
      schema: {
        operationId: 'deactivateUser',
        summary: 'Deactivate a provider user (preview: x-nabla-next only)',
        description: 'Emits `user.deactivated`. Deactivating a deactivated user answers 200 and emits nothing. POST /users reactivates.',
        tags: ['users'],
        security: [{ bearer: [] }],
        params: userParams,
        response: { 200: providerUserNextSchema, 401: problemRef, 404: problemRef },
      },
    },
    async (request) => {
      const result = await deactivateProviderUser(writeDeps, {
        organizationId: request.auth!.organizationId,
        externalProviderId: request.params.external_provider_id,
        log: request.log,
        answered: () => answeredAtDeadline(request),
      });
      request.logFields = { outcome: result.outcome, version: result.user.version };
      return toProviderUserNextView(result.user);
    },
  );
}
