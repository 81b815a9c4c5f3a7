/**
 * SPEC §1: the API lives at BASE_PATH (default /v1/connect/server) under PUBLIC_BASE_URL. Every
 * other test runs on the default; here an instance is started with BASE_PATH=/custom/base and
 * every URL is written out, not read back from the configuration, so a base path that is ignored
 * or hard-coded anywhere (routes, token audience, issuer, Location, OpenAPI) fails.
 */
import { randomUUID } from 'node:crypto';
import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { http, registerTestClient, signAssertion, startTestApi, type TestApi, type TestClient } from '../support/harness.ts';

const BASE = '/custom/base';
const DEFAULT_BASE = '/v1/connect/server';
let api: TestApi;
let clinic: TestClient;

beforeAll(async () => {
  api = await startTestApi({ label: 'base_path', env: { BASE_PATH: BASE } });
  clinic = await registerTestClient(api.models);
});
afterAll(async () => api?.close());

/** PUBLIC_BASE_URL as the harness set it: the address the API listens on. */
const publicBaseUrl = () => api.env.PUBLIC_BASE_URL!;

async function tokenFor(aud: string, url = `${api.origin}${BASE}/oauth/token`) {
  const assertion = await signAssertion(clinic.client._id, clinic.privateKey, aud);
  return http(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ grant_type: 'client_credentials', client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: assertion }),
  });
}

const headers = (token: string) => ({ authorization: `Bearer ${token}`, 'content-type': 'application/json', 'x-nabla-api-version': '2026-03-23' });

describe('BASE_PATH=/custom/base', () => {
  it('the token endpoint is at /custom/base/oauth/token and takes as audience PUBLIC_BASE_URL + /custom/base/oauth/token or the issuer PUBLIC_BASE_URL + /custom/base, not the default path', async () => {
    const byTokenUrl = await tokenFor(`${publicBaseUrl()}${BASE}/oauth/token`);
    expect(byTokenUrl.status, byTokenUrl.text).toBe(200);
    expect(byTokenUrl.body).toMatchObject({ token_type: 'Bearer', access_token: expect.any(String) });
    // The access token's issuer is the same base.
    expect(decodeJwt(byTokenUrl.body.access_token).iss).toBe(`${publicBaseUrl()}${BASE}`);

    const byIssuer = await tokenFor(`${publicBaseUrl()}${BASE}`);
    expect(byIssuer.status, byIssuer.text).toBe(200);

    // Audiences naming the default base path are another server's.
    for (const aud of [`${publicBaseUrl()}${DEFAULT_BASE}/oauth/token`, `${publicBaseUrl()}${DEFAULT_BASE}`]) {
      const refused = await tokenFor(aud);
      expect(refused.status, aud).toBe(401);
      expect(refused.body.error).toBe('invalid_client');
    }
  });

  it('POST /custom/base/users creates (201, Location under /custom/base) and GET /custom/base/users/{id} reads the user back', async () => {
    const token = (await tokenFor(`${publicBaseUrl()}${BASE}/oauth/token`)).body.access_token as string;
    const id = `base-path-${randomUUID()}`;
    const created = await http(`${api.origin}${BASE}/users`, {
      method: 'POST',
      headers: headers(token),
      body: JSON.stringify({ provider_email: `${id}@example.com`, external_provider_id: id, settings: { speech_locale: 'ENGLISH_US' } }),
    });
    expect(created.status, created.text).toBe(201);
    expect(created.headers.get('location')).toBe(`${publicBaseUrl()}${BASE}/users/${id}`);
    expect(created.headers.get('x-nabla-api-version')).toBe('2026-03-23');

    const read = await http(created.headers.get('location')!, { headers: headers(token) });
    expect(read.status, read.text).toBe(200);
    expect(read.body).toMatchObject({ external_provider_id: id, provider_email: `${id}@example.com`, version: 1 });

    // An error under the base names it as its instance.
    const missing = await http(`${api.origin}${BASE}/users/nobody-${id}`, { headers: headers(token) });
    expect(missing.status).toBe(404);
    expect(missing.body.instance).toBe(`${BASE}/users/nobody-${id}`);
  });

  it('nothing answers under the default /v1/connect/server: users and token routes are 404', async () => {
    const token = (await tokenFor(`${publicBaseUrl()}${BASE}/oauth/token`)).body.access_token as string;
    const id = `default-path-${randomUUID()}`;
    const post = await http(`${api.origin}${DEFAULT_BASE}/users`, {
      method: 'POST',
      headers: headers(token),
      body: JSON.stringify({ provider_email: `${id}@example.com`, external_provider_id: id }),
    });
    expect(post.status).toBe(404);
    expect(post.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect((await http(`${api.origin}${DEFAULT_BASE}/users/${id}`, { headers: headers(token) })).status).toBe(404);
    expect((await tokenFor(`${publicBaseUrl()}${DEFAULT_BASE}/oauth/token`, `${api.origin}${DEFAULT_BASE}/oauth/token`)).status).toBe(404);
    // Nothing was created by the refused POST.
    expect(await api.models.ProviderUser.countDocuments({ external_provider_id: id })).toBe(0);
  });

  it('/openapi.json lists the routes under /custom/base and none under the default path', async () => {
    const doc = (await http(`${api.origin}/openapi.json`)).body;
    const paths = Object.keys(doc.paths);
    expect(paths).toEqual(expect.arrayContaining([`${BASE}/oauth/token`, `${BASE}/users`, `${BASE}/users/{external_provider_id}`]));
    expect(paths.filter((p) => p.startsWith(DEFAULT_BASE))).toEqual([]);
    expect(doc.paths[`${BASE}/users`].post.security).toEqual([{ bearer: [] }]);
  });
});
