import { createServer, type Server } from 'node:http';
import { createPublicKey, generateKeyPairSync, randomUUID, type KeyObject } from 'node:crypto';
import { exportJWK, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { disableClient, registerClient } from '@connect/shared';
import { MAX_KEYS_TRIED } from '@connect/api';
import {
  http,
  postUser,
  registerTestClient,
  requestToken,
  rsaKeyPair,
  signAssertion,
  startTestApi,
  type TestApi,
  type TestClient,
} from '../support/harness.ts';

const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
let api: TestApi;
let clinic: TestClient;

beforeAll(async () => {
  api = await startTestApi({ label: 'oauth', clientKeys: { jwksCooldownMs: 0 } });
  clinic = await registerTestClient(api.models);
});
afterAll(async () => api?.close());

function tokenRequest(body: Record<string, string>, form = false) {
  return http(api.tokenUrl, {
    method: 'POST',
    headers: { 'content-type': form ? 'application/x-www-form-urlencoded' : 'application/json' },
    body: form ? new URLSearchParams(body).toString() : JSON.stringify(body),
  });
}

function withAssertion(assertion: string, extra: Record<string, string> = {}) {
  return { grant_type: 'client_credentials', client_assertion_type: ASSERTION_TYPE, client_assertion: assertion, ...extra };
}

async function tokenWorks(accessToken: string): Promise<boolean> {
  const res = await postUser(api, accessToken, { provider_email: `${randomUUID()}@example.com`, external_provider_id: randomUUID() });
  return res.status === 201;
}

/**
 * 401 invalid_client. An unknown or disabled client and a key that does not verify read the same,
 * `Client authentication failed.`; the other refusals (a check that depends on no client, or one made
 * once the signature verified) say what to fix: `says`, a part of that description.
 */
function expectInvalidClient(res: { status: number; body: any; headers: Headers }, says?: string) {
  expect(res.status).toBe(401);
  if (says === undefined) expect(res.body).toEqual({ error: 'invalid_client', error_description: UNSAID });
  else {
    expect(Object.keys(res.body).sort()).toEqual(['error', 'error_description']);
    expect(res.body.error).toBe('invalid_client');
    expect(res.body.error_description).toContain(says);
  }
  expect(res.headers.get('cache-control')).toBe('no-store');
}
const UNSAID = 'Client authentication failed.';

describe('POST /oauth/token: a valid RS256 assertion gets a working token', () => {
  it('as a JSON body, like the public sample client', async () => {
    const res = await requestToken(api, clinic);
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ access_token: expect.any(String), token_type: 'Bearer', expires_in: 3600 });
    expect(res.headers.get('cache-control')).toBe('no-store');
    expect(await tokenWorks(res.body.access_token)).toBe(true);
  });

  it('as a form body, with client_id equal to iss, like standard OAuth libraries', async () => {
    const assertion = await signAssertion(clinic.client._id, clinic.privateKey, api.tokenUrl);
    const res = await tokenRequest(withAssertion(assertion, { client_id: clinic.client._id }), true);
    expect(res.status).toBe(200);
    expect(await tokenWorks(res.body.access_token)).toBe(true);
  });

  it('with the issuer (base URL) as audience', async () => {
    const res = await requestToken(api, clinic, { aud: api.baseUrl });
    expect(res.status).toBe(200);
  });

  it('with ES256 and EdDSA client keys too', async () => {
    for (const type of ['ec', 'ed25519'] as const) {
      const pair = type === 'ec' ? generateKeyPairSync('ec', { namedCurve: 'P-256' }) : generateKeyPairSync('ed25519');
      const client = await registerClient(api.models, {
        organizationId: clinic.organization._id,
        publicKeyPem: pair.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
      });
      const assertion = await signAssertion(client._id, pair.privateKey, api.tokenUrl, { alg: type === 'ec' ? 'ES256' : 'EdDSA' });
      const res = await tokenRequest(withAssertion(assertion));
      expect(res.status, type).toBe(200);
    }
  });
});

describe('POST /oauth/token: refusals', () => {
  const now = () => Math.floor(Date.now() / 1000);

  it('unknown client', async () => {
    const assertion = await signAssertion(randomUUID(), clinic.privateKey, api.tokenUrl);
    expectInvalidClient(await tokenRequest(withAssertion(assertion)));
  });

  it('disabled client', async () => {
    const c = await registerTestClient(api.models);
    await disableClient(api.models, c.client._id);
    expectInvalidClient(await requestToken(api, c));
  });

  it('assertion signed with another key', async () => {
    const other = rsaKeyPair();
    const assertion = await signAssertion(clinic.client._id, other.privateKey, api.tokenUrl);
    expectInvalidClient(await tokenRequest(withAssertion(assertion)));
  });

  it('expired', async () => {
    expectInvalidClient(await requestToken(api, clinic, { iat: now() - 300, exp: now() - 120 }), 'The assertion has expired');
  });

  it('expired a few seconds ago: the 30 s of skew is for iat, exp must be in the future', async () => {
    expectInvalidClient(await requestToken(api, clinic, { iat: now() - 60, exp: now() - 5 }), 'The assertion has expired');
  });

  it('exp more than 5 minutes after iat; exactly 5 minutes after is accepted', async () => {
    const iat = now();
    expectInvalidClient(await requestToken(api, clinic, { iat, exp: iat + 301 }), "The assertion's exp must be at most 5 minutes after its iat.");
    expect((await requestToken(api, clinic, { iat, exp: iat + 300 })).status).toBe(200);
  });

  it('iat in the future beyond the 30 s skew', async () => {
    expectInvalidClient(await requestToken(api, clinic, { iat: now() + 120, exp: now() + 180 }), "The assertion's iat is in the future");
  });

  it('nbf more than 30 s in the future is refused in words that say what to fix; within 30 s it is accepted', async () => {
    expectInvalidClient(await requestToken(api, clinic, { nbf: now() + 120 }), "The assertion's nbf is more than 30 s in the future by this server's clock");
    expect((await requestToken(api, clinic, { nbf: now() + 20 })).status).toBe(200);
  });

  it('wrong audience', async () => {
    expectInvalidClient(await requestToken(api, clinic, { aud: 'https://elsewhere.example.com/oauth/token' }), `The assertion's aud must be ${api.tokenUrl} or `);
  });

  it('iss differs from sub', async () => {
    expectInvalidClient(await requestToken(api, clinic, { sub: randomUUID() }), "The assertion's sub must equal its iss");
  });

  it('missing jti', async () => {
    expectInvalidClient(await requestToken(api, clinic, { jti: null }), 'The assertion must carry jti.');
  });

  it('replayed jti: the same assertion works once', async () => {
    const assertion = await signAssertion(clinic.client._id, clinic.privateKey, api.tokenUrl);
    expect((await tokenRequest(withAssertion(assertion))).status).toBe(200);
    expectInvalidClient(await tokenRequest(withAssertion(assertion)), 'This assertion was used already (its jti)');
  });

  it('the same assertion sent 20 times at once, to two API processes of one deployment: one token, 19 × invalid_client', async () => {
    const second = await startTestApi({ env: { PUBLIC_BASE_URL: api.env.PUBLIC_BASE_URL!, QUEUE_PREFIX: api.env.QUEUE_PREFIX! }, mongoUrl: api.env.MONGO_URL });
    try {
      const assertion = await signAssertion(clinic.client._id, clinic.privateKey, api.tokenUrl);
      const answers = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          http(i % 2 ? second.tokenUrl : api.tokenUrl, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(withAssertion(assertion)) }),
        ),
      );
      const tokens = answers.filter((a) => a.status === 200);
      expect(tokens).toHaveLength(1);
      for (const refused of answers.filter((a) => a.status !== 200)) expectInvalidClient(refused, 'This assertion was used already');
      expect(await tokenWorks(tokens[0]!.body.access_token)).toBe(true);
    } finally {
      await second.close();
    }
  });

  it('alg none', async () => {
    const enc = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const t = now();
    const unsigned = `${enc({ alg: 'none', typ: 'JWT' })}.${enc({ iss: clinic.client._id, sub: clinic.client._id, aud: api.tokenUrl, iat: t, exp: t + 60, jti: randomUUID() })}.`;
    expectInvalidClient(await tokenRequest(withAssertion(unsigned)), "The assertion's alg must be one of RS256, PS256, ES256, EdDSA.");
  });

  it('HS256 signed with the public key as the secret (algorithm confusion)', async () => {
    const t = now();
    const assertion = await new SignJWT({ jti: randomUUID() })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setIssuer(clinic.client._id)
      .setSubject(clinic.client._id)
      .setAudience(api.tokenUrl)
      .setIssuedAt(t)
      .setExpirationTime(t + 60)
      .sign(new TextEncoder().encode(clinic.client.public_key_pem!));
    expectInvalidClient(await tokenRequest(withAssertion(assertion)), "The assertion's alg must be one of");
  });

  it('an iss or jti no client id or assertion id can hold (NUL, lone surrogate) → 401, not a datastore error', async () => {
    // Unsigned: iss is judged before any key is looked up. FerretDB cannot store or match a NUL,
    // and answered 503 "a datastore did not answer" to this, without any authentication.
    const enc = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
    for (const iss of ['a\u0000b', '\ud800']) {
      expectInvalidClient(await tokenRequest(withAssertion(`${enc({ alg: 'RS256', typ: 'JWT' })}.${enc({ iss, sub: iss })}.AAAA`)), "The assertion's iss, the client id, is missing or malformed.");
    }
    // Signed by the client: the jti is refused before it is recorded as used.
    for (const jti of ['a\u0000b', 'x\udc00']) expectInvalidClient(await requestToken(api, clinic, { jti }), "The assertion's jti must be a string");
    // The refusals were not an outage: the same client gets a token right after.
    expect((await requestToken(api, clinic)).status).toBe(200);
  });

  it('garbage assertion', async () => {
    expectInvalidClient(await tokenRequest(withAssertion('not.a.jwt')), 'client_assertion is not a signed JWT');
    expectInvalidClient(await tokenRequest(withAssertion('%%%')), 'client_assertion is not a signed JWT');
  });

  it('form client_id that differs from iss', async () => {
    const assertion = await signAssertion(clinic.client._id, clinic.privateKey, api.tokenUrl);
    expectInvalidClient(await tokenRequest(withAssertion(assertion, { client_id: randomUUID() }), true), "The client id sent beside the assertion (client_id, or Basic credentials) must equal its iss.");
  });

  it('HTTP Basic credentials beside the assertion (as Go\'s x/oauth2 sends them): naming its client → 200; naming another, alone or beside a form client_id that names its own → 401; unreadable → 400; a Bearer header is ignored', async () => {
    const basic = (id: string, secret = '') => `Basic ${Buffer.from(`${encodeURIComponent(id)}:${secret}`).toString('base64')}`;
    const send = async (authorization: string, extra: Record<string, string> = {}) => {
      const assertion = await signAssertion(clinic.client._id, clinic.privateKey, api.tokenUrl);
      return http(api.tokenUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', authorization },
        body: new URLSearchParams(withAssertion(assertion, extra)).toString(),
      });
    };
    const own = await send(basic(clinic.client._id));
    expect(own.status, own.text).toBe(200);
    expect(await tokenWorks(own.body.access_token)).toBe(true);
    expect((await send(basic(clinic.client._id, 'ignored-secret'), { client_id: clinic.client._id })).status).toBe(200);
    const other = await registerTestClient(api.models);
    expectInvalidClient(await send(basic(other.client._id)), "The client id sent beside the assertion (client_id, or Basic credentials) must equal its iss.");
    expectInvalidClient(await send(basic(other.client._id), { client_id: clinic.client._id }), 'The Basic credentials and client_id name two different clients.');
    for (const unreadable of ['Basic', 'Basic %%%', `Basic ${Buffer.from('no-colon').toString('base64')}`]) {
      const res = await send(unreadable);
      expect(res.status, unreadable).toBe(400);
      expect(res.body).toEqual({ error: 'invalid_request', error_description: expect.stringMatching(/Authorization header is not valid Basic credentials/) });
    }
    expect((await send('Bearer some-old-token')).status).toBe(200);
  });

  it('an assertion longer than the 16,384 characters accepted → 400 invalid_request saying so, not "missing or malformed"', async () => {
    const res = await tokenRequest(withAssertion('e'.repeat(16_385)));
    expect(res.status).toBe(400);
    expect(res.body).toEqual({ error: 'invalid_request', error_description: 'client_assertion is longer than 16384 characters.' });
  });

  it('wrong grant_type → 400 unsupported_grant_type; missing parameters → 400 invalid_request', async () => {
    const assertion = await signAssertion(clinic.client._id, clinic.privateKey, api.tokenUrl);
    const wrongGrant = await tokenRequest({ ...withAssertion(assertion), grant_type: 'password' });
    expect(wrongGrant.status).toBe(400);
    expect(wrongGrant.body.error).toBe('unsupported_grant_type');
    const missing = await tokenRequest({ grant_type: 'client_credentials' });
    expect(missing.status).toBe(400);
    expect(missing.body.error).toBe('invalid_request');
    const wrongType = await tokenRequest({ ...withAssertion(assertion), client_assertion_type: 'urn:other' });
    expect(wrongType.status).toBe(400);
    expect(wrongType.body.error).toBe('invalid_request');
    const notJson = await http(api.tokenUrl, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{oops' });
    expect(notJson.status).toBe(400);
    expect(notJson.body.error).toBe('invalid_request');
  });

  it('a parameter sent twice in a form body → 400 invalid_request naming it (RFC 6749 §3.2), not unsupported_grant_type', async () => {
    const assertion = await signAssertion(clinic.client._id, clinic.privateKey, api.tokenUrl);
    const form = new URLSearchParams(withAssertion(assertion) as Record<string, string>);
    form.append('grant_type', 'client_credentials');
    const res = await http(api.tokenUrl, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form.toString() });
    expect(res.status).toBe(400);
    expect(res.body).toEqual({ error: 'invalid_request', error_description: 'grant_type is given more than once.' });
  });

  it('an array as a member of a JSON body → 400 invalid_request saying it must be a string (it said the member was given more than once)', async () => {
    const assertion = await signAssertion(clinic.client._id, clinic.privateKey, api.tokenUrl);
    const body = JSON.stringify({ ...withAssertion(assertion), grant_type: ['client_credentials'] });
    const res = await http(api.tokenUrl, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    expect(res.status).toBe(400);
    expect(res.body).toEqual({ error: 'invalid_request', error_description: 'grant_type must be a string, not an array.' });
  });

  it('a member given twice in a JSON body → 400 invalid_request naming it, like a repeated form parameter (JSON.parse kept the last: a token)', async () => {
    const assertion = await signAssertion(clinic.client._id, clinic.privateKey, api.tokenUrl);
    const body = `{"grant_type":"password","grant_type":"client_credentials","client_assertion_type":"${ASSERTION_TYPE}","client_assertion":"${assertion}"}`;
    const res = await http(api.tokenUrl, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    expect(res.status).toBe(400);
    expect(res.body).toEqual({ error: 'invalid_request', error_description: 'grant_type is given more than once.' });
    // The assertion was not spent: it still gets a token.
    expect((await tokenRequest(withAssertion(assertion))).status).toBe(200);
  });

  it('a body over the limit → 400 invalid_request naming the limit (JSON 64 KiB, form 16 KiB), not "could not be read"', async () => {
    const assertion = await signAssertion(clinic.client._id, clinic.privateKey, api.tokenUrl);
    const json = await tokenRequest(withAssertion(assertion, { scope: 'x'.repeat(70 * 1024) }));
    expect(json.status).toBe(400);
    expect(json.body).toEqual({ error: 'invalid_request', error_description: 'The body is larger than 65536 bytes, the most this endpoint accepts.' });
    const form = await tokenRequest(withAssertion(assertion, { scope: 'x'.repeat(20 * 1024) }), true);
    expect(form.status).toBe(400);
    expect(form.body.error_description).toBe('The body is larger than 16384 bytes, the most this endpoint accepts.');
  });

  it('every refusal reads the same to the caller, whatever the reason', async () => {
    const unknown = await tokenRequest(withAssertion(await signAssertion(randomUUID(), clinic.privateKey, api.tokenUrl)));
    const wrongKey = await tokenRequest(withAssertion(await signAssertion(clinic.client._id, rsaKeyPair().privateKey, api.tokenUrl)));
    expect(unknown.text).toBe(wrongKey.text);
  });
});

describe('POST /oauth/token: a JWKS-URL client', () => {
  let jwksServer: Server;
  let jwks: { keys: object[] } = { keys: [] };
  let fetches = 0;

  beforeAll(async () => {
    jwksServer = createServer((_req, res) => {
      fetches++;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(jwks));
    });
    await new Promise<void>((r) => jwksServer.listen(0, '127.0.0.1', r));
  });
  afterAll(() => new Promise<void>((r) => jwksServer.close(() => r())));

  it('works, and a rotated key (new kid at the URL) works without a restart', async () => {
    const { port } = jwksServer.address() as { port: number };
    const client = await registerClient(api.models, { organizationId: clinic.organization._id, jwksUrl: `http://127.0.0.1:${port}/jwks.json` });
    const first = rsaKeyPair();
    jwks = { keys: [{ ...(await exportJWK(createPublicKey(first.privateKey))), kid: 'k1', alg: 'RS256', use: 'sig' }] };
    const a1 = await signAssertion(client._id, first.privateKey, api.tokenUrl, { kid: 'k1' });
    const r1 = await tokenRequest(withAssertion(a1));
    expect(r1.status).toBe(200);

    const second = rsaKeyPair();
    jwks = { keys: [{ ...(await exportJWK(createPublicKey(second.privateKey))), kid: 'k2', alg: 'RS256', use: 'sig' }] };
    const before = fetches;
    const a2 = await signAssertion(client._id, second.privateKey, api.tokenUrl, { kid: 'k2' });
    const r2 = await tokenRequest(withAssertion(a2));
    expect(r2.status).toBe(200);
    expect(fetches).toBeGreaterThan(before);

    // The retired key no longer verifies once the set no longer has it.
    const a3 = await signAssertion(client._id, first.privateKey, api.tokenUrl, { kid: 'k1' });
    expectInvalidClient(await tokenRequest(withAssertion(a3)));
  });

  it('an assertion without kid (as the public sample client signs) is accepted by whichever key of a multi-key JWKS verifies it, and refused when none does', async () => {
    const { port } = jwksServer.address() as { port: number };
    const client = await registerClient(api.models, { organizationId: clinic.organization._id, jwksUrl: `http://127.0.0.1:${port}/rotating.json` });
    const previous = rsaKeyPair();
    const current = rsaKeyPair();
    const jwkOf = async (k: KeyObject, kid: string) => ({ ...(await exportJWK(createPublicKey(k))), kid, alg: 'RS256', use: 'sig' });
    // A rotation in progress: both keys published, in either order.
    jwks = { keys: [await jwkOf(previous.privateKey, 'previous'), await jwkOf(current.privateKey, 'current')] };
    expect((await tokenRequest(withAssertion(await signAssertion(client._id, current.privateKey, api.tokenUrl)))).status).toBe(200);
    expect((await tokenRequest(withAssertion(await signAssertion(client._id, previous.privateKey, api.tokenUrl)))).status).toBe(200);

    const stranger = rsaKeyPair();
    expectInvalidClient(await tokenRequest(withAssertion(await signAssertion(client._id, stranger.privateKey, api.tokenUrl))));
  });

  it(`an assertion without kid is tried against the first ${MAX_KEYS_TRIED} keys of its algorithm only (each try costs a key import and a signature check); past them, its kid picks the key`, async () => {
    const { port } = jwksServer.address() as { port: number };
    const client = await registerClient(api.models, { organizationId: clinic.organization._id, jwksUrl: `http://127.0.0.1:${port}/many.json` });
    const pairs = Array.from({ length: MAX_KEYS_TRIED + 2 }, () => rsaKeyPair());
    jwks = { keys: await Promise.all(pairs.map(async (p, i) => ({ ...(await exportJWK(createPublicKey(p.privateKey))), kid: `k${i}`, alg: 'RS256', use: 'sig' }))) };
    const last = pairs[MAX_KEYS_TRIED + 1]!.privateKey;
    expect((await tokenRequest(withAssertion(await signAssertion(client._id, pairs[0]!.privateKey, api.tokenUrl)))).status).toBe(200);
    expect((await tokenRequest(withAssertion(await signAssertion(client._id, pairs[MAX_KEYS_TRIED - 1]!.privateKey, api.tokenUrl)))).status).toBe(200);
    expectInvalidClient(await tokenRequest(withAssertion(await signAssertion(client._id, last, api.tokenUrl))));
    expect((await tokenRequest(withAssertion(await signAssertion(client._id, last, api.tokenUrl, { kid: `k${MAX_KEYS_TRIED + 1}` })))).status).toBe(200);
  });

  it('an assertion without kid signed by a key published after the set was cached is accepted: the set is fetched again, as for an unknown kid', async () => {
    const { port } = jwksServer.address() as { port: number };
    const client = await registerClient(api.models, { organizationId: clinic.organization._id, jwksUrl: `http://127.0.0.1:${port}/published-later.json` });
    const previous = rsaKeyPair();
    const current = rsaKeyPair();
    const jwkOf = async (k: KeyObject) => ({ ...(await exportJWK(createPublicKey(k))), alg: 'RS256', use: 'sig' });
    // The public sample client signs without kid; the server caches the set holding its one key.
    jwks = { keys: [await jwkOf(previous.privateKey)] };
    expect((await tokenRequest(withAssertion(await signAssertion(client._id, previous.privateKey, api.tokenUrl)))).status).toBe(200);

    // The rotation the README describes: the new key beside the old, then the EHR signs with the new one at once.
    jwks = { keys: [await jwkOf(previous.privateKey), await jwkOf(current.privateKey)] };
    const before = fetches;
    expect((await tokenRequest(withAssertion(await signAssertion(client._id, current.privateKey, api.tokenUrl)))).status).toBe(200);
    expect(fetches).toBe(before + 1);
    expect((await tokenRequest(withAssertion(await signAssertion(client._id, previous.privateKey, api.tokenUrl)))).status).toBe(200);

    // A key the set does not hold is still refused after the refetch.
    const stranger = rsaKeyPair();
    expectInvalidClient(await tokenRequest(withAssertion(await signAssertion(client._id, stranger.privateKey, api.tokenUrl))));
  });
});
