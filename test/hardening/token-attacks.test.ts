/**
 * Attacks on docs/contract.md's token endpoint and bearer authentication: algorithm
 * confusion, `kid` tricks against a JWKS client, oversized assertions, JWKS URLs
 * that are slow, huge or redirect, replayed assertions under concurrency, a
 * disabled client's tokens, and one organization's token against another's users.
 */
import { createHmac, createPublicKey, randomUUID, sign, type KeyObject } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { exportJWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { disableClient, registerClient, type OAuthClientDoc } from '@connect/shared';
import { waitFor } from '../support/child-process.ts';
import { getToken, getUser, http, postUser, registerTestClient, rsaKeyPair, signAssertion, startTestApi, type HttpAnswer, type TestApi, type TestClient } from '../support/harness.ts';

const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const b64 = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

let api: TestApi;
let clinic: TestClient; // a client with a static public key (PEM)
let attackerKey: KeyObject;
const refusals = new Set<string>(); // every invalid_client description seen: docs/contract.md says they all read the same
let attacks = 0;

// ------------------------------------------------------------ a JWKS host with good and bad behaviours

let jwksServer: Server;
let jwksOrigin: string;
const jwksHits: string[] = [];
let jwksKey: KeyObject;
let goodJwks: { keys: object[] };
/** What /rotating.json serves now: a client's keys, changed by the rotation test. */
let rotatingJwks: { keys: object[] } = { keys: [] };
const pendingSlow = new Set<ServerResponse>();

function jwksHandler(req: IncomingMessage, res: ServerResponse): void {
  const path = req.url ?? '';
  jwksHits.push(path);
  const json = (body: unknown, headers: Record<string, string> = {}) => {
    res.writeHead(200, { 'content-type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  };
  // A query string makes another URL (a key set cached apart) with the same content.
  switch (path.split('?')[0]) {
    case '/rotating.json':
      return json(rotatingJwks);
    case '/good.json':
    case '/redirect-target.json':
    case '/attacker.json':
      return json(path === '/attacker.json' ? { keys: [{ ...attackerJwk, kid: 'k1' }] } : goodJwks);
    case '/slow.json': {
      // Longer than the API's 3 s JWKS timeout.
      pendingSlow.add(res);
      const t = setTimeout(() => json(goodJwks), 8000);
      res.on('close', () => {
        clearTimeout(t);
        pendingSlow.delete(res);
      });
      return;
    }
    case '/huge.json': // the right key, padded past 64 KiB, with a Content-Length
      return json({ ...goodJwks, padding: 'x'.repeat(70 * 1024) });
    case '/huge-chunked.json': {
      // No Content-Length: the limit must hold while reading.
      res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
      res.write(`{"keys":${JSON.stringify(goodJwks.keys)},"padding":"`);
      for (let i = 0; i < 40; i++) res.write('y'.repeat(4096));
      res.end('"}');
      return;
    }
    case '/redirect.json':
      res.writeHead(302, { location: `${jwksOrigin}/redirect-target.json` });
      res.end();
      return;
    case '/error.json':
      res.writeHead(500);
      res.end('boom');
      return;
    case '/not-json.json':
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"keys": [');
      return;
    default:
      res.writeHead(404);
      res.end();
  }
}
let attackerJwk: object;

async function jwksClient(path: string): Promise<OAuthClientDoc> {
  return registerClient(api.models, { organizationId: clinic.organization._id, jwksUrl: `${jwksOrigin}${path}` });
}

beforeAll(async () => {
  // Hundreds of token requests from one IP: the rate limits (test/api/rate-limits.test.ts) are off here.
  api = await startTestApi({ label: 'attacks', clientCacheTtlMs: 200, env: { RATE_LIMIT_PER_CLIENT_PER_MINUTE: '0', RATE_LIMIT_TOKEN_PER_IP_PER_MINUTE: '0' } });
  clinic = await registerTestClient(api.models, { name: 'Attacked clinic' });
  attackerKey = rsaKeyPair().privateKey;
  attackerJwk = await exportJWK(createPublicKey(attackerKey));
  jwksKey = rsaKeyPair().privateKey;
  goodJwks = { keys: [{ ...(await exportJWK(createPublicKey(jwksKey))), kid: 'k1', alg: 'RS256', use: 'sig' }] };
  jwksServer = createServer(jwksHandler);
  await new Promise<void>((r) => jwksServer.listen(0, '127.0.0.1', r));
  jwksOrigin = `http://127.0.0.1:${(jwksServer.address() as { port: number }).port}`;
});
afterAll(async () => {
  console.log(`[token-attacks] ${attacks} attacks tried`);
  for (const res of pendingSlow) res.destroy();
  jwksServer.closeAllConnections();
  await new Promise<void>((r) => jwksServer.close(() => r()));
  await api?.close();
});

// ------------------------------------------------------------ helpers

function claims(clientId: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const now = Math.floor(Date.now() / 1000);
  return { iss: clientId, sub: clientId, aud: api.audience, iat: now, exp: now + 60, jti: randomUUID(), ...extra };
}

/** A compact JWS built by hand, so its header can say anything. */
function rawJwt(header: Record<string, unknown>, payload: Record<string, unknown>, signer: (input: string) => Buffer | string): string {
  const input = `${b64(header)}.${b64(payload)}`;
  const sig = signer(input);
  return `${input}.${typeof sig === 'string' ? sig : sig.toString('base64url')}`;
}
const rs256 = (key: KeyObject) => (input: string) => sign('sha256', Buffer.from(input), key);
const rs384 = (key: KeyObject) => (input: string) => sign('sha384', Buffer.from(input), key);
const hmac = (alg: string, secret: string | Buffer) => (input: string) => createHmac(alg, secret).update(input).digest();

function postAssertion(assertion: string, form = false): Promise<HttpAnswer> {
  const params = { grant_type: 'client_credentials', client_assertion_type: JWT_BEARER, client_assertion: assertion };
  return form
    ? http(api.tokenUrl, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(params).toString() })
    : http(api.tokenUrl, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(params) });
}

function expectRefused(res: HttpAnswer, context = ''): void {
  attacks++;
  expect(res.status, `${context}: ${res.text}`).toBe(401);
  expect(res.body.error).toBe('invalid_client');
  expect(res.headers.get('www-authenticate')).toMatch(/^Bearer/);
  expect(res.body.access_token).toBeUndefined();
  refusals.add(res.body.error_description);
}

// ------------------------------------------------------------ tests

describe('Algorithm confusion: `none` and HMAC are always refused, and only the client key verifies', () => {
  it('the honest RS256 assertion is accepted (control)', async () => {
    const res = await postAssertion(await signAssertion(clinic.client._id, clinic.privateKey, api.audience));
    expect(res.status, res.text).toBe(200);
  });

  const pem = () => clinic.client.public_key_pem!;
  const cases: [string, () => string][] = [
    ['HS256 with the public key PEM as the secret', () => rawJwt({ alg: 'HS256', typ: 'JWT' }, claims(clinic.client._id), hmac('sha256', pem()))],
    ['HS384 with the public key PEM as the secret', () => rawJwt({ alg: 'HS384', typ: 'JWT' }, claims(clinic.client._id), hmac('sha384', pem()))],
    ['HS512 with the public key PEM as the secret', () => rawJwt({ alg: 'HS512' }, claims(clinic.client._id), hmac('sha512', pem()))],
    ['HS256 with the DER public key as the secret', () => rawJwt({ alg: 'HS256' }, claims(clinic.client._id), hmac('sha256', createPublicKey(pem()).export({ type: 'spki', format: 'der' })))],
    ['alg none, empty signature', () => rawJwt({ alg: 'none', typ: 'JWT' }, claims(clinic.client._id), () => '')],
    ['alg None, empty signature', () => rawJwt({ alg: 'None' }, claims(clinic.client._id), () => '')],
    ['alg NONE with a real RS256 signature', () => rawJwt({ alg: 'NONE' }, claims(clinic.client._id), rs256(clinic.privateKey))],
    ['alg "RS256 " (trailing space) with a real RS256 signature', () => rawJwt({ alg: 'RS256 ', typ: 'JWT' }, claims(clinic.client._id), rs256(clinic.privateKey))],
    ['alg " RS256" (leading space)', () => rawJwt({ alg: ' RS256' }, claims(clinic.client._id), rs256(clinic.privateKey))],
    ['alg "rs256" (lower case)', () => rawJwt({ alg: 'rs256' }, claims(clinic.client._id), rs256(clinic.privateKey))],
    ['alg "RS256\\u0000"', () => rawJwt({ alg: 'RS256\u0000' }, claims(clinic.client._id), rs256(clinic.privateKey))],
    ['alg missing', () => rawJwt({ typ: 'JWT' }, claims(clinic.client._id), rs256(clinic.privateKey))],
    ['alg as an array', () => rawJwt({ alg: ['RS256'] }, claims(clinic.client._id), rs256(clinic.privateKey))],
    ['alg as an object', () => rawJwt({ alg: { $ne: null } }, claims(clinic.client._id), rs256(clinic.privateKey))],
    ['ES256 header over an RS256 signature', () => rawJwt({ alg: 'ES256' }, claims(clinic.client._id), rs256(clinic.privateKey))],
    ['PS256 header over an RS256 (PKCS#1 v1.5) signature', () => rawJwt({ alg: 'PS256' }, claims(clinic.client._id), rs256(clinic.privateKey))],
    ['RS384 signed by the client’s own key (an algorithm the endpoint does not take)', () => rawJwt({ alg: 'RS384' }, claims(clinic.client._id), rs384(clinic.privateKey))],
    ['no iat, otherwise honest (the 5-minute rule needs it)', () => rawJwt({ alg: 'RS256', typ: 'JWT' }, claims(clinic.client._id, { iat: undefined }), rs256(clinic.privateKey))],
    ['the attacker’s key embedded as `jwk`', () => rawJwt({ alg: 'RS256', jwk: attackerJwk }, claims(clinic.client._id), rs256(attackerKey))],
    ['`jku` pointing at the attacker’s JWKS', () => rawJwt({ alg: 'RS256', kid: 'k1', jku: `${jwksOrigin}/attacker.json` }, claims(clinic.client._id), rs256(attackerKey))],
    ['`x5u` pointing at the attacker’s JWKS', () => rawJwt({ alg: 'RS256', x5u: `${jwksOrigin}/attacker.json` }, claims(clinic.client._id), rs256(attackerKey))],
    ['an unknown critical header', () => rawJwt({ alg: 'RS256', crit: ['urn:evil'], 'urn:evil': true }, claims(clinic.client._id), rs256(clinic.privateKey))],
    ['b64: false (unencoded payload)', () => rawJwt({ alg: 'RS256', b64: false, crit: ['b64'] }, claims(clinic.client._id), rs256(clinic.privateKey))],
    ['signed by the attacker’s own RSA key', () => rawJwt({ alg: 'RS256' }, claims(clinic.client._id), rs256(attackerKey))],
    ['a valid signature with the signature bytes flipped', () => {
      const jwt = rawJwt({ alg: 'RS256' }, claims(clinic.client._id), rs256(clinic.privateKey));
      const [h, p, s] = jwt.split('.') as [string, string, string];
      const bytes = Buffer.from(s, 'base64url');
      bytes[0] = bytes[0]! ^ 0xff;
      return `${h}.${p}.${bytes.toString('base64url')}`;
    }],
    ['a signed assertion whose payload was swapped afterwards', () => {
      const [h, , s] = rawJwt({ alg: 'RS256' }, claims(clinic.client._id), rs256(clinic.privateKey)).split('.');
      return `${h}.${b64(claims(clinic.client._id, { exp: Math.floor(Date.now() / 1000) + 3600 }))}.${s}`;
    }],
    ['two signatures (JSON serialization smuggled in the compact form)', () => `${rawJwt({ alg: 'RS256' }, claims(clinic.client._id), rs256(clinic.privateKey))}.extra`],
  ];
  it.each(cases)('%s → 401 invalid_client', async (label, make) => {
    const before = jwksHits.length;
    expectRefused(await postAssertion(make()), label);
    expectRefused(await postAssertion(make(), true), `${label} (form)`);
    // Header URLs are never followed.
    expect(jwksHits.slice(before).filter((p) => p === '/attacker.json')).toEqual([]);
  });

  it('a JWKS client is not fooled by HMAC over its own JWKS document or key', async () => {
    const client = await jwksClient('/good.json');
    const jwk = goodJwks.keys[0] as { n: string };
    for (const secret of [JSON.stringify(goodJwks), jwk.n, JSON.stringify(jwk)]) {
      expectRefused(await postAssertion(rawJwt({ alg: 'HS256', kid: 'k1' }, claims(client._id), hmac('sha256', secret))), 'HS256 over JWKS');
    }
    expectRefused(await postAssertion(rawJwt({ alg: 'none', kid: 'k1' }, claims(client._id), () => '')), 'none with kid');
  });
});

describe('`kid` tricks against a JWKS client: no path from the kid, no fetch storm, no 5xx', () => {
  let client: OAuthClientDoc;
  beforeAll(async () => {
    client = await jwksClient('/good.json');
  });

  it('the right kid is accepted (control)', async () => {
    const res = await postAssertion(rawJwt({ alg: 'RS256', kid: 'k1', typ: 'JWT' }, claims(client._id), rs256(jwksKey)));
    expect(res.status, res.text).toBe(200);
  });

  it.each([
    ['../../etc/passwd'],
    ['/etc/passwd'],
    ['..%2F..%2Fetc%2Fpasswd'],
    ['file:///etc/passwd'],
    [`${'http://127.0.0.1:1/'}`],
    ['k1/../k1'],
    ['k1\u0000'],
    ["k1' OR '1'='1"],
    ['K1'],
    ['x'.repeat(10_000)],
  ])('kid %s, signed with the right key → 401', async (kid) => {
    const before = jwksHits.length;
    expectRefused(await postAssertion(rawJwt({ alg: 'RS256', kid }, claims(client._id), rs256(jwksKey))), `kid ${kid.slice(0, 40)}`);
    // Whatever was fetched (a refetch on an unknown kid is allowed) is the registered URL, nothing derived from the kid.
    for (const p of jwksHits.slice(before)) expect(p).toBe('/good.json');
  });

  it('kid of another type (object, number, array) → 401', async () => {
    for (const kid of [{ $ne: null }, 1, ['k1']]) {
      expectRefused(await postAssertion(rawJwt({ alg: 'RS256', kid }, claims(client._id), rs256(jwksKey))), `kid ${JSON.stringify(kid)}`);
    }
  });

  it('a burst of 30 unknown kids causes at most 3 refetches (the budget\'s burst), a second burst right after at most one more, and the good kid still works', async () => {
    const url = `/good.json?burst-${randomUUID()}`;
    const burstClient = await jwksClient(url);
    const fetches = () => jwksHits.filter((p) => p === url).length;
    const good = await postAssertion(rawJwt({ alg: 'RS256', kid: 'k1' }, claims(burstClient._id), rs256(jwksKey)));
    expect(good.status, good.text).toBe(200);
    expect(fetches()).toBe(1);
    const burst = async () => {
      const answers = await Promise.all(Array.from({ length: 30 }, (_, i) => postAssertion(rawJwt({ alg: 'RS256', kid: `unknown-${i}` }, claims(burstClient._id), rs256(jwksKey)))));
      for (const res of answers) expectRefused(res, 'unknown kid burst');
    };
    await burst();
    const afterFirst = fetches();
    expect(afterFirst - 1).toBeGreaterThanOrEqual(1);
    expect(afterFirst - 1).toBeLessThanOrEqual(3);
    await burst();
    // One refetch per 5 s after the burst: the second burst comes well within 10 s of the first.
    expect(fetches() - afterFirst).toBeLessThanOrEqual(1);
    const res = await postAssertion(rawJwt({ alg: 'RS256', kid: 'k1' }, claims(burstClient._id), rs256(jwksKey)));
    expect(res.status, res.text).toBe(200);
  });

  it('a client rotating its key: the new kid, used right after the set was fetched, is accepted at once (a fixed 5 s cooldown refused it)', async () => {
    const url = `/rotating.json?${randomUUID()}`;
    const rotating = await jwksClient(url);
    const oldKey = rsaKeyPair().privateKey;
    const newKey = rsaKeyPair().privateKey;
    const jwkOf = async (key: KeyObject, kid: string) => ({ ...(await exportJWK(createPublicKey(key))), kid, alg: 'RS256', use: 'sig' });
    rotatingJwks = { keys: [await jwkOf(oldKey, 'old')] };
    const first = await postAssertion(rawJwt({ alg: 'RS256', kid: 'old' }, claims(rotating._id), rs256(oldKey)));
    expect(first.status, first.text).toBe(200);
    rotatingJwks = { keys: [await jwkOf(oldKey, 'old'), await jwkOf(newKey, 'new')] };
    const started = Date.now();
    const rotated = await postAssertion(rawJwt({ alg: 'RS256', kid: 'new' }, claims(rotating._id), rs256(newKey)));
    expect(rotated.status, rotated.text).toBe(200);
    expect(Date.now() - started).toBeLessThan(5000);
    expect(jwksHits.filter((p) => p === url)).toHaveLength(2);
  });
});

describe('Oversized assertions: 400 invalid_request or 401, never a 5xx', () => {
  const bigPayload = (bytes: number) => claims(clinic.client._id, { pad: 'p'.repeat(bytes) });
  it.each([
    ['a 17 KiB assertion (JSON)', () => rawJwt({ alg: 'RS256' }, bigPayload(13 * 1024), rs256(clinic.privateKey)), false],
    ['a 17 KiB assertion (form)', () => rawJwt({ alg: 'RS256' }, bigPayload(13 * 1024), rs256(clinic.privateKey)), true],
    ['a 60 KiB assertion (JSON)', () => rawJwt({ alg: 'RS256' }, bigPayload(45 * 1024), rs256(clinic.privateKey)), false],
    ['a 1 MiB assertion (JSON, beyond the body limit)', () => rawJwt({ alg: 'RS256' }, bigPayload(800 * 1024), rs256(clinic.privateKey)), false],
    ['a 15 KiB header by the attacker (within the limit)', () => rawJwt({ alg: 'RS256', junk: 'j'.repeat(11 * 1024) }, claims(clinic.client._id), rs256(attackerKey)), false],
    ['10000 dots', () => '.'.repeat(10_000), false],
    ['a 16 KiB base64 blob with no dots', () => 'A'.repeat(16_000), true],
  ] as [string, () => string, boolean][])('%s', async (label, make, form) => {
    attacks++;
    const assertion = make();
    const res = await postAssertion(assertion, form);
    expect(res.status, `${label}: ${res.text}`).toBeLessThan(500);
    expect([400, 401]).toContain(res.status);
    expect(res.body.error).toBe(res.status === 400 ? 'invalid_request' : 'invalid_client');
    if (assertion.length > 16 * 1024) expect(res.status).toBe(400);
  });
});

describe('JWKS URLs that misbehave: 401, quickly, nothing followed', () => {
  it('a JWKS that answers after 8 s (timeout 3 s): 401 within 5 s, and the API keeps answering meanwhile', async () => {
    const client = await jwksClient('/slow.json');
    const started = Date.now();
    const slowHits = jwksHits.filter((p) => p === '/slow.json').length;
    const pending = postAssertion(rawJwt({ alg: 'RS256', kid: 'k1' }, claims(client._id), rs256(jwksKey)));
    // The API is now waiting on the slow JWKS (it has asked for it).
    await waitFor(() => jwksHits.filter((p) => p === '/slow.json').length > slowHits, 10_000, 'the JWKS request');
    const liveStarted = Date.now();
    const live = await http(`${api.origin}/livez`);
    expect(live.status).toBe(200);
    expect(Date.now() - liveStarted).toBeLessThan(1000);
    expectRefused(await pending, 'slow JWKS');
    const elapsed = Date.now() - started;
    expect(elapsed).toBeGreaterThanOrEqual(2500);
    expect(elapsed).toBeLessThan(5000);
  }, 15_000);

  it.each([
    ['larger than 64 KiB, with a Content-Length', '/huge.json'],
    ['larger than 64 KiB, chunked without a Content-Length', '/huge-chunked.json'],
    ['an HTTP 500', '/error.json'],
    ['truncated JSON', '/not-json.json'],
  ])('a JWKS document %s (holding the right key): 401', async (_label, path) => {
    const client = await jwksClient(path);
    expectRefused(await postAssertion(rawJwt({ alg: 'RS256', kid: 'k1' }, claims(client._id), rs256(jwksKey))), path);
    expect(jwksHits).toContain(path);
  });

  it('a JWKS URL that redirects (302) to a JWKS holding the right key: 401, the redirect not followed', async () => {
    const client = await jwksClient('/redirect.json');
    const targetHits = jwksHits.filter((p) => p === '/redirect-target.json').length;
    expectRefused(await postAssertion(rawJwt({ alg: 'RS256', kid: 'k1' }, claims(client._id), rs256(jwksKey))), 'redirect');
    expect(jwksHits).toContain('/redirect.json');
    expect(jwksHits.filter((p) => p === '/redirect-target.json').length).toBe(targetHits);
  });
});

describe('Replay: the same assertion sent 20 times at once gives exactly one token', () => {
  it.each([['JSON', false], ['JSON and form mixed', true]] as [string, boolean][])('%s', async (_label, mixed) => {
    const assertion = await signAssertion(clinic.client._id, clinic.privateKey, api.audience);
    const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => postAssertion(assertion, mixed && i % 2 === 1)));
    attacks += 19;
    expect(answers.map((a) => a.status).sort().join(','), answers.map((a) => a.text).join('\n')).toBe([200, ...Array(19).fill(401)].join(','));
    for (const a of answers.filter((x) => x.status === 401)) {
      expect(a.body.error).toBe('invalid_client');
      refusals.add(a.body.error_description);
    }
    // And later, once more: still refused.
    expectRefused(await postAssertion(assertion), 'late replay');
  });
});

describe('A disabled client: no new token at once, and its tokens stop working once the client cache expires', () => {
  it('401 on the token endpoint immediately, 401 with WWW-Authenticate: Bearer on /users after the 200 ms cache', async () => {
    const c = await registerTestClient(api.models, { name: 'Soon disabled' });
    const token = await getToken(api, c);
    const id = `dis-${randomUUID()}`;
    expect((await postUser(api, token, { provider_email: `${id}@x.com`, external_provider_id: id })).status).toBe(201);
    expect((await getUser(api, token, id)).status).toBe(200);

    await disableClient(api.models, c.client._id);
    expectRefused(await postAssertion(await signAssertion(c.client._id, c.privateKey, api.audience)), 'disabled client assertion');
    // The bearer path honours the disable once its 200 ms cache entry expires: poll for it.
    await waitFor(async () => (await getUser(api, token, id)).status === 401, 10_000, 'the cached client to expire');
    for (const res of [await getUser(api, token, id), await postUser(api, token, { provider_email: `${id}@x.com`, external_provider_id: id, settings: { speech_locale: 'THAI_TH' } })]) {
      attacks++;
      expect(res.status).toBe(401);
      expect(res.headers.get('www-authenticate')).toMatch(/^Bearer/);
      expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    }
    const stored = await api.models.ProviderUser.findOne({ organization_id: c.organization._id, external_provider_id: id }).lean();
    expect(stored?.settings).toBeNull();
    expect(stored?.version).toBe(1);
  });
});

describe('Organizations apart: one organization’s token never reads or changes another’s users', () => {
  it('GET answers 404, POST creates a separate user, and the first organization’s user is untouched', async () => {
    const a = await registerTestClient(api.models, { name: 'Org A' });
    const b = await registerTestClient(api.models, { name: 'Org B' });
    const [ta, tb] = [await getToken(api, a), await getToken(api, b)];
    const id = `shared-${randomUUID()}`;
    const created = await postUser(api, ta, { provider_email: `Alice.${id}@a.example.com`, external_provider_id: id, settings: { speech_locale: 'FRENCH_FR', specialty: { kind: 'CARDIOLOGY' } } });
    expect(created.status).toBe(201);

    attacks++;
    const read = await getUser(api, tb, id);
    expect(read.status).toBe(404);
    expect(read.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(read.text).not.toContain('Alice');

    // Same id and email from B: B's own new user, not A's, and no email conflict across organizations.
    attacks++;
    const own = await postUser(api, tb, { provider_email: `alice.${id}@a.example.com`, external_provider_id: id, settings: { speech_locale: 'GERMAN_DE' } });
    expect(own.status).toBe(201);
    expect(own.body).toMatchObject({ provider_email: `alice.${id}@a.example.com`, version: 1, settings: { speech_locale: 'GERMAN_DE', specialty: null } });

    // B's other email for the same id is B's business only.
    attacks++;
    expect((await postUser(api, tb, { provider_email: `mallory.${id}@b.example.com`, external_provider_id: id })).status).toBe(409);

    const mine = await getUser(api, ta, id);
    expect(mine.status).toBe(200);
    expect(mine.body).toMatchObject({ provider_email: `Alice.${id}@a.example.com`, version: 1, settings: { speech_locale: 'FRENCH_FR', specialty: { kind: 'CARDIOLOGY', other_specialty_name: null } } });
    const docs = await api.models.ProviderUser.find({ external_provider_id: id }).lean();
    expect(docs.map((d) => d.organization_id).sort()).toEqual([a.organization._id, b.organization._id].sort());

    // A token whose org claim was rewritten to A's organization does not verify.
    attacks++;
    const [h, p, s] = tb.split('.') as [string, string, string];
    const forged = `${h}.${b64({ ...JSON.parse(Buffer.from(p, 'base64url').toString()), org_id: a.organization._id })}.${s}`;
    expect((await getUser(api, forged, id)).status).toBe(401);
  });
});

describe('No refusal tells an attacker about a client or its key', () => {
  it('every invalid_client description above is "Client authentication failed." or one of the refusals that depend on no client and no key (the algorithm, the JWT\'s shape) or on an assertion the client\'s key signed (a replay, no iat)', () => {
    const unsaid = 'Client authentication failed.';
    const allowed = [
      unsaid,
      "The assertion's alg must be one of RS256, PS256, ES256, EdDSA.",
      'client_assertion is not a signed JWT (three base64url parts: header, claims, signature).',
      'This assertion was used already (its jti): sign a new one, with a new jti, for each token request.',
      'The assertion must carry iat.',
    ];
    expect([...refusals].filter((r) => !allowed.includes(r))).toEqual([]);
    // The unknown kids, wrong keys, tampered signatures, disabled and unknown clients above all read the same.
    expect(refusals).toContain(unsaid);
  });
});
