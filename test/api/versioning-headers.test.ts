import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getToken, http, postUser, rawHttp, registerTestClient, requestToken, startTestApi, type TestApi } from '../support/harness.ts';

let api: TestApi;
let token: string;
let pinnedOld: string;
let id: string;

beforeAll(async () => {
  api = await startTestApi({ label: 'versioning' });
  token = await getToken(api, await registerTestClient(api.models));
  // An organization pinned to the version before POST /users existed.
  pinnedOld = await getToken(api, await registerTestClient(api.models, { apiVersion: '2026-02-13' }));
  id = randomUUID();
  expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
});
afterAll(async () => api?.close());

const get = (bearer: string, headers: Record<string, string> = {}, query = '') =>
  http(`${api.baseUrl}/users/${encodeURIComponent(id)}${query}`, { headers: { authorization: `Bearer ${bearer}`, ...headers } });

describe('docs/contract.md versioning: responses carry the version they were served under', () => {
  it('a token answer carries the pinned version of the organization when none is asked (it said the default, 2026-03-23, to an organization pinned to 2026-02-13)', async () => {
    const pinnedClient = await registerTestClient(api.models, { apiVersion: '2026-02-13' });
    const answer = await requestToken(api, pinnedClient);
    expect(answer.status).toBe(200);
    expect(answer.headers.get('x-nabla-api-version')).toBe('2026-02-13');
    expect((await requestToken(api, pinnedClient, {}, { 'x-nabla-api-version': 'x-nabla-next' })).headers.get('x-nabla-api-version')).toBe('x-nabla-next');
  });

  it('a token refusal of a body it could not read (broken JSON, over the limit) carries the version asked, else 2026-03-23, as its other refusals do; a malformed version none', async () => {
    const send = (body: string, headers: Record<string, string> = {}) => http(api.tokenUrl, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
    for (const body of ['{"grant_type":', JSON.stringify({ client_assertion: 'x'.repeat(70_000) })]) {
      const refused = await send(body);
      expect(refused.status).toBe(400);
      expect(refused.body.error).toBe('invalid_request');
      expect(refused.headers.get('x-nabla-api-version')).toBe('2026-03-23');
      expect((await send(body, { 'x-nabla-api-version': 'x-nabla-next' })).headers.get('x-nabla-api-version')).toBe('x-nabla-next');
      expect((await send(body, { 'x-nabla-api-version': 'yesterday' })).headers.get('x-nabla-api-version')).toBeNull();
    }
    // Refused in the handler, as before.
    expect((await send('{}')).headers.get('x-nabla-api-version')).toBe('2026-03-23');
  });

  it('GET /users/{id} echoes X-Nabla-Api-Version: the one asked by header, by query, or else the pinned one', async () => {
    expect((await get(token, { 'x-nabla-api-version': 'x-nabla-next' })).headers.get('x-nabla-api-version')).toBe('x-nabla-next');
    expect((await get(token, {}, '?nabla-api-version=2026-02-13')).headers.get('x-nabla-api-version')).toBe('2026-02-13');
    const pinned = await get(token);
    expect(pinned.status).toBe(200);
    expect(pinned.headers.get('x-nabla-api-version')).toBe('2026-03-23');
  });

  it('the header wins over the query parameter when both are sent', async () => {
    const both = await get(token, { 'x-nabla-api-version': '2026-03-23' }, '?nabla-api-version=x-nabla-next');
    expect(both.status).toBe(200);
    expect(both.headers.get('x-nabla-api-version')).toBe('2026-03-23');
    // And it decides what exists: POST /users (from 2026-03-23) with a too-old query but a good header is served.
    const body = { provider_email: `${randomUUID()}@example.com`, external_provider_id: randomUUID() };
    const post = (headers: Record<string, string>, query: string) =>
      http(`${api.baseUrl}/users${query}`, { method: 'POST', headers: { authorization: `Bearer ${pinnedOld}`, 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
    const queryOnly = await post({}, '?nabla-api-version=2026-02-13');
    expect(queryOnly.status).toBe(404);
    const headerWins = await post({ 'x-nabla-api-version': '2026-03-23' }, '?nabla-api-version=2026-02-13');
    expect(headerWins.status, headerWins.text).toBe(201);
    expect(headerWins.headers.get('x-nabla-api-version')).toBe('2026-03-23');
    // Asked twice in the query (no header): ambiguous, 400, like two headers; a repeated
    // query parameter beside a header does not matter (the header decides).
    const twice = await get(token, {}, '?nabla-api-version=2026-03-23&nabla-api-version=bogus');
    expect(twice.status).toBe(400);
    expect(twice.body.detail).toMatch(/asked 2 times in the query/);
    expect((await get(token, { 'x-nabla-api-version': '2026-03-23', 'x-extra': '1' }, '?nabla-api-version=2026-03-23&nabla-api-version=x')).status).toBe(200);
    // A malformed header is not rescued by a good query.
    expect((await get(token, { 'x-nabla-api-version': 'yesterday' }, '?nabla-api-version=2026-03-23')).status).toBe(400);
  });

  it('the header sent twice: 400 saying it holds two values (not "malformed"), whether the versions agree or not, and even beside a good query', async () => {
    const known = /Known: 2026-02-13, 2026-03-23, x-nabla-next\.$/;
    for (const [first, second] of [['2026-03-23', '2026-02-13'], ['2026-03-23', '2026-03-23']]) {
      const lines = `GET ${new URL(api.baseUrl).pathname}/users/${encodeURIComponent(id)}?nabla-api-version=2026-03-23 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${token}\r\nX-Nabla-Api-Version: ${first}\r\nX-Nabla-Api-Version: ${second}\r\nConnection: close\r\n\r\n`;
      const twice = await rawHttp(Number(new URL(api.baseUrl).port), lines);
      expect(twice.status, twice.body).toBe(400);
      const problem = JSON.parse(twice.body) as { type: string; detail: string };
      expect(problem.type).toMatch(/\/unsupported-api-version$/);
      expect(problem.detail).toMatch(/^The x-nabla-api-version header holds 2 values \(a header sent more than once arrives joined by commas\); send it once, as YYYY-MM-DD\. /);
      expect(problem.detail).toMatch(known);
    }
    // One header with a list in it is refused the same way (three values).
    const list = await get(token, { 'x-nabla-api-version': '2026-03-23,2026-02-13,x-nabla-next' });
    expect(list.status).toBe(400);
    expect(list.body.detail).toMatch(/^The x-nabla-api-version header holds 3 values /);
  });

  it('answers given before the version is settled (401, 405, unknown route) echo a known version the client asked for, and only that', async () => {
    const anon = (path: string, headers: Record<string, string>, method = 'GET') => http(`${api.baseUrl}${path}`, { method, headers });
    const noToken = await anon(`/users/${id}`, { 'x-nabla-api-version': '2026-03-23' });
    expect(noToken.status).toBe(401);
    expect(noToken.headers.get('x-nabla-api-version')).toBe('2026-03-23');
    const badToken = await anon(`/users/${id}?nabla-api-version=x-nabla-next`, { authorization: 'Bearer not.a.token' });
    expect(badToken.status).toBe(401);
    expect(badToken.headers.get('x-nabla-api-version')).toBe('x-nabla-next');
    const unknownRoute = await anon('/no-such-route', { 'x-nabla-api-version': '2026-02-13' });
    expect(unknownRoute.status).toBe(404);
    expect(unknownRoute.headers.get('x-nabla-api-version')).toBe('2026-02-13');
    const wrongMethod = await anon('/users', { 'x-nabla-api-version': '2026-03-23' }, 'PUT');
    expect(wrongMethod.status).toBe(405);
    expect(wrongMethod.headers.get('x-nabla-api-version')).toBe('2026-03-23');
    // Nothing to echo: no version asked (the organization is not known yet), or one that is not a version.
    expect((await anon(`/users/${id}`, {})).headers.get('x-nabla-api-version')).toBeNull();
    expect((await anon(`/users/${id}`, { 'x-nabla-api-version': '2031-01-01' })).headers.get('x-nabla-api-version')).toBeNull();
    // Outside the base path nothing is versioned.
    const livez = await http(`${api.origin}/livez`, { headers: { 'x-nabla-api-version': '2026-03-23' } });
    expect(livez.status).toBe(200);
    expect(livez.headers.get('x-nabla-api-version')).toBeNull();
  });
});
