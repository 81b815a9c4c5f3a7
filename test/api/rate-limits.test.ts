import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getToken, getUser, http, postUser, registerTestClient, requestToken, startTestApi, uniquePrefix, type TestApi } from '../support/harness.ts';
import { startPrivateRedis, type RunningService } from '@connect/local-services';

const body = () => ({ provider_email: `${randomUUID()}@example.com`, external_provider_id: randomUUID() });

describe('Rate limits, shared across instances through Redis', () => {
  let a: TestApi;
  let b: TestApi;
  beforeAll(async () => {
    const prefix = uniquePrefix('ratelimit');
    // Two instances of one deployment: same public URL (so the same token issuer), same Redis prefix.
    const env = { PUBLIC_BASE_URL: 'https://connect.example.com', QUEUE_PREFIX: prefix, RATE_LIMIT_PER_CLIENT_PER_MINUTE: '5', RATE_LIMIT_TOKEN_PER_IP_PER_MINUTE: '4' };
    a = await startTestApi({ label: 'ratelimit', env });
    b = await startTestApi({ env, mongoUrl: a.env.MONGO_URL });
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
  });

  it('per OAuth client on /users: the 6th request in a minute, on either instance, is 429 problem+json with Retry-After and RateLimit-* headers', async () => {
    const clinic = await registerTestClient(a.models);
    const other = await registerTestClient(a.models);
    const token = await getToken(a, clinic);
    const otherToken = await getToken(b, other);
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) statuses.push((await postUser(i % 2 ? a : b, token, body())).status);
    expect(statuses).toEqual([201, 201, 201, 201, 201]);
    const limited = await postUser(a, token, body());
    expect(limited.status).toBe(429);
    expect(limited.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(limited.body.type).toMatch(/\/rate-limited$/);
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(limited.headers.get('ratelimit-limit')).toBe('5');
    expect(limited.headers.get('ratelimit-remaining')).toBe('0');
    // Another client has its own bucket.
    expect((await postUser(b, otherToken, body())).status).toBe(201);
  });

  it('one budget per client across the /users routes: reads spend what writes left, on either instance (each route had a budget of its own)', async () => {
    const clinic = await registerTestClient(a.models);
    const token = await getToken(a, clinic);
    const created = body();
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) statuses.push((await postUser(i % 2 ? a : b, token, i === 0 ? created : body())).status);
    for (let i = 0; i < 2; i++) statuses.push((await getUser(i % 2 ? a : b, token, created.external_provider_id)).status);
    expect(statuses).toEqual([201, 201, 201, 200, 200]);
    const read = await getUser(a, token, created.external_provider_id);
    expect(read.status).toBe(429);
    expect(read.headers.get('ratelimit-remaining')).toBe('0');
    expect((await postUser(b, token, body())).status).toBe(429);
  });

  it('requests refused as malformed or invalid (400) spend the client\'s budget too: counted before the body is read', async () => {
    const clinic = await registerTestClient(a.models);
    const token = await getToken(a, clinic);
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) statuses.push((await postUser(a, token, { provider_email: 'not an email', external_provider_id: randomUUID() })).status);
    for (let i = 0; i < 2; i++) statuses.push((await postUser(b, token, '{"provider_email":')).status);
    expect(statuses).toEqual([400, 400, 400, 400, 400]);
    expect((await postUser(a, token, body())).status).toBe(429);
  });
});

describe('TRUST_PROXY: the token endpoint\'s per-IP limit behind a load balancer', () => {
  let behind: TestApi;
  let direct: TestApi;
  const from = (ip: string) => ({ 'x-forwarded-for': ip });
  beforeAll(async () => {
    const env = { PUBLIC_BASE_URL: 'https://connect.example.com', RATE_LIMIT_TOKEN_PER_IP_PER_MINUTE: '2' };
    // The test's requests come from 127.0.0.1: the "load balancer" this instance trusts.
    behind = await startTestApi({ label: 'trustproxy', env: { ...env, QUEUE_PREFIX: uniquePrefix('trustproxy'), TRUST_PROXY: '127.0.0.1' } });
    direct = await startTestApi({ env: { ...env, QUEUE_PREFIX: uniquePrefix('notrust') }, mongoUrl: behind.env.MONGO_URL });
  });
  afterAll(async () => {
    await behind?.close();
    await direct?.close();
  });

  it('with TRUST_PROXY, each client IP named by the trusted proxy has its own bucket; without it, X-Forwarded-For changes nothing', async () => {
    const clinic = await registerTestClient(behind.models);
    const statuses = async (api: TestApi, ip: string, n: number) => {
      const out: number[] = [];
      for (let i = 0; i < n; i++) out.push((await requestToken(api, clinic, {}, from(ip))).status);
      return out;
    };
    expect(await statuses(behind, '203.0.113.1', 3)).toEqual([200, 200, 429]);
    expect(await statuses(behind, '203.0.113.2', 1)).toEqual([200]);
    // Not trusted: the header is the caller's word, so it cannot buy a fresh bucket.
    expect(await statuses(direct, '203.0.113.1', 2)).toEqual([200, 200]);
    expect(await statuses(direct, '203.0.113.9', 1)).toEqual([429]);
  });
});

describe('Rate limit per IP on the token endpoint, shared across instances', () => {
  let a: TestApi;
  let b: TestApi;
  beforeAll(async () => {
    // A prefix of its own: this bucket starts empty, whatever other tests did from this IP.
    const env = { PUBLIC_BASE_URL: 'https://connect.example.com', QUEUE_PREFIX: uniquePrefix('ratelimit_ip'), RATE_LIMIT_TOKEN_PER_IP_PER_MINUTE: '4' };
    a = await startTestApi({ label: 'ratelimit_ip', env });
    b = await startTestApi({ env, mongoUrl: a.env.MONGO_URL });
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
  });

  it('the 5th token request in a minute from one IP, on either instance, is 429 in RFC 6749 form; the first 4 are 200', async () => {
    const clinic = await registerTestClient(a.models);
    const answers = [];
    for (let i = 0; i < 5; i++) answers.push(await requestToken(i % 2 ? a : b, clinic));
    expect(answers.map((r) => r.status)).toEqual([200, 200, 200, 200, 429]);
    const limited = answers[4]!;
    expect(limited.body).toEqual({ error: 'temporarily_unavailable', error_description: expect.stringMatching(/retry after/) });
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);
    // Another client from the same IP shares the IP's bucket: still refused.
    expect((await requestToken(a, await registerTestClient(a.models))).status).toBe(429);
  });
});

describe('Rate limits of 100 or more are leased from Redis in 1 % slices', () => {
  let a: TestApi;
  let b: TestApi;
  beforeAll(async () => {
    const env = { PUBLIC_BASE_URL: 'https://connect.example.com', QUEUE_PREFIX: uniquePrefix('ratelease'), RATE_LIMIT_PER_CLIENT_PER_MINUTE: '300' };
    a = await startTestApi({ label: 'ratelease', env });
    b = await startTestApi({ env, mongoUrl: a.env.MONGO_URL });
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
  });

  it('two instances together never grant more than the limit, lose at most a slice each, and count in Redis per slice', async () => {
    const clinic = await registerTestClient(a.models);
    const token = await getToken(a, clinic);
    const statuses: number[] = [];
    // Bursts of 20 at once on each instance: concurrent requests share one lease.
    for (let burst = 0; burst < 9; burst++) {
      const answers = await Promise.all(
        Array.from({ length: 40 }, (_, i) => http(`${(i % 2 ? a : b).baseUrl}/users/none-${burst}-${i}`, { headers: { authorization: `Bearer ${token}`, 'x-nabla-api-version': '2026-03-23' } })),
      );
      statuses.push(...answers.map((r) => r.status));
    }
    const granted = statuses.filter((s) => s === 404).length;
    const refused = statuses.filter((s) => s === 429).length;
    console.log(`[leased limit 300/min] 360 requests on two instances: ${granted} granted, ${refused} refused`);
    expect(granted + refused, JSON.stringify(statuses.filter((s) => s !== 404 && s !== 429))).toBe(360);
    expect(granted).toBeLessThanOrEqual(300);
    expect(granted).toBeGreaterThanOrEqual(300 - 2 * 3); // each instance may strand one slice of 3
    // The shared counter moved in slices: one Redis call per 3 requests, not per request.
    const key = `${a.env.QUEUE_PREFIX}:rate-limit:group:client:${clinic.client._id}/users`;
    const counted = Number(await a.deps.redis.get(key));
    expect(counted).toBeGreaterThanOrEqual(300);
    expect(counted % 3).toBe(0);
  });
});

describe('Rate limiting while Redis is down', () => {
  let redis: RunningService;
  let api: TestApi;
  beforeAll(async () => {
    redis = await startPrivateRedis();
    api = await startTestApi({ label: 'ratelimit-down', env: { REDIS_URL: redis.url, RATE_LIMIT_PER_CLIENT_PER_MINUTE: '1000' } });
  });
  afterAll(async () => {
    await api?.close();
    await redis?.stop();
  });

  it('lets requests through: POST /users keeps working', async () => {
    const clinic = await registerTestClient(api.models);
    const token = await getToken(api, clinic);
    await redis.stop();
    const res = await postUser(api, token, body());
    expect(res.status).toBe(201);
    expect((await http(`${api.origin}/readyz`, { headers: { 'x-request-id': 'readyz-down' } })).status).toBe(503);
    // A probe that fails is logged at info, as any refusal (a successful one only at debug: logging.test.ts).
    await expect.poll(() => api.logs.lines.map((l) => JSON.parse(l) as { reqId?: string; level: number; msg: string }).find((l) => l.reqId === 'readyz-down' && l.msg === 'request completed')?.level).toBe(30);
  });
});
