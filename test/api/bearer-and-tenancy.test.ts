import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AccessTokens } from '@connect/api';
import { disableClient } from '@connect/shared';
import { getToken, getUser, http, postUser, registerTestClient, startTestApi, type TestApi, type TestClient } from '../support/harness.ts';

let api: TestApi;
let clinicA: TestClient;
let clinicB: TestClient;
let tokenA: string;
let tokenB: string;

beforeAll(async () => {
  // A short client cache so that "a disabled client is locked out within 60 s" is observable in a test.
  api = await startTestApi({ label: 'bearer', clientCacheTtlMs: 500 });
  clinicA = await registerTestClient(api.models, { name: 'A' });
  clinicB = await registerTestClient(api.models, { name: 'B' });
  tokenA = await getToken(api, clinicA);
  tokenB = await getToken(api, clinicB);
});
afterAll(async () => api?.close());

const body = () => ({ provider_email: `${randomUUID()}@example.com`, external_provider_id: randomUUID() });

function expectUnauthorized(res: { status: number; headers: Headers; body: any }) {
  expect(res.status).toBe(401);
  expect(res.headers.get('www-authenticate')).toMatch(/^Bearer/);
  expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
  expect(res.body.status).toBe(401);
}

describe('Bearer authentication of {base} routes', () => {
  it('missing Authorization → 401 with WWW-Authenticate: Bearer', async () => {
    const res = await http(`${api.baseUrl}/users`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body()) });
    expectUnauthorized(res);
  });

  it('malformed Authorization → 401', async () => {
    for (const authorization of ['Basic abc', 'Bearer', 'Bearer a b', tokenA]) {
      const res = await http(`${api.baseUrl}/users/x`, { headers: { authorization } });
      expectUnauthorized(res);
    }
  });

  it('RFC 6750 allows one or more spaces after Bearer, and any case of the scheme: all accepted', async () => {
    for (const authorization of [`Bearer  ${tokenA}`, `bearer ${tokenA}`, `BEARER   ${tokenA}`]) {
      const res = await http(`${api.baseUrl}/users/nobody-${Date.now()}`, { headers: { authorization } });
      expect(res.status, authorization.slice(0, 10)).toBe(404);
    }
  });

  it('tampered token → 401', async () => {
    const [h, p, s] = tokenA.split('.');
    const claims = JSON.parse(Buffer.from(p!, 'base64url').toString());
    claims.org_id = clinicB.organization._id;
    const forged = `${h}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${s}`;
    expectUnauthorized(await postUser(api, forged, body()));
  });

  it('expired token → 401', async () => {
    const key = generateKeyPairSync('ed25519').privateKey;
    // Signed by another key and expired: either alone must fail; the real key is not reachable from tests by design.
    const t = Math.floor(Date.now() / 1000);
    const expired = await new SignJWT({ org_id: clinicA.organization._id, client_id: clinicA.client._id })
      .setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt' })
      .setIssuer(api.baseUrl)
      .setAudience(api.baseUrl)
      .setSubject(clinicA.client._id)
      .setIssuedAt(t - 7200)
      .setExpirationTime(t - 3600)
      .sign(key);
    expectUnauthorized(await postUser(api, expired, body()));
  });

  it('a token of the service itself, but expired, → 401', async () => {
    const issued = await api.deps.tokens.issue({ clientId: clinicA.client._id, organizationId: clinicA.organization._id });
    const shortLived = new AccessTokens(api.deps.tokens.key, api.baseUrl, -10);
    const expired = await shortLived.issue({ clientId: clinicA.client._id, organizationId: clinicA.organization._id });
    expect((await postUser(api, issued, body())).status).toBe(201);
    expectUnauthorized(await postUser(api, expired, body()));
  });

  it('foreign-issuer token (same key, another issuer) → 401', async () => {
    const foreign = new AccessTokens(api.deps.tokens.key, 'https://other.example.com/v1/connect/server', 3600);
    const token = await foreign.issue({ clientId: clinicA.client._id, organizationId: clinicA.organization._id });
    expectUnauthorized(await postUser(api, token, body()));
  });

  it("a disabled client's token stops working", async () => {
    const c = await registerTestClient(api.models);
    const t = await getToken(api, c);
    expect((await postUser(api, t, body())).status).toBe(201);
    await disableClient(api.models, c.client._id);
    // Refused once the short test cache entry expires: poll rather than guess its timing.
    const deadline = Date.now() + 10_000;
    while ((await getUser(api, t, 'nobody')).status !== 401 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expectUnauthorized(await postUser(api, t, body()));
  });
});

describe('Tenant isolation', () => {
  it('the same external_provider_id in two organizations is two users', async () => {
    const id = randomUUID();
    const a = await postUser(api, tokenA, { provider_email: 'same@example.com', external_provider_id: id, settings: { speech_locale: 'ENGLISH_US' } });
    const b = await postUser(api, tokenB, { provider_email: 'same@example.com', external_provider_id: id, settings: { speech_locale: 'FRENCH_FR' } });
    expect(a.status).toBe(201);
    expect(b.status).toBe(201);
    expect(await api.models.ProviderUser.countDocuments({ external_provider_id: id })).toBe(2);
    expect((await getUser(api, tokenA, id)).body.settings.speech_locale).toBe('ENGLISH_US');
    expect((await getUser(api, tokenB, id)).body.settings.speech_locale).toBe('FRENCH_FR');
  });

  it("nothing of one organization is visible to or changeable by the other", async () => {
    const id = randomUUID();
    await postUser(api, tokenA, { provider_email: `${id}@example.com`, external_provider_id: id, settings: { speech_locale: 'ENGLISH_US' } });
    expect((await getUser(api, tokenB, id)).status).toBe(404);
    // B posting the same id creates B's own user; A's stays as it was.
    const b = await postUser(api, tokenB, { provider_email: `${id}@example.com`, external_provider_id: id, settings: { speech_locale: 'GERMAN_DE' } });
    expect(b.status).toBe(201);
    const a = await getUser(api, tokenA, id);
    expect(a.body.settings.speech_locale).toBe('ENGLISH_US');
    expect(a.body.version).toBe(1);
  });
});

describe('Versioning', () => {
  it('header, then query; echoed in the response', async () => {
    const viaHeader = await postUser(api, tokenA, body(), { 'x-nabla-api-version': 'x-nabla-next' });
    expect(viaHeader.status).toBe(201);
    expect(viaHeader.headers.get('x-nabla-api-version')).toBe('x-nabla-next');
    const res = await http(`${api.baseUrl}/users?nabla-api-version=2026-03-23`, {
      method: 'POST',
      headers: { authorization: `Bearer ${tokenA}`, 'content-type': 'application/json' },
      body: JSON.stringify(body()),
    });
    expect(res.status).toBe(201);
    expect(res.headers.get('x-nabla-api-version')).toBe('2026-03-23');
  });

  it("without a version, the organization's pinned one applies", async () => {
    const old = await registerTestClient(api.models, { apiVersion: '2026-02-13' });
    const t = await getToken(api, old);
    const res = await http(`${api.baseUrl}/users`, {
      method: 'POST',
      headers: { authorization: `Bearer ${t}`, 'content-type': 'application/json' },
      body: JSON.stringify(body()),
    });
    expect(res.status).toBe(404);
    expect(res.headers.get('x-nabla-api-version')).toBe('2026-02-13');
    const latest = await http(`${api.baseUrl}/users`, {
      method: 'POST',
      headers: { authorization: `Bearer ${tokenA}`, 'content-type': 'application/json' },
      body: JSON.stringify(body()),
    });
    expect(latest.status).toBe(201);
    expect(latest.headers.get('x-nabla-api-version')).toBe('2026-03-23');
  });

  it('unknown or malformed → 400 problem', async () => {
    for (const v of ['2025-01-01', 'latest', '2026-3-23']) {
      const res = await postUser(api, tokenA, body(), { 'x-nabla-api-version': v });
      expect(res.status, v).toBe(400);
      expect(res.body.type).toMatch(/\/unsupported-api-version$/);
    }
  });

  it('too old for POST /users → 404 naming the version it needs, nothing stored', async () => {
    const b = body();
    const res = await postUser(api, tokenA, b, { 'x-nabla-api-version': '2026-02-13' });
    expect(res.status).toBe(404);
    expect(res.body.detail).toContain('2026-03-23');
    expect(res.headers.get('x-nabla-api-version')).toBe('2026-02-13');
    expect(await api.models.ProviderUser.countDocuments({ external_provider_id: b.external_provider_id })).toBe(0);
  });
});
