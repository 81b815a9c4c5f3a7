import type { FastifyInstance } from 'fastify';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import { jsonSchemaTransform, jsonSchemaTransformObject } from 'fastify-type-provider-zod';
import { API_VERSIONS, DEFAULT_PINNED_API_VERSION, apiVersionAtLeast } from '@connect/shared';
import type { ApiDeps } from '../api-deps.ts';
import { finishOpenApi } from '../openapi-finish.ts';

/**
 * OpenAPI 3.1 generated from the same zod schemas that validate requests, at
 * /openapi.json, and a browsable page at /docs. Registered before the routes so
 * every route is collected.
 */
export async function registerDocs(app: FastifyInstance, deps: ApiDeps): Promise<void> {
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Connect Provisioning: Nabla Connect user provisioning API',
        version: DEFAULT_PINNED_API_VERSION,
        description: [
          'Server-to-server API for EHR backends: get an access token with a JWT client assertion',
          '(RFC 7523), then create or update provider users. Every change is delivered to downstream',
          'dictation services as an HMAC-signed callback.',
          '',
          `API versions: ${API_VERSIONS.join(', ')}; send \`X-Nabla-Api-Version\` or \`?nabla-api-version=\`.`,
          "Without one, the organization's pinned version applies.",
          '',
          'Errors are RFC 9457 `application/problem+json` (`type`, `title`, `status`, `detail`, and',
          '`errors: [{path, message}]` for validation), except the token endpoint, which answers RFC 6749 errors.',
          'Problem types: `…/validation`, `…/malformed-body`, `…/email-mismatch`, `…/email-conflict`, `…/not-found`, `…/unauthorized`,',
          '`…/unsupported-api-version`, `…/endpoint-not-in-version`, `…/unsupported-media-type`, `…/body-too-large`, `…/rate-limited`,',
          '`…/method-not-allowed`, `…/invalid-cursor`, `…/request-timeout`, `…/service-unavailable`, `…/expectation-failed`,',
          '`…/headers-too-large`, `…/malformed-request`, `…/uri-too-long`, `…/bad-url`, `…/internal`; another 4xx is named by its status',
          '(e.g. `…/forbidden`). An unknown enum value lists the accepted values once, in `errors[].allowed`.',
          '',
          'Preview (`x-nabla-next` only): `GET {base}/users` lists users with a signed cursor, `DELETE {base}/users/{id}` deactivates',
          '(`user.deactivated`); users then carry `status` and `deactivated_at`. `POST /users` on a deactivated user reactivates it in',
          'every version (`user.reactivated`). Every successful `POST /users` answer carries `X-Connect-Outcome: created | updated | unchanged`.',
          '',
          'Every GET also answers HEAD (the same status and headers, no body). A request may name itself with `X-Request-Id`',
          '(letters, digits, `.`, `_`, `-`, up to 128): the answer echoes it and the server logs it; otherwise the server makes one up.',
        ].join('\n'),
      },
      servers: [{ url: deps.config.publicBaseUrl }],
      // Every operation but the token endpoint's (which says `security: []`) takes a bearer access token.
      security: [{ bearer: [] }],
      components: {
        securitySchemes: {
          bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT', description: 'Access token from POST {base}/oauth/token' },
        },
        parameters: {
          ApiVersion: {
            name: 'X-Nabla-Api-Version',
            in: 'header',
            required: false,
            schema: { type: 'string', enum: [...API_VERSIONS] },
            description: "The API version; the organization's pinned one when absent.",
          },
        },
      },
      tags: [
        { name: 'oauth', description: 'Server authentication' },
        { name: 'users', description: 'Provider users' },
      ],
    },
    transform: (input) => {
      const out = jsonSchemaTransform(input);
      if (input.url.startsWith(deps.config.basePath)) {
        // The versions the route answers in: a generated client offers no other, and a preview
        // route (x-nabla-next only) asks for it, which an organization's pinned version rarely is.
        const since = input.route.config?.apiVersionSince;
        const versions = API_VERSIONS.filter((v) => since === undefined || apiVersionAtLeast(v, since));
        const preview = since === 'x-nabla-next';
        const schema = out.schema as Record<string, unknown>;
        schema.headers = {
          type: 'object',
          properties: {
            'x-nabla-api-version': {
              type: 'string',
              enum: versions,
              description: preview
                ? 'x-nabla-next: this operation is a preview, in no dated version (or query nabla-api-version)'
                : "API version (or query nabla-api-version); the organization's pinned one when absent",
            },
          },
          ...(preview ? { required: ['x-nabla-api-version'] } : {}),
        };
      }
      return out;
    },
    transformObject: (input) => finishOpenApi(jsonSchemaTransformObject(input), deps.config.basePath),
  });
  await app.register(swaggerUi, { routePrefix: '/docs', uiConfig: { docExpansion: 'list', deepLinking: true } });
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
}
