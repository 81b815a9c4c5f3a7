import { STATUS_CODES } from 'node:http';
import { API_VERSIONS } from '@connect/shared';

/** An OpenAPI document, or a part of one, as generated. */
type Json = Record<string, any>;

const VERSION_HEADER = {
  description: 'The API version this answer was served under.',
  schema: { type: 'string', enum: [...API_VERSIONS] },
};
const RETRY_AFTER = { description: 'Seconds to wait before trying again.', schema: { type: 'integer', minimum: 0 } };
const PROBLEM = { $ref: '#/components/schemas/Problem' };
const NO_STORE = { description: 'Always `no-store`: answers hold users and tokens.', schema: { type: 'string', enum: ['no-store'] } };
const REQUEST_ID_HEADER = { description: "The request's id, as in the server's log line (the caller's `X-Request-Id` when it sent a well-formed one).", schema: { type: 'string' } };

/** What the routes' zod schemas cannot say: RFC 9457 problems, shared with every route under the base path. */
const PROBLEM_SCHEMA = {
  type: 'object',
  required: ['type', 'title', 'status', 'detail'],
  properties: {
    type: { type: 'string', format: 'uri', description: 'A URL ending in a stable slug, e.g. …/problems/email-mismatch.' },
    title: { type: 'string' },
    status: { type: 'integer' },
    detail: { type: 'string', description: 'What went wrong, in words a person can act on.' },
    instance: { type: 'string' },
    errors: {
      type: 'array',
      description: 'For validation: one entry per bad field.',
      items: {
        type: 'object',
        required: ['path', 'message'],
        properties: { path: { type: 'string' }, message: { type: 'string' }, allowed: { type: 'array', items: { type: 'string' } } },
      },
    },
  },
  additionalProperties: true,
};

const problemResponse = (description: string, headers: Json = {}): Json => ({
  description,
  headers: { 'X-Nabla-Api-Version': VERSION_HEADER, ...headers },
  content: { 'application/problem+json': { schema: PROBLEM } },
});

const ALLOW_HEADER = { description: 'The methods the path takes.', schema: { type: 'string' } };
const WWW_AUTHENTICATE = { description: 'The challenge (RFC 6750): `Bearer`, with `error="invalid_token"` when a token was sent and refused.', schema: { type: 'string' } };

/**
 * What the HTTP layer refuses before any route reads the request: a request line and headers too
 * large (every path), a path parameter longer than the router reads (paths with one), and an
 * `Expect` other than `100-continue` (routes that take a body). The ones the operation does not list already.
 */
function httpLayerRefusals(path: string, takesBody: boolean, responses: Json): Json {
  const refusals: Json = {
    '431': problemResponse('The request line and headers are larger than 16 KiB (`…/headers-too-large`).'),
    ...(path.includes('{') ? { '414': problemResponse('A path parameter is longer than the server reads (`…/uri-too-long`).') } : {}),
    ...(takesBody ? { '417': problemResponse('An `Expect` header other than `100-continue` (`…/expectation-failed`).') } : {}),
  };
  return Object.fromEntries(Object.entries(refusals).filter(([status]) => !(status in responses)));
}

const SCHEMA_REF = '#/components/schemas/';
const INPUT = 'Input';

/** Replaces every `$ref` in `node` that `renamed` maps, in place. */
function renameRefs(node: unknown, renamed: Map<string, string>): void {
  if (Array.isArray(node)) return node.forEach((n) => renameRefs(n, renamed));
  if (node === null || typeof node !== 'object') return;
  const obj = node as Json;
  if (typeof obj.$ref === 'string' && obj.$ref.startsWith(SCHEMA_REF)) {
    const to = renamed.get(obj.$ref.slice(SCHEMA_REF.length));
    if (to) obj.$ref = SCHEMA_REF + to;
  }
  for (const value of Object.values(obj)) renameRefs(value, renamed);
}

/** The component schemas `root` refers to, directly or through other component schemas. */
function referencedSchemas(root: unknown, schemas: Json): Set<string> {
  const seen = new Set<string>();
  const visit = (node: unknown): void => {
    if (Array.isArray(node)) return node.forEach(visit);
    if (node === null || typeof node !== 'object') return;
    const ref = (node as Json).$ref;
    if (typeof ref === 'string' && ref.startsWith(SCHEMA_REF)) {
      const name = ref.slice(SCHEMA_REF.length);
      if (!seen.has(name)) {
        seen.add(name);
        visit(schemas[name]);
      }
    }
    for (const value of Object.values(node as Json)) visit(value);
  };
  visit(root);
  return seen;
}

/**
 * zod writes every named schema twice, `X` as answered and `XInput` as accepted, even
 * where the two are the same: code generators then make two types of one thing
 * (`SpecialtyKind` and `SpecialtyKindInput`). One name per type: an `XInput` equal to
 * `X` (once its own references are merged the same way) becomes `X`; one that differs
 * and is the only one the paths use (a request body) takes the name `X`; an `XInput`
 * nothing uses goes. Schemas only receivers see (the callback body) stay.
 */
function oneSchemaPerType(doc: Json): void {
  const schemas: Json = doc.components.schemas;
  const renamed = new Map<string, string>();
  for (let merged = true; merged; ) {
    merged = false;
    for (const name of Object.keys(schemas)) {
      if (!name.endsWith(INPUT)) continue;
      const plain = name.slice(0, -INPUT.length);
      if (!(plain in schemas)) continue;
      const input = structuredClone(schemas[name]);
      renameRefs(input, renamed);
      if (JSON.stringify(input) !== JSON.stringify(schemas[plain])) continue;
      renamed.set(name, plain);
      delete schemas[name];
      merged = true;
    }
    renameRefs(schemas, renamed);
  }
  renameRefs(doc.paths, renamed);
  const used = referencedSchemas(doc.paths, schemas);
  for (const name of Object.keys(schemas)) {
    if (!name.endsWith(INPUT) || used.has(name)) continue;
    delete schemas[name];
  }
  const usedByOtherSchemas = referencedSchemas(schemas, schemas);
  const takeName = new Map<string, string>();
  for (const name of used) {
    const plain = name.slice(0, -INPUT.length);
    if (name.endsWith(INPUT) && !used.has(plain) && !usedByOtherSchemas.has(plain)) takeName.set(name, plain);
  }
  for (const [from, to] of takeName) {
    schemas[to] = schemas[from];
    delete schemas[from];
  }
  renameRefs(doc.paths, takeName);
  renameRefs(schemas, takeName);
}

/** The request header the server takes as the request's id when it is well formed (build-app.ts, genReqId). */
const REQUEST_ID_PARAMETER = {
  name: 'X-Request-Id',
  in: 'header',
  required: false,
  description: "An id for this request, kept as the request's id in the server's log and echoed in the answer's `X-Request-Id`; one that does not match the pattern is replaced by a generated one.",
  schema: { type: 'string', pattern: '^[A-Za-z0-9._-]{1,128}$' },
};

const HEALTH_OK = {
  type: 'object',
  required: ['status'],
  properties: { status: { type: 'string', enum: ['ok'] } },
};
const READINESS_CHECKS = {
  type: 'object',
  required: ['mongodb', 'redis'],
  properties: { mongodb: { type: 'string', enum: ['ok', 'down'] }, redis: { type: 'string', enum: ['ok', 'down'] } },
};

/**
 * The operational endpoints outside the base path (docs/contract.md, Outside {base}), which a load
 * balancer, an orchestrator or Prometheus calls: no token, no API version. Their routes are hidden
 * from the generator (they have no zod schemas), so they are written out here.
 */
function operationalPaths(): Json {
  const operation = (operationId: string, summary: string, description: string, responses: Json): Json => ({
    get: { operationId, summary, description, tags: ['operations'], security: [], parameters: [REQUEST_ID_PARAMETER], responses },
  });
  return {
    '/livez': operation('getLivez', 'Liveness', 'The process answers. It checks nothing else: restart the process when this fails.', {
      '200': { description: 'The process answers.', content: { 'application/json': { schema: HEALTH_OK } } },
    }),
    '/readyz': operation(
      'getReadyz',
      'Readiness',
      'MongoDB and Redis answer. 503 when one refuses or has left the process\'s watch of it 5 s without an answer, and while the process shuts down: stop routing requests here meanwhile. Answers within about half a second.',
      {
        '200': { description: 'Ready.', content: { 'application/json': { schema: { ...HEALTH_OK, required: ['status', 'checks'], properties: { ...HEALTH_OK.properties, checks: READINESS_CHECKS } } } } },
        '503': {
          description: 'Not ready (`…/not-ready`): `checks` names the datastore that does not answer; `detail` says when the process is shutting down.',
          content: { 'application/problem+json': { schema: { allOf: [PROBLEM, { type: 'object', properties: { checks: READINESS_CHECKS } }] } } },
        },
      },
    ),
    '/metrics': operation('getMetrics', 'Prometheus metrics', "The API's metrics in the Prometheus text format (no tenant data).", {
      '200': { description: 'Prometheus text exposition format 0.0.4.', content: { 'text/plain': { schema: { type: 'string' } } } },
    }),
  };
}

/**
 * The generated document, finished with what the wire really carries
 * (docs/contract.md): errors under the base path are `application/problem+json`
 * (the token endpoint's stay RFC 6749 JSON), the token endpoint takes form bodies
 * too, the version may come as a query parameter, responses carry
 * `X-Nabla-Api-Version` (and POST /users `Location` and `X-Connect-Outcome`), and
 * the refusals every route can give (429 rate limited; 413 and 415 on bodies) are listed.
 */
export function finishOpenApi(doc: Json, basePath: string): Json {
  doc.components ??= {};
  doc.components.schemas = { ...doc.components.schemas, Problem: PROBLEM_SCHEMA };
  oneSchemaPerType(doc);
  for (const server of doc.servers ?? []) server.description ??= 'The origin; paths carry the base path (a client SDK takes origin + base path as its base URL).';
  const tokenPath = `${basePath}/oauth/token`;
  for (const [path, ops] of Object.entries(doc.paths ?? {}) as [string, Json][]) {
    if (!path.startsWith(basePath)) continue;
    for (const [method, op] of Object.entries(ops) as [string, Json][]) {
      op.parameters ??= [];
      if (!op.parameters.some((p: Json) => p.in === 'header' && p.name.toLowerCase() === 'x-request-id')) op.parameters.push(REQUEST_ID_PARAMETER);
      if (!op.parameters.some((p: Json) => p.in === 'query' && p.name === 'nabla-api-version')) {
        // The versions the operation answers in, as its header says (docs.ts).
        const header = op.parameters.find((p: Json) => p.in === 'header' && p.name === 'x-nabla-api-version');
        const enumOf = header?.schema?.enum ?? [...API_VERSIONS];
        op.parameters.push({ name: 'nabla-api-version', in: 'query', required: false, description: 'The API version, when the X-Nabla-Api-Version header is not sent.', schema: { type: 'string', enum: enumOf } });
      }
      const responses: Json = (op.responses ??= {});
      for (const [status, response] of Object.entries(responses) as [string, Json][]) {
        if (response.description === 'Default Response') response.description = STATUS_CODES[Number(status)] ?? response.description;
      }
      if (path === tokenPath) {
        const json = op.requestBody?.content?.['application/json'];
        if (json) op.requestBody.content['application/x-www-form-urlencoded'] = json;
        const oauthBody = responses['400']?.content;
        responses['408'] ??= { description: 'The body did not arrive in full within 10 s (RFC 6749 error body, `invalid_request`).', content: oauthBody };
        responses['429'] ??= { description: 'Too many token requests from this address (RFC 6749 error body).', headers: { 'Retry-After': RETRY_AFTER }, content: oauthBody };
        responses['503'] ??= { description: 'A datastore did not answer (RFC 6749 error body, `temporarily_unavailable`); retry after Retry-After.', headers: { 'Retry-After': RETRY_AFTER }, content: oauthBody };
        // Refused by HTTP itself, before any token request is read: problem documents, as on every other path.
        responses['405'] ??= problemResponse('Only POST is taken here (`…/method-not-allowed`); this is no token request, so the answer is a problem document, not an RFC 6749 error.', { Allow: ALLOW_HEADER });
        Object.assign(responses, httpLayerRefusals(path, true, responses));
        responses['401'].headers = { 'WWW-Authenticate': WWW_AUTHENTICATE, ...responses['401'].headers };
        for (const response of Object.values(responses) as Json[]) response.headers = { 'X-Nabla-Api-Version': VERSION_HEADER, 'Cache-Control': NO_STORE, ...response.headers };
        continue;
      }
      for (const [status, response] of Object.entries(responses) as [string, Json][]) {
        const code = Number(status);
        response.headers = { 'X-Nabla-Api-Version': VERSION_HEADER, ...response.headers };
        if (code >= 400 && response.content?.['application/json']) {
          response.content = { 'application/problem+json': { schema: PROBLEM } };
        }
      }
      // What any route under the base path can answer besides its own: a version asked that does not exist,
      // a method the path does not take, a datastore that does not answer, a body that never arrives.
      responses['400'] ??= problemResponse('Bad request: an API version that does not exist (`…/unsupported-api-version`), or a parameter that is not valid (`…/validation`).');
      responses['405'] ??= problemResponse('The path does not take this method (`…/method-not-allowed`); `Allow` lists those it takes.', { Allow: ALLOW_HEADER });
      Object.assign(responses, httpLayerRefusals(path, method === 'post', responses));
      if (responses['401']) responses['401'].headers = { 'WWW-Authenticate': WWW_AUTHENTICATE, ...responses['401'].headers };
      responses['429'] ??= problemResponse('Too many requests from this client.', { 'Retry-After': RETRY_AFTER });
      responses['503'] ??= problemResponse('A datastore did not answer within 10 s (`…/service-unavailable`); nothing may be assumed applied: send it again after Retry-After.', { 'Retry-After': RETRY_AFTER });
      if (method === 'post' || method === 'delete') responses['408'] ??= problemResponse('The body did not arrive in full within 10 s (`…/request-timeout`).');
      for (const response of Object.values(responses) as Json[]) response.headers = { 'Cache-Control': NO_STORE, 'X-Request-Id': REQUEST_ID_HEADER, ...response.headers };
      if (method === 'post' && path === `${basePath}/users`) {
        responses['413'] ??= problemResponse('The body is larger than 64 KiB.');
        responses['415'] ??= problemResponse('The body is not JSON.');
        // Every answer says what the request came to; a refusal changed nothing. A 5xx carries it only
        // when nothing was applied for sure (an instance shutting down): otherwise a write may yet land.
        const outcome = (values: string[], description: string) => ({ description, required: true, schema: { type: 'string', enum: values } });
        for (const [status, response] of Object.entries(responses) as [string, Json][]) {
          const code = Number(status);
          const header =
            code === 201
              ? outcome(['created'], 'The user was created.')
              : code === 200
                ? outcome(['updated', 'unchanged'], 'Whether the request changed the user (a reactivation is `updated`).')
                : code < 500
                  ? outcome(['unchanged'], 'A refusal changes nothing.')
                  : { description: '`unchanged` when the instance refused the request unapplied (shutting down); absent otherwise: a write may yet land.', schema: { type: 'string', enum: ['unchanged'] } };
          response.headers = { ...response.headers, 'X-Connect-Outcome': header };
        }
        if (responses['201']) responses['201'].headers = { ...responses['201'].headers, Location: { description: "The user's URL.", schema: { type: 'string', format: 'uri' } } };
      }
    }
  }
  doc.paths = { ...doc.paths, ...operationalPaths() };
  doc.tags = [...(doc.tags ?? []), { name: 'operations', description: 'Health and metrics, for load balancers, orchestrators and Prometheus' }];
  return doc;
}
