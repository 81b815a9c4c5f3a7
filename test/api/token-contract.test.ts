import { createPublicKey, generateKeyPairSync, randomUUID, type KeyObject } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { calculateJwkThumbprint, decodeJwt, decodeProtectedHeader, exportJWK, jwtVerify, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { registerClient } from '@connect/shared';
import { getUser, http, registerTestClient, rsaKeyPair, signAssertion, startTestApi, type HttpAnswer, type TestApi, type TestClient } from '../support/harness.ts';

const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

function tokenRequest(api: TestApi, assertion: string): Promise<HttpAnswer> {
  return http(api.tokenUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ grant_type: 'client_credentials', client_assertion_type: JWT_BEARER, client_assertion: assertion }),
  });
}

function expectInvalidClient(res: HttpAnswer): void {
  expect(res.status, res.text).toBe(401);
  expect(res.body.error).toBe('invalid_client');
}

describe('Client assertions (docs/contract.md, RFC 7523)', () => {
  let api: TestApi;
  let clinic: TestClient;
  let jwksServer: Server;
  let jwks: unknown = { keys: [] };
  let jwksFetches = 0;

  beforeAll(async () => {
    api = await startTestApi({ label: 'assertions', env: { RATE_LIMIT_TOKEN_PER_IP_PER_MINUTE: '0' } });
    clinic = await registerTestClient(api.models);
    jwksServer = createServer((_req, res) => {
      jwksFetches++;
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(jwks));
    });
    await new Promise<void>((r) => jwksServer.listen(0, '127.0.0.1', r));
  });
  afterAll(async () => {
    await new Promise<void>((r) => jwksServer.close(() => r()));
    await api?.close();
  });

  it('an assertion without exp is refused (invalid_client), and no token is issued', async () => {
    const now = Math.floor(Date.now() / 1000);
    const noExp = await new SignJWT({ jti: randomUUID() })
      .setProtectedHeader({ alg: 'RS256', typ: 'JWT' })
      .setIssuer(clinic.client._id)
      .setSubject(clinic.client._id)
      .setAudience(api.audience)
      .setIssuedAt(now)
      .sign(clinic.privateKey);
    expect(decodeJwt(noExp).exp).toBeUndefined();
    expectInvalidClient(await tokenRequest(api, noExp));
  });

  it('iat up to 30 s ahead (clock skew) is accepted; 90 s ahead is refused', async () => {
    const now = Math.floor(Date.now() / 1000);
    const within = await signAssertion(clinic.client._id, clinic.privateKey, api.audience, { iat: now + 20, exp: now + 80 });
    const ok = await tokenRequest(api, within);
    expect(ok.status, ok.text).toBe(200);
    const ahead = await signAssertion(clinic.client._id, clinic.privateKey, api.audience, { iat: now + 90, exp: now + 150 });
    expectInvalidClient(await tokenRequest(api, ahead));
  });

  it('PS256 (RSA-PSS) assertions are accepted', async () => {
    const assertion = await signAssertion(clinic.client._id, clinic.privateKey, api.audience, { alg: 'PS256' });
    expect(decodeProtectedHeader(assertion).alg).toBe('PS256');
    const res = await tokenRequest(api, assertion);
    expect(res.status, res.text).toBe(200);
  });

  it('the JWKS of a client is fetched once for a known kid: later assertions use the cached key', async () => {
    const client = await registerClient(api.models, { organizationId: clinic.organization._id, jwksUrl: `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/jwks.json` });
    const { privateKey } = rsaKeyPair();
    jwks = { keys: [{ ...(await exportJWK(createPublicKey(privateKey))), kid: 'k1', alg: 'RS256', use: 'sig' }] };
    const before = jwksFetches;
    for (let i = 0; i < 4; i++) {
      const res = await tokenRequest(api, await signAssertion(client._id, privateKey, api.audience, { kid: 'k1' }));
      expect(res.status, res.text).toBe(200);
    }
    expect(jwksFetches - before).toBe(1);
  });
});

describe('Access tokens (docs/contract.md): the claims, the lifetime, the signing key', () => {
  let api: TestApi;
  let clinic: TestClient;
  let signingKey: KeyObject;

  beforeAll(async () => {
    // A P-256 key, so the token's algorithm shows which key signed it (the generated default is Ed25519).
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    signingKey = privateKey;
    api = await startTestApi({
      label: 'access_tokens',
      env: { TOKEN_SIGNING_KEY: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), ACCESS_TOKEN_TTL_SECONDS: '120' },
    });
    clinic = await registerTestClient(api.models);
  });
  afterAll(async () => api?.close());

  it('are signed with TOKEN_SIGNING_KEY: ES256, its thumbprint as kid, verified by its public key', async () => {
    const res = await tokenRequest(api, await signAssertion(clinic.client._id, clinic.privateKey, api.audience));
    expect(res.status, res.text).toBe(200);
    const token = res.body.access_token as string;
    const publicKey = createPublicKey(signingKey);
    expect(decodeProtectedHeader(token)).toEqual({ alg: 'ES256', typ: 'at+jwt', kid: await calculateJwkThumbprint(await exportJWK(publicKey)) });
    await expect(jwtVerify(token, publicKey)).resolves.toBeDefined();
    // Another key does not verify it: the configured key, not a generated one, signed it.
    await expect(jwtVerify(token, createPublicKey(generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey))).rejects.toThrow();
    expect(await api.models.SigningKey.countDocuments({})).toBe(0);
  });

  it('a non-default ACCESS_TOKEN_TTL_SECONDS (120 here): expires_in and exp - iat', async () => {
    const res = await tokenRequest(api, await signAssertion(clinic.client._id, clinic.privateKey, api.audience));
    expect(res.body).toMatchObject({ token_type: 'Bearer', expires_in: 120 });
    const claims = decodeJwt(res.body.access_token);
    expect(claims.exp! - claims.iat!).toBe(120);
  });

  it('carry iss = aud = the public base URL + base path, sub = client_id = the client, org_id, a jti, iat now', async () => {
    const before = Math.floor(Date.now() / 1000);
    const res = await tokenRequest(api, await signAssertion(clinic.client._id, clinic.privateKey, api.audience));
    const token = res.body.access_token as string;
    const { payload } = await jwtVerify(token, createPublicKey(signingKey), { issuer: api.deps.config.issuer, audience: api.deps.config.issuer, typ: 'at+jwt' });
    expect(api.deps.config.issuer).toBe(`${api.origin}/v1/connect/server`);
    expect(payload).toEqual({
      iss: api.deps.config.issuer,
      aud: api.deps.config.issuer,
      sub: clinic.client._id,
      client_id: clinic.client._id,
      org_id: clinic.organization._id,
      jti: expect.stringMatching(/^[0-9a-f-]{36}$/),
      iat: expect.any(Number),
      exp: expect.any(Number),
    });
    expect(payload.iat!).toBeGreaterThanOrEqual(before);
    // And it works on the API.
    expect((await getUser(api, token, 'nobody')).status).toBe(404);
  });
});
