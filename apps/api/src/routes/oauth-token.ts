import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { DEFAULT_PINNED_API_VERSION, DomainError } from '@connect/shared';
import { RateLimitedError } from '../http-errors.ts';
import { DEFAULT_BODY_LIMIT, FORM_BODY_LIMIT } from '../error-handler.ts';
import { perIpTokenLimit } from '../rate-limits.ts';
import { z } from 'zod';
import type { ApiDeps } from '../api-deps.ts';
import { AssertionRejected, verifyClientAssertion } from '../auth/client-assertion.ts';
import { asServiceUnavailable, RequestTimeoutError } from '../service-unavailable.ts';
import { API_VERSION_HEADER, requestedApiVersion } from './authenticate.ts';

const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

type OAuthErrorCode = 'invalid_request' | 'invalid_client' | 'unsupported_grant_type';

/** RFC 6749 §5.2 error body; the token endpoint does not speak problem+json (docs/contract.md). */
function oauthError(reply: FastifyReply, status: 400 | 401 | 408, error: OAuthErrorCode, description: string): FastifyReply {
  reply.header('cache-control', 'no-store').header('pragma', 'no-cache');
  if (status === 401) reply.header('www-authenticate', 'Bearer');
  // The reason on the request's one log line, as a problem's slug is elsewhere (error-handler.ts).
  reply.request.logFields = { ...reply.request.logFields, oauth_error: error };
  return reply.status(status).type('application/json').send({ error, error_description: description });
}

export const tokenRequestSchema = z
  .object({
    grant_type: z.string().max(100).meta({ example: 'client_credentials' }),
    client_assertion_type: z.string().max(200).meta({ example: JWT_BEARER }),
    client_assertion: z.string().max(16_384),
    client_id: z.string().max(200).optional(),
    scope: z.string().max(1000).optional(),
  })
  .meta({ id: 'TokenRequest' });

export const tokenResponseSchema = z
  .object({ access_token: z.string(), token_type: z.literal('Bearer'), expires_in: z.number().int().min(1) })
  .meta({ id: 'TokenResponse' });

const oauthErrorSchema = z.object({ error: z.string(), error_description: z.string() }).meta({ id: 'OAuthError' });

/**
 * The client id of `Authorization: Basic` credentials (percent-decoded, RFC 6749 §2.3.1): undefined
 * without a Basic header, null when the credentials cannot be read.
 */
function basicClientId(authorization: string | undefined): string | undefined | null {
  const match = /^Basic +([A-Za-z0-9+/]+={0,2}) *$/i.exec(authorization ?? '');
  if (!match) return authorization !== undefined && /^Basic\b/i.test(authorization) ? null : undefined;
  const credentials = Buffer.from(match[1]!, 'base64').toString('utf8');
  const colon = credentials.indexOf(':');
  if (colon < 1) return null;
  try {
    return decodeURIComponent(credentials.slice(0, colon).replace(/\+/g, ' '));
  } catch {
    return null;
  }
}

export async function oauthTokenRoute(app: FastifyInstance, deps: ApiDeps): Promise<void> {
  // Every failure of this route, parse errors included, answers in RFC 6749 form.
  app.setErrorHandler((error: FastifyError, request, reply) => {
    // A refusal before the handler ran (a body it could not read) is under the version asked, else
    // the default, as the handler's own refusals are; a malformed version asked gets none.
    if (!reply.hasHeader(API_VERSION_HEADER)) {
      try {
        reply.header(API_VERSION_HEADER, requestedApiVersion(request) ?? DEFAULT_PINNED_API_VERSION);
      } catch {
        // The version asked is not one: nothing to echo.
      }
    }
    if (error instanceof RateLimitedError) {
      // Not invalid_request: an OAuth library takes that for a request to fix, not one to send again.
      reply.header('cache-control', 'no-store').header('pragma', 'no-cache').header('retry-after', String(error.retryAfterSeconds));
      return reply.status(429).type('application/json').send({ error: 'temporarily_unavailable', error_description: error.message });
    }
    // A body that never arrived in full: the caller's delay, in RFC 6749's words, as a 408.
    if (error instanceof RequestTimeoutError) return oauthError(reply, 408, 'invalid_request', error.message);
    // Ours (a body in another charset: 415; bytes that are not UTF-8: 400): the caller's to fix.
    if (error instanceof DomainError && error.status < 500) return oauthError(reply, 400, 'invalid_request', error.message);
    if (error.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      const form = /^application\/x-www-form-urlencoded/i.test(request.headers['content-type'] ?? '');
      // 400, as every malformed token request (the token endpoint answers 400 or 401 only), naming the limit.
      return oauthError(reply, 400, 'invalid_request', `The body is larger than ${form ? FORM_BODY_LIMIT : (request.routeOptions.bodyLimit ?? DEFAULT_BODY_LIMIT)} bytes, the most this endpoint accepts.`);
    }
    if ((error.statusCode ?? 500) < 500) return oauthError(reply, 400, 'invalid_request', 'The request body could not be read; send form or JSON parameters.');
    // A datastore that does not answer, or the request deadline: retryable, in RFC 6749's
    // words (`temporarily_unavailable`), with Retry-After; not a 500.
    const outage = asServiceUnavailable(error);
    if (outage) {
      request.log.warn({ err: error.message, name: error.name }, 'token endpoint: datastore unavailable');
      reply.header('cache-control', 'no-store').header('retry-after', String(outage.retryAfterSeconds));
      return reply.status(503).type('application/json').send({ error: 'temporarily_unavailable', error_description: outage.message });
    }
    request.log.error({ err: error.message }, 'token endpoint failed');
    return reply.status(500).type('application/json').send({ error: 'server_error', error_description: 'Try again later.' });
  });

  app.post(
    '/oauth/token',
    {
      config: perIpTokenLimit(deps),
      schema: {
        operationId: 'requestToken',
        summary: 'Get a server access token (OAuth 2.0 client credentials with a JWT client assertion, RFC 7523)',
        tags: ['oauth'],
        // The one operation without a bearer token: the client assertion in the body authenticates.
        security: [],
        body: tokenRequestSchema,
        response: { 200: tokenResponseSchema, 400: oauthErrorSchema, 401: oauthErrorSchema },
      },
      // Validation is done in the handler so that every refusal has the RFC 6749 shape.
      validatorCompiler: () => (data) => ({ value: data }),
    },
    async (request: FastifyRequest, reply: FastifyReply) => {
      reply.header(API_VERSION_HEADER, requestedApiVersion(request) ?? DEFAULT_PINNED_API_VERSION);
      const body = request.body;
      if (typeof body !== 'object' || body === null || Array.isArray(body)) {
        return oauthError(reply, 400, 'invalid_request', 'Send grant_type, client_assertion_type and client_assertion.');
      }
      const params = body as Record<string, unknown>;
      // RFC 6749 §3.2: parameters must not be included more than once (a form body gives an array;
      // in a JSON body an array is only a value of the wrong type, a repeated member is refused by the parser).
      const repeated = Object.keys(params).find((name) => Array.isArray(params[name]));
      if (repeated !== undefined) {
        const fromForm = /^\s*application\/x-www-form-urlencoded\b/i.test(request.headers['content-type'] ?? '');
        return oauthError(reply, 400, 'invalid_request', `${repeated.slice(0, 40)} ${fromForm ? 'is given more than once' : 'must be a string, not an array'}.`);
      }
      if (params.grant_type === undefined) return oauthError(reply, 400, 'invalid_request', 'grant_type is required.');
      if (params.grant_type !== 'client_credentials') return oauthError(reply, 400, 'unsupported_grant_type', 'Only client_credentials is supported.');
      const parsed = tokenRequestSchema.safeParse(body);
      if (!parsed.success) {
        const issue = parsed.error.issues[0];
        const field = issue?.path.join('.') || 'body';
        const tooLong = issue?.code === 'too_big' && typeof issue.maximum === 'number' ? ` is longer than ${issue.maximum} characters` : undefined;
        return oauthError(reply, 400, 'invalid_request', `${field}${tooLong ?? ' is missing or malformed'}.`);
      }
      if (parsed.data.client_assertion_type !== JWT_BEARER) {
        return oauthError(reply, 400, 'invalid_request', `client_assertion_type must be ${JWT_BEARER}.`);
      }
      // An OAuth library may also send the client id as HTTP Basic credentials (RFC 6749 §2.3.1;
      // Go's x/oauth2 does by default). It names the client as a form's client_id does, so it must
      // name the assertion's client too; a Bearer header (a client's default headers) is ignored.
      const basic = basicClientId(request.headers.authorization);
      if (basic === null) return oauthError(reply, 400, 'invalid_request', 'The Authorization header is not valid Basic credentials; send the client id alone in the assertion.');
      if (basic !== undefined && parsed.data.client_id !== undefined && basic !== parsed.data.client_id) {
        request.log.info({ check: 'client_id' }, 'client assertion refused: the Basic credentials and client_id name two clients');
        return oauthError(reply, 401, 'invalid_client', 'The Basic credentials and client_id name two different clients.');
      }
      let verified;
      try {
        verified = await verifyClientAssertion(
          { models: deps.models, clients: deps.clients, keys: deps.clientKeys, audiences: [deps.config.tokenEndpointUrl, deps.config.issuer] },
          parsed.data.client_assertion,
          parsed.data.client_id ?? basic,
        );
      } catch (err) {
        if (!(err instanceof AssertionRejected)) throw err;
        // The operator's log says which check failed (and for aud, both values); the caller hears
        // it only where that cannot help an attacker (AssertionRejected.told).
        request.log.info(err.logFields, 'client assertion refused');
        return oauthError(reply, 401, 'invalid_client', err.told);
      }
      const { client, organization } = verified;
      // Authenticated now: without a version asked, the answer is under the organization's pinned one, as every later call.
      if (requestedApiVersion(request) === undefined) reply.header(API_VERSION_HEADER, organization.api_version);
      const accessToken = await deps.tokens.issue({ clientId: client._id, organizationId: organization._id });
      request.logFields = { client_id: client._id };
      reply.header('cache-control', 'no-store').header('pragma', 'no-cache');
      return reply.send({ access_token: accessToken, token_type: 'Bearer', expires_in: deps.tokens.ttlSeconds });
    },
  );
}
