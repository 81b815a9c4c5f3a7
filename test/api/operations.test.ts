import { randomUUID } from 'node:crypto';
import { Validator } from '@seriousme/openapi-schema-validator';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getToken, http, postUser, registerTestClient, startTestApi, type TestApi } from '../support/harness.ts';
import { startPrivateRedis, type RunningService } from '@connect/local-services';

const ADMIN_TOKEN = 'admin-token-for-tests-0123456789';
let api: TestApi;

beforeAll(async () => {
  // One target, so the dashboard shows its delivery queue (one queue per target).
  api = await startTestApi({ label: 'ops', env: { ADMIN_TOKEN, DOWNSTREAM_TARGETS: JSON.stringify([{ name: 'dictation', url: 'http://127.0.0.1:9/callbacks', secrets: ['ops-secret'] }]) } });
});
afterAll(async () => api?.close());

describe('GET /openapi.json: OpenAPI 3.1 generated from the zod schemas', () => {
  it('is a valid OpenAPI 3.1 document with every route, the security scheme and the version header', async () => {
    const res = await http(`${api.origin}/openapi.json`);
    expect(res.status).toBe(200);
    const doc = res.body;
    expect(doc.openapi).toBe('3.1.0');
    const validator = new Validator();
    const result = await validator.validate(doc);
    expect(result.errors ?? []).toEqual([]);
    expect(result.valid).toBe(true);
    const paths = Object.keys(doc.paths);
    expect(paths).toEqual(expect.arrayContaining([`${api.deps.config.basePath}/oauth/token`, `${api.deps.config.basePath}/users`, `${api.deps.config.basePath}/users/{external_provider_id}`]));
    const post = doc.paths[`${api.deps.config.basePath}/users`].post;
    expect(post.security).toEqual([{ bearer: [] }]);
    expect(post.parameters.map((p: { name: string }) => p.name)).toContain('x-nabla-api-version');
    expect(Object.keys(post.responses)).toEqual(expect.arrayContaining(['200', '201', '400', '401', '409']));
    expect(doc.components.securitySchemes.bearer).toMatchObject({ type: 'http', scheme: 'bearer' });
    // The request schema is the validating one: the enums and limits are in it.
    const json = JSON.stringify(doc);
    expect(json).toContain('PHYSICAL_MEDICINE_AND_REHABILITATION');
    expect(json).toContain('VIETNAMESE_VN');
    expect(json).toContain('"maxLength":256');
    expect(json).toContain('email-conflict');
  });

  it('says what the wire carries: problem+json errors (RFC 6749 JSON on the token endpoint), form token bodies, the version as header or query, and the answer headers', async () => {
    const doc = (await http(`${api.origin}/openapi.json`)).body;
    const base = api.deps.config.basePath;
    const post = doc.paths[`${base}/users`].post;
    for (const status of ['400', '401', '404', '409', '413', '415', '429']) {
      expect(Object.keys(post.responses[status].content), status).toEqual(['application/problem+json']);
      expect(post.responses[status].content['application/problem+json'].schema).toEqual({ $ref: '#/components/schemas/Problem' });
    }
    expect(doc.components.schemas.Problem.required).toEqual(['type', 'title', 'status', 'detail']);
    expect(Object.keys(post.responses['201'].headers).sort()).toEqual(['Cache-Control', 'Location', 'X-Connect-Outcome', 'X-Nabla-Api-Version', 'X-Request-Id']);
    expect(post.responses['201'].headers['X-Connect-Outcome'].schema.enum).toEqual(['created']);
    expect(post.responses['200'].headers['X-Connect-Outcome'].schema.enum).toEqual(['updated', 'unchanged']);
    // Refusals carry it too (a generated client exposes it on errors): they change nothing.
    for (const status of ['400', '401', '404', '405', '408', '409', '413', '415', '429']) {
      expect(post.responses[status].headers['X-Connect-Outcome'], status).toMatchObject({ required: true, schema: { enum: ['unchanged'] } });
    }
    expect(post.responses['503'].headers['X-Connect-Outcome'].required).toBeUndefined();
    expect(doc.components.schemas.ProviderUserWithSync.properties.sync.items.properties.last_attempt_at.anyOf).toContainEqual({ type: 'string', format: 'date-time' });
    expect(post.responses['429'].headers['Retry-After']).toBeDefined();
    expect(post.parameters.filter((p: { in: string }) => p.in === 'query').map((p: { name: string }) => p.name)).toEqual(['nabla-api-version']);
    expect(doc.paths[`${base}/users/{external_provider_id}`].get.responses['404'].content['application/problem+json']).toBeDefined();
    // What any route can answer besides its own (an unknown version, a datastore down, a method it does not take) is listed.
    for (const [path, ops] of Object.entries(doc.paths as Record<string, Record<string, { responses: Record<string, { content?: Record<string, unknown>; headers?: Record<string, unknown> }> }>>)) {
      if (!path.startsWith(base) || path.endsWith('/oauth/token')) continue;
      for (const [method, op] of Object.entries(ops)) {
        for (const status of ['400', '405', '429', '503']) expect(op.responses[status]?.content?.['application/problem+json'], `${method} ${path} ${status}`).toBeDefined();
        expect(op.responses['503']!.headers!['Retry-After'], `${method} ${path}`).toBeDefined();
      }
    }

    const token = doc.paths[`${base}/oauth/token`].post;
    expect(Object.keys(token.requestBody.content).sort()).toEqual(['application/json', 'application/x-www-form-urlencoded']);
    expect(Object.keys(token.responses['401'].content)).toEqual(['application/json']);
    expect(token.responses['429']).toBeDefined();
    expect(Object.keys(token.responses['503'].content)).toEqual(['application/json']);
    expect(token.responses['200'].headers['Cache-Control']).toBeDefined();
    // No response is left with Fastify's placeholder description.
    expect(JSON.stringify(doc)).not.toContain('Default Response');
  });

  it('is one a generated client can trust: stable operationIds, each operation\'s own API versions (a preview one requires x-nabla-next), the HTTP layer\'s refusals, security, formats (an OpenAPI audit found each missing or wrong)', async () => {
    const doc = (await http(`${api.origin}/openapi.json`)).body;
    const base = api.deps.config.basePath;
    const ops = [
      ['post', `${base}/oauth/token`, 'requestToken', ['2026-02-13', '2026-03-23', 'x-nabla-next']],
      ['post', `${base}/users`, 'upsertUser', ['2026-03-23', 'x-nabla-next']],
      ['get', `${base}/users/{external_provider_id}`, 'getUser', ['2026-03-23', 'x-nabla-next']],
      ['get', `${base}/users`, 'listUsers', ['x-nabla-next']],
      ['delete', `${base}/users/{external_provider_id}`, 'deactivateUser', ['x-nabla-next']],
    ] as const;
    for (const [method, path, operationId, versions] of ops) {
      const op = doc.paths[path][method];
      expect(op.operationId, `${method} ${path}`).toBe(operationId);
      const header = op.parameters.find((p: { in: string; name: string }) => p.in === 'header' && p.name === 'x-nabla-api-version');
      const query = op.parameters.find((p: { in: string; name: string }) => p.in === 'query' && p.name === 'nabla-api-version');
      expect(header.schema.enum, operationId).toEqual(versions);
      expect(query.schema.enum, operationId).toEqual(versions);
      expect(header.required === true, operationId).toBe(versions.length === 1);
      // A request line and headers over 16 KiB are refused on every path; a body route refuses a bad Expect.
      expect(op.responses['431']?.content?.['application/problem+json'], operationId).toBeDefined();
      expect(op.responses['417'] !== undefined, operationId).toBe(method === 'post');
      expect(op.responses['414'] !== undefined, operationId).toBe(path.includes('{'));
    }
    expect(doc.security).toEqual([{ bearer: [] }]);
    expect(doc.paths[`${base}/oauth/token`].post.security).toEqual([]);
    expect(doc.paths[`${base}/oauth/token`].post.responses['405'].content['application/problem+json']).toBeDefined();
    expect(doc.paths[`${base}/users`].post.responses['401'].headers['WWW-Authenticate']).toBeDefined();
    expect(doc.components.schemas.CallbackBody.properties.occurred_at).toEqual({ type: 'string', format: 'date-time' });
    expect(doc.components.schemas.TokenResponse.properties.expires_in.minimum).toBe(1);
  });

  it('has one component schema per type: no input copy beside its output, every reference resolves, the request body is the accepting schema', async () => {
    const doc = (await http(`${api.origin}/openapi.json`)).body;
    const schemas = doc.components.schemas as Record<string, Record<string, any>>;
    expect(Object.keys(schemas).filter((name) => name.endsWith('Input'))).toEqual([]);
    expect(Object.keys(schemas)).toEqual(expect.arrayContaining(['SpecialtyKind', 'SpeechLocale', 'UserStatus', 'UpsertProviderUserRequest', 'ProviderUser', 'TokenRequest', 'TokenResponse', 'CallbackBody']));
    const refs = [...JSON.stringify(doc).matchAll(/"\$ref":"#\/components\/schemas\/([^"]+)"/g)].map((m) => m[1]!);
    for (const name of refs) expect(schemas, name).toHaveProperty(name);
    // An enum is written once, under its name.
    expect(JSON.stringify(doc).split('PHYSICAL_MEDICINE_AND_REHABILITATION').length - 1).toBe(1);
    const post = doc.paths[`${api.deps.config.basePath}/users`].post;
    expect(post.requestBody.content['application/json'].schema).toEqual({ $ref: '#/components/schemas/UpsertProviderUserRequest' });
    expect(schemas.UpsertProviderUserRequest!.properties.provider_email).toMatchObject({ type: 'string', maxLength: 320, format: 'idn-email' });
    expect(doc.servers[0].description).toMatch(/paths carry the base path/);
  });

  it('documents the operational endpoints (/livez, /readyz, /metrics) as they answer, with no token, and the request header X-Request-Id on every operation (an OpenAPI audit found them missing)', async () => {
    const doc = (await http(`${api.origin}/openapi.json`)).body;
    expect((await new Validator().validate(doc)).valid).toBe(true);
    for (const [path, operationId] of [['/livez', 'getLivez'], ['/readyz', 'getReadyz'], ['/metrics', 'getMetrics']] as const) {
      const op = doc.paths[path]?.get;
      expect(op, path).toMatchObject({ operationId, security: [], tags: ['operations'] });
      // What the endpoint really answers is what the document says it answers.
      const res = await fetch(`${api.origin}${path}`);
      const documented = op.responses[String(res.status)];
      expect(documented, `${path} answered ${res.status}`).toBeDefined();
      const type = res.headers.get('content-type')!.split(';')[0]!;
      expect(Object.keys(documented.content), path).toEqual([type]);
      if (type === 'application/json') {
        const body = (await res.json()) as Record<string, unknown>;
        const schema = documented.content[type].schema;
        expect(Object.keys(body).sort(), path).toEqual(Object.keys(schema.properties).sort());
        expect(schema.properties.status.enum).toContain(body.status);
      } else {
        expect(await res.text()).toMatch(/^# HELP /m);
      }
      // Every GET answers HEAD too, as the description says.
      expect((await fetch(`${api.origin}${path}`, { method: 'HEAD' })).status, `HEAD ${path}`).toBe(res.status);
    }
    expect(doc.paths['/readyz'].get.responses['503'].content['application/problem+json']).toBeDefined();
    expect(doc.tags.map((t: { name: string }) => t.name)).toContain('operations');
    expect(doc.info.description).toMatch(/HEAD/);

    for (const [path, ops] of Object.entries(doc.paths as Record<string, Record<string, { parameters?: { in: string; name: string; schema: { pattern: string } }[] }>>)) {
      for (const [method, op] of Object.entries(ops)) {
        const header = op.parameters?.find((p) => p.in === 'header' && p.name.toLowerCase() === 'x-request-id');
        expect(header, `${method} ${path}`).toBeDefined();
        // The pattern is the one the server keeps an id by: a matching id comes back, another is replaced.
        const pattern = new RegExp(header!.schema.pattern);
        expect(pattern.test('req-1.A_b')).toBe(true);
        expect(pattern.test('not an id')).toBe(false);
      }
    }
    const kept = await fetch(`${api.origin}/livez`, { headers: { 'x-request-id': 'req-1.A_b' } });
    expect(kept.headers.get('x-request-id')).toBe('req-1.A_b');
    const replaced = await fetch(`${api.origin}/livez`, { headers: { 'x-request-id': 'not an id' } });
    expect(replaced.headers.get('x-request-id')).not.toBe('not an id');
  });

  it('/docs serves the documentation page', async () => {
    const res = await fetch(`${api.origin}/docs`, { redirect: 'follow' });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/text\/html/);
  });
});

describe('GET /metrics: Prometheus text', () => {
  it('has request latency by route and status, upsert outcomes and queue depths', async () => {
    const clinic = await registerTestClient(api.models);
    // Every outcome is there from the start at 0 (a series born at 1 shows no increase to an alert).
    const fresh = (await http(`${api.origin}/metrics`)).text as string;
    expect(fresh).toMatch(/connect_provider_user_upserts_total\{outcome="reactivated"\} \d+/);
    expect(fresh).toMatch(/connect_provider_user_deactivations_total\{outcome="not_found"\} \d+/);
    const token = await getToken(api, clinic);
    const id = randomUUID();
    await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id });
    await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id });
    await postUser(api, token, { provider_email: `x${id}@example.com`, external_provider_id: id });
    const res = await http(`${api.origin}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/text\/plain/);
    expect(res.text).toMatch(/connect_http_request_duration_seconds_count\{method="POST",route="\/v1\/connect\/server\/users",status_code="201"\} 1/);
    // Buckets past the 10 s request deadline: a datastore outage's answers are not all "over 2.5 s".
    expect(res.text).toMatch(/connect_http_request_duration_seconds_bucket\{le="10",method="POST",route="\/v1\/connect\/server\/users",status_code="201"\} 1/);
    expect(res.text).toMatch(/connect_provider_user_upserts_total\{outcome="created"\} 1/);
    expect(res.text).toMatch(/connect_provider_user_upserts_total\{outcome="unchanged"\} 1/);
    expect(res.text).toMatch(/connect_provider_user_upserts_total\{outcome="conflict"\} 1/);
    expect(res.text).toMatch(/connect_queue_jobs\{queue="user-events",state="waiting"\} \d+/);
    expect(res.text).toContain('connect_outbox_unpublished_events');
  });
});

describe('/admin/queues: the queue dashboard, only with ADMIN_TOKEN', () => {
  it('401 without or with a wrong token; 200 with it as Bearer or as the Basic password', async () => {
    const none = await http(`${api.origin}/admin/queues`);
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toMatch(/^Basic/);
    expect((await http(`${api.origin}/admin/queues`, { headers: { authorization: 'Bearer wrong-token-wrong-token-00' } })).status).toBe(401);
    const bearer = await http(`${api.origin}/admin/queues`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    expect(bearer.status).toBe(200);
    expect(bearer.text).toMatch(/<html/i);
    const basic = await http(`${api.origin}/admin/queues/api/queues`, { headers: { authorization: `Basic ${Buffer.from(`ops:${ADMIN_TOKEN}`).toString('base64')}` } });
    expect(basic.status).toBe(200);
    expect(basic.body.queues.map((q: { name: string }) => q.name).sort()).toEqual(['deliveries.dictation', 'user-events']);
    expect((await http(`${api.origin}/admin/queues/api/queues`)).status).toBe(401);
  });

  it('the token must be the whole credential: trailing text after it is refused', async () => {
    expect((await http(`${api.origin}/admin/queues/api/queues`, { headers: { authorization: `Bearer ${ADMIN_TOKEN} extra` } })).status).toBe(401);
    expect((await http(`${api.origin}/admin/queues/api/queues`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).status).toBe(200);
  });

  it('changes from another site are refused 403 (CSRF with cached credentials), from its own pages and from tools they pass', async () => {
    const auth = { authorization: `Bearer ${ADMIN_TOKEN}` };
    const before = await api.deps.queue.getJobCounts();
    const forged = await http(`${api.origin}/admin/queues/api/queues/user-events/add`, {
      method: 'POST',
      headers: { ...auth, origin: 'https://evil.example', 'content-type': 'application/x-www-form-urlencoded' },
      body: 'name=csrf&data=hello',
    });
    expect(forged.status).toBe(403);
    expect(forged.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    const resume = `${api.origin}/admin/queues/api/queues/deliveries.dictation/resume`;
    expect((await http(resume, { method: 'PUT', headers: { ...auth, 'sec-fetch-site': 'cross-site' } })).status).toBe(403);
    expect((await http(resume, { method: 'PUT', headers: { ...auth, 'sec-fetch-site': 'same-site' } })).status).toBe(403);
    expect(await api.deps.queue.getJobCounts()).toEqual(before);
    // The dashboard's own page (same origin), and curl (neither header): allowed.
    expect((await http(resume, { method: 'PUT', headers: { ...auth, 'sec-fetch-site': 'same-origin', origin: api.origin } })).status).toBeLessThan(300);
    expect((await http(resume, { method: 'PUT', headers: { ...auth, origin: api.origin } })).status).toBeLessThan(300);
    expect((await http(resume, { method: 'PUT', headers: auth })).status).toBeLessThan(300);
    // Reading stays possible from anywhere the credentials are (a GET changes nothing).
    expect((await http(`${api.origin}/admin/queues/api/queues`, { headers: { ...auth, 'sec-fetch-site': 'cross-site' } })).status).toBe(200);
  });

  it('is not mounted at all without ADMIN_TOKEN', async () => {
    const plain = await startTestApi({ label: 'ops-noadmin' });
    try {
      expect((await http(`${plain.origin}/admin/queues`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).status).toBe(404);
    } finally {
      await plain.close();
    }
  });
});

describe('/livez and /readyz', () => {
  let redis: RunningService;
  let own: TestApi;
  beforeAll(async () => {
    redis = await startPrivateRedis();
    own = await startTestApi({ label: 'ops-ready', env: { REDIS_URL: redis.url, ADMIN_TOKEN } });
  });
  afterAll(async () => {
    await own?.close();
    await redis?.stop();
  });

  it('readyz is 503 naming the datastore when Redis does not answer, and livez stays 200', async () => {
    expect((await http(`${own.origin}/readyz`)).status).toBe(200);
    await redis.stop();
    const res = await http(`${own.origin}/readyz`);
    expect(res.status).toBe(503);
    expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(res.body.checks).toEqual({ mongodb: 'ok', redis: 'down' });
    expect((await http(`${own.origin}/livez`)).status).toBe(200);
    // The queue dashboard's own API: a problem+json 503, not the Redis client's words in a 500.
    const board = await http(`${own.origin}/admin/queues/api/queues`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    expect(board.status).toBe(503);
    expect(board.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(board.headers.get('retry-after')).toMatch(/^[1-9]\d*$/);
    expect(board.body).toMatchObject({ status: 503, type: expect.stringMatching(/\/service-unavailable$/) });
    expect(board.text).not.toMatch(/Stream|enableOfflineQueue|Connection is closed|ERRORS\./);
  });
});
