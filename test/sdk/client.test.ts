/**
 * @connect/client against the real API (FerretDB, Redis), through a recording
 * HTTP proxy so token requests are counted on the wire and a gateway 429 can be
 * answered in front of the API.
 */
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { decodeProtectedHeader, exportJWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AuthenticationError,
  ConnectApiError,
  ConnectClient,
  ConnectNetworkError,
  EmailConflictError,
  EmailMismatchError,
  NotFoundError,
  RateLimitedError,
  ValidationError,
} from '@connect/client';
import { registerClient, registerOrganization } from '@connect/shared';
import { databaseUrl, registerTestClient, rsaKeyPair, startTestApi, type TestApi, type TestClient } from '../support/harness.ts';
import { startRecordingProxy, type RecordingProxy } from './recording-proxy.ts';

const BASE_PATH = '/v1/connect/server';
const signingKeyPem = () => generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();

let proxy: RecordingProxy;
let mongoUrl: string;
let api: TestApi;
let clinic: TestClient;
const opened: TestApi[] = [];

/** An API instance over the shared database that believes it is reached at the proxy's address. */
async function apiBehindProxy(env: Record<string, string> = {}): Promise<TestApi> {
  const started = await startTestApi({ label: 'sdk-client', mongoUrl, env: { PUBLIC_BASE_URL: proxy.origin, TOKEN_SIGNING_KEY: signingKeyPem(), RATE_LIMIT_PER_CLIENT_PER_MINUTE: '0', ...env } });
  opened.push(started);
  return started;
}

const client = (extra: Partial<ConstructorParameters<typeof ConnectClient>[0]> = {}) =>
  new ConnectClient({ baseUrl: `${proxy.origin}${BASE_PATH}`, clientId: clinic.client._id, privateKey: clinic.privateKey, ...extra });
const tokenRequests = () => proxy.seen.filter((s) => s.path.endsWith('/oauth/token')).length;
const newId = () => `sdk-${randomUUID()}`;
const settings = { speech_locale: 'ENGLISH_US' as const, specialty: { kind: 'CARDIOLOGY' as const } };

beforeAll(async () => {
  proxy = await startRecordingProxy();
  mongoUrl = databaseUrl('sdk_client');
  api = await apiBehindProxy();
  proxy.upstream = api.origin;
  clinic = await registerTestClient(api.models);
});
afterAll(async () => {
  for (const a of opened) await a.close();
  await proxy?.close();
});

describe('tokens: one token request for any number of concurrent calls', () => {
  it('100 concurrent upsertUser calls on a fresh client make exactly 1 token request and create 100 users', async () => {
    const before = tokenRequests();
    const sdk = client();
    const results = await Promise.all(Array.from({ length: 100 }, (_, i) => sdk.upsertUser({ provider_email: `burst-${i}-${randomUUID()}@example.com`, external_provider_id: newId(), settings })));
    expect(tokenRequests() - before).toBe(1);
    expect(results.map((r) => r.outcome)).toEqual(Array(100).fill('created'));
    expect(new Set(results.map((r) => r.user.external_provider_id)).size).toBe(100);
  });

  it('a token the server no longer accepts (signing key rotated) is refreshed once and the call retried', async () => {
    const sdk = client();
    const id = newId();
    await sdk.upsertUser({ provider_email: `${id}@example.com`, external_provider_id: id });
    const before = proxy.seen.length;
    // Another instance with another signing key: the cached token now fails verification (401).
    const rotated = await apiBehindProxy();
    proxy.upstream = rotated.origin;
    try {
      const user = await sdk.getUser(id);
      expect(user.external_provider_id).toBe(id);
      const after = proxy.seen.slice(before).map((s) => `${s.method} ${s.path.replace(BASE_PATH, '')} ${s.status}`);
      expect(after).toEqual([`GET /users/${id} 401`, 'POST /oauth/token 200', `GET /users/${id} 200`]);
    } finally {
      proxy.upstream = api.origin;
    }
  });
});

describe('tokens: an expired token', () => {
  /** An API that issues 2 s tokens (under the environment's 60 s floor), behind the proxy. */
  async function shortLivedApi(): Promise<TestApi> {
    const started = await startTestApi({ label: 'sdk-client-ttl', mongoUrl, env: { PUBLIC_BASE_URL: proxy.origin, TOKEN_SIGNING_KEY: signingKeyPem(), RATE_LIMIT_PER_CLIENT_PER_MINUTE: '0' }, config: { accessTokenTtlSeconds: 2 } });
    opened.push(started);
    return started;
  }
  const urlOf = (input: Parameters<typeof fetch>[0]) => (input instanceof Request ? input.url : input.toString());
  const expiryOf = (token: string) => (JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { exp: number }).exp * 1000;
  /** Waits until the server's clock has passed the token's exp (jose allows no tolerance by default). */
  const untilExpired = async (token: string) => {
    while (Date.now() <= expiryOf(token) + 50) await new Promise((r) => setTimeout(r, 100));
  };

  /**
   * Creates a user through a fresh SDK on a 2 s-token API, waits until its token has expired on
   * the server, reads the user back, and answers what reached the proxy for that read.
   * `lifetimeTold`: what the SDK is told the token lives (the server's own expires_in when absent).
   */
  async function readAfterExpiry(lifetimeTold?: number): Promise<{ id: string; calls: string[]; first: string; last: string }> {
    const shortLived = await shortLivedApi();
    proxy.upstream = shortLived.origin;
    try {
      const issued: string[] = [];
      const tokenWatch: typeof fetch = async (input, init) => {
        const response = await fetch(input, init);
        if (!urlOf(input).endsWith('/oauth/token') || !response.ok) return response;
        const body = (await response.json()) as { access_token: string; expires_in: number };
        issued.push(body.access_token);
        return Response.json({ ...body, expires_in: lifetimeTold ?? body.expires_in });
      };
      const sdk = client({ fetch: tokenWatch });
      const id = newId();
      await sdk.upsertUser({ provider_email: `${id}@example.com`, external_provider_id: id });
      await untilExpired(issued[0]!);
      const before = proxy.seen.length;
      expect((await sdk.getUser(id)).external_provider_id).toBe(id);
      const calls = proxy.seen.slice(before).map((s) => `${s.method} ${s.path.replace(BASE_PATH, '')} ${s.status}`);
      return { id, calls, first: issued[0]!, last: issued.at(-1)! };
    } finally {
      proxy.upstream = api.origin;
    }
  }

  it('one the server refuses as expired (the SDK was told it lives an hour) is refreshed once and the call retried', async () => {
    // Told an hour, the SDK keeps the token: only the server's 401 can tell it the token expired.
    const { id, calls, first, last } = await readAfterExpiry(3600);
    expect(calls).toEqual([`GET /users/${id} 401`, 'POST /oauth/token 200', `GET /users/${id} 200`]);
    expect(last).not.toBe(first);
  });

  it('one told by expires_in is replaced before it expires: a new token first, no 401', async () => {
    const { id, calls, first, last } = await readAfterExpiry();
    expect(calls).toEqual(['POST /oauth/token 200', `GET /users/${id} 200`]);
    expect(last).not.toBe(first);
  });
});

describe('keys: RS256 by default, ES256 and EdDSA from the key type', () => {
  it.each([
    ['ES256 (P-256, as a PEM string)', () => generateKeyPairSync('ec', { namedCurve: 'P-256' })],
    ['EdDSA (Ed25519)', () => generateKeyPairSync('ed25519')],
  ])('a client registered with an %s key gets a token and upserts', async (_name, makeKeys) => {
    const { privateKey, publicKey } = makeKeys();
    const organization = await registerOrganization(api.models, { name: 'Key types clinic' });
    const registered = await registerClient(api.models, { organizationId: organization._id, publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString() });
    const sdk = new ConnectClient({ baseUrl: `${proxy.origin}${BASE_PATH}`, clientId: registered._id, privateKey: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() });
    const id = newId();
    expect((await sdk.upsertUser({ provider_email: `${id}@example.com`, external_provider_id: id })).outcome).toBe('created');
  });

  it('keyId: the client assertion names its key (kid), and the server verifies with that key of a JWKS client\'s set; a kid naming another key of the set is refused', async () => {
    const ours = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const theirs = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const jwks = { keys: [{ ...(await exportJWK(theirs.publicKey)), kid: 'k-old', alg: 'RS256' }, { ...(await exportJWK(ours.publicKey)), kid: 'k-new', alg: 'RS256' }] };
    const server = createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(jwks)));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const organization = await registerOrganization(api.models, { name: 'Key id clinic' });
      const registered = await registerClient(api.models, { organizationId: organization._id, jwksUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json` });
      const kids: (string | undefined)[] = [];
      const watch: typeof fetch = async (input, init) => {
        const url = input instanceof Request ? input.url : input.toString();
        if (url.endsWith('/oauth/token')) kids.push(decodeProtectedHeader(new URLSearchParams(init?.body as string).get('client_assertion')!).kid);
        return fetch(input, init);
      };
      const privateKey = ours.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
      const sdk = new ConnectClient({ baseUrl: `${proxy.origin}${BASE_PATH}`, clientId: registered._id, privateKey, keyId: 'k-new', fetch: watch });
      const id = newId();
      expect((await sdk.upsertUser({ provider_email: `${id}@example.com`, external_provider_id: id })).outcome).toBe('created');
      expect(kids).toEqual(['k-new']);
      const wrongKid = new ConnectClient({ baseUrl: `${proxy.origin}${BASE_PATH}`, clientId: registered._id, privateKey, keyId: 'k-old', fetch: watch, maxRetries: 0 });
      await expect(wrongKid.getUser(id)).rejects.toBeInstanceOf(AuthenticationError);
      expect(kids.at(-1)).toBe('k-old');
    } finally {
      server.close();
    }
  });
});

describe('tokens: only one refresh per call', () => {
  it('a 401 that persists with a fresh token is not retried again: one refresh, then AuthenticationError', async () => {
    const sdk = client();
    await expect(sdk.getUser(newId())).rejects.toBeInstanceOf(NotFoundError); // a token is cached now
    const before = proxy.seen.length;
    const unauthorized = { match: (m: string) => m === 'GET', status: 401, headers: { 'www-authenticate': 'Bearer' } };
    proxy.inject(unauthorized);
    proxy.inject(unauthorized);
    const error = await sdk.getUser(newId()).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AuthenticationError);
    expect(proxy.seen.slice(before).map((s) => `${s.method} ${s.status}`)).toEqual(['GET 401', 'POST 200', 'GET 401']);
  });
});

describe('retries: 429/502/503/504 with backoff, honouring Retry-After', () => {
  it('a 429 with Retry-After: 1 is waited out and the call retried', async () => {
    const sdk = client();
    const id = newId();
    await sdk.upsertUser({ provider_email: `${id}@example.com`, external_provider_id: id });
    proxy.inject({ match: (m, p) => m === 'POST' && p.endsWith('/users'), status: 429, headers: { 'retry-after': '1' } });
    const before = proxy.seen.length;
    const result = await sdk.upsertUser({ provider_email: `${id}@example.com`, external_provider_id: id, settings });
    expect(result.outcome).toBe('updated');
    const posts = proxy.seen.slice(before).filter((s) => s.method === 'POST' && s.path.endsWith('/users'));
    expect(posts.map((s) => s.status)).toEqual([429, 200]);
    expect(posts[1]!.at - posts[0]!.at).toBeGreaterThanOrEqual(950);
  });

  it('a 503 then a 502 are retried; maxRetries: 0 gives the answer at once as a typed error', async () => {
    const sdk = client();
    const id = newId();
    proxy.inject({ match: (m) => m === 'POST', status: 503 });
    proxy.inject({ match: (m) => m === 'POST', status: 502 });
    expect((await sdk.upsertUser({ provider_email: `${id}@example.com`, external_provider_id: id })).outcome).toBe('created');
    proxy.inject({ match: (m) => m === 'GET', status: 503, body: JSON.stringify({ type: 'https://connect-provisioning.dev/problems/unavailable', title: 'Service unavailable', status: 503, detail: 'later' }) });
    const error = await client({ maxRetries: 0 }).getUser(id).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConnectApiError);
    expect((error as ConnectApiError).status).toBe(503);
    expect((error as ConnectApiError).problem.detail).toBe('later');
  });

  it('a 504 from the gateway is retried: two requests on the wire, the second answered by the API', async () => {
    const sdk = client();
    const id = newId();
    await sdk.upsertUser({ provider_email: `${id}@example.com`, external_provider_id: id }); // a token is cached now
    proxy.inject({ match: (m, p) => m === 'GET' && p.includes(id), status: 504, headers: { 'content-type': 'text/plain' }, body: 'Gateway Timeout' });
    const before = proxy.seen.length;
    expect((await sdk.getUser(id)).external_provider_id).toBe(id);
    expect(proxy.seen.slice(before).map((s) => `${s.method} ${s.status}`)).toEqual(['GET 504', 'GET 200']);
  });

  it('a connection dropped unanswered is retried (maxRetries: 1): the POST goes out again and succeeds; with maxRetries: 0 it is a ConnectNetworkError', async () => {
    const id = newId();
    const drop = { match: (m: string, p: string) => m === 'POST' && p.endsWith('/users'), status: 0, reset: true };
    const sdk = client({ maxRetries: 1 });
    await sdk.getUser(id).catch(() => undefined); // a token is cached now
    proxy.inject(drop);
    const before = proxy.seen.length;
    expect((await sdk.upsertUser({ provider_email: `${id}@example.com`, external_provider_id: id })).outcome).toBe('created');
    expect(proxy.seen.slice(before).map((s) => `${s.method} ${s.status}`)).toEqual(['POST 0', 'POST 201']);
    // The same drop without a retry left: the error is the network's, so the success above was the retry's.
    const once = client({ maxRetries: 0 });
    await once.getUser(id);
    proxy.inject(drop);
    const error = await once.upsertUser({ provider_email: `${id}@example.com`, external_provider_id: id }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConnectNetworkError);
  });

  it('a caller\'s fetch that throws TypeError (fetch\'s network error) once is retried, and the call succeeds on the second attempt', async () => {
    const id = newId();
    const attempts: string[] = [];
    let failed = false;
    const flaky: typeof fetch = async (input, init) => {
      const url = input instanceof Request ? input.url : input.toString();
      if (url.endsWith('/users') && init?.method === 'POST') {
        attempts.push(failed ? 'sent' : 'failed');
        if (!failed) {
          failed = true;
          throw new TypeError('fetch failed');
        }
      }
      return fetch(input, init);
    };
    const before = proxy.seen.length;
    const result = await client({ fetch: flaky, maxRetries: 1 }).upsertUser({ provider_email: `${id}@example.com`, external_provider_id: id });
    expect(result.outcome).toBe('created');
    expect(attempts).toEqual(['failed', 'sent']);
    expect(proxy.seen.slice(before).filter((s) => s.path.endsWith('/users')).map((s) => `${s.method} ${s.status}`)).toEqual(['POST 201']);
  });

  it('a gateway\'s HTML error page becomes a message in words: the status, then the page\'s text without markup', async () => {
    proxy.inject({ match: (m) => m === 'GET', status: 502, headers: { 'content-type': 'text/html' }, body: '<html><head><title>502 Bad Gateway</title><style>b{x:y}</style></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>' });
    const error = await client({ maxRetries: 0 }).getUser(newId()).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConnectApiError);
    expect((error as ConnectApiError).message).toBe('HTTP 502 Bad Gateway: 502 Bad Gateway 502 Bad Gateway nginx');
  });
});

describe('waits the caller controls', () => {
  it('a Retry-After longer than maxRetryWaitMs (60 s by default) is not waited out: the error comes at once and says how long', async () => {
    const sdk = client();
    const id = newId();
    await sdk.upsertUser({ provider_email: `${id}@example.com`, external_provider_id: id });
    proxy.inject({ match: (m, p) => m === 'GET' && p.includes(id), status: 429, headers: { 'retry-after': '3600' } });
    const before = proxy.seen.length;
    const error = await sdk.getUser(id).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RateLimitedError);
    expect((error as RateLimitedError).retryAfterSeconds).toBe(3600);
    expect(proxy.seen.slice(before).filter((s) => s.path.includes(id))).toHaveLength(1);
    // Within the bound it is waited out as before.
    proxy.inject({ match: (m, p) => m === 'GET' && p.includes(id), status: 503, headers: { 'retry-after': '1' } });
    expect((await client({ maxRetryWaitMs: 1000 }).getUser(id)).external_provider_id).toBe(id);
  });

  // The API answers 503 + Retry-After while it shuts down or a datastore is down; a gateway may answer 502/504 with one.
  it('a 503 or 502 whose Retry-After (seconds or an HTTP date) is longer than maxRetryWaitMs ends the call at once, and its ConnectApiError carries retryAfterSeconds', async () => {
    const sdk = client();
    const id = newId();
    await sdk.upsertUser({ provider_email: `${id}@example.com`, external_provider_id: id });
    const before = proxy.seen.length;
    proxy.inject({ match: (m, p) => m === 'GET' && p.includes(id), status: 503, headers: { 'retry-after': '120' } });
    const seconds = await sdk.getUser(id).catch((e: unknown) => e);
    expect(seconds).toBeInstanceOf(ConnectApiError);
    expect(seconds).not.toBeInstanceOf(RateLimitedError);
    expect((seconds as ConnectApiError).status).toBe(503);
    expect((seconds as ConnectApiError).retryAfterSeconds).toBe(120);
    // Two hours from now as an IMF-fixdate; whole seconds on the wire, so a second either way.
    proxy.inject({ match: (m, p) => m === 'GET' && p.includes(id), status: 502, headers: { 'retry-after': new Date(Date.now() + 7_200_000).toUTCString() } });
    const date = await sdk.getUser(id).catch((e: unknown) => e);
    expect((date as ConnectApiError).status).toBe(502);
    expect((date as ConnectApiError).retryAfterSeconds).toBeGreaterThanOrEqual(7_198);
    expect((date as ConnectApiError).retryAfterSeconds).toBeLessThanOrEqual(7_200);
    expect(proxy.seen.slice(before).filter((s) => s.path.includes(id))).toHaveLength(2);
  });

  it('retries spent: the error carries the last answer\'s Retry-After (and none when that answer had none)', async () => {
    const sdk = client({ maxRetries: 1 });
    const id = newId();
    await sdk.upsertUser({ provider_email: `${id}@example.com`, external_provider_id: id });
    proxy.inject({ match: (m, p) => m === 'GET' && p.includes(id), status: 503, headers: { 'retry-after': '0' } });
    proxy.inject({ match: (m, p) => m === 'GET' && p.includes(id), status: 503, headers: { 'retry-after': '1' } });
    const spent = await sdk.getUser(id).catch((e: unknown) => e);
    expect((spent as ConnectApiError).status).toBe(503);
    expect((spent as ConnectApiError).retryAfterSeconds).toBe(1);
    proxy.inject({ match: (m, p) => m === 'GET' && p.includes(id), status: 503, headers: { 'retry-after': '0' } });
    proxy.inject({ match: (m, p) => m === 'GET' && p.includes(id), status: 504 });
    const without = await sdk.getUser(id).catch((e: unknown) => e);
    expect((without as ConnectApiError).status).toBe(504);
    expect((without as ConnectApiError).retryAfterSeconds).toBeUndefined();
  });

  it('an AbortSignal abandons a call waiting out a Retry-After: it rejects with the signal\'s reason, and sends nothing more', async () => {
    const sdk = client();
    const id = newId();
    await sdk.upsertUser({ provider_email: `${id}@example.com`, external_provider_id: id });
    proxy.inject({ match: (m, p) => m === 'GET' && p.includes(id), status: 503, headers: { 'retry-after': '30' } });
    const controller = new AbortController();
    const before = proxy.seen.length;
    const call = sdk.getUser(id, { signal: controller.signal }).catch((e: unknown) => e);
    await expect.poll(() => proxy.seen.slice(before).filter((s) => s.path.includes(id)).length).toBe(1);
    controller.abort(new Error('the caller gave up'));
    expect(await call).toEqual(new Error('the caller gave up'));
    // An already aborted signal: nothing is sent at all.
    const sent = proxy.seen.length;
    const early = await sdk.upsertUser({ provider_email: `${id}@example.com`, external_provider_id: id }, { signal: AbortSignal.abort() }).catch((e: unknown) => e);
    expect((early as Error).name).toBe('AbortError');
    // The proxy has seen no request since: a later call is the first one it records.
    await sdk.getUser(id);
    expect(proxy.seen.slice(sent).map((s) => s.method)).toEqual(['GET']);
  });

  it('the audience option: a client reaching the API by another name than its PUBLIC_BASE_URL signs for the name the server knows', async () => {
    // `api` believes it is reached at the proxy's address; this client talks to it directly.
    const direct = { baseUrl: api.baseUrl, clientId: clinic.client._id, privateKey: clinic.privateKey };
    const refused = await new ConnectClient(direct).getUser('nobody').catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(AuthenticationError);
    expect((refused as Error).message).toContain(`audience, which was ${api.baseUrl}/oauth/token`);
    const sdk = new ConnectClient({ ...direct, audience: `${proxy.origin}${BASE_PATH}/oauth/token` });
    expect(await sdk.getUser('nobody').catch((e: unknown) => e)).toBeInstanceOf(NotFoundError);
  });

  it('a baseUrl without the base path: the token request meets no route, and the error says what baseUrl must be (it read as refused credentials)', async () => {
    const noPath = await new ConnectClient({ baseUrl: api.origin, clientId: clinic.client._id, privateKey: clinic.privateKey }).getUser('nobody').catch((e: unknown) => e);
    expect(noPath).toBeInstanceOf(AuthenticationError);
    expect((noPath as Error).message).toContain(`nothing answers at "${api.origin}/oauth/token": baseUrl must be the API's base URL, path included`);
  });
});

describe('a 2xx whose body is not JSON (a proxy\'s page)', () => {
  it('is a ConnectApiError, on the token request (its body not quoted) and on a call, never a SyntaxError', async () => {
    const id = newId();
    const page = '<html><body>Welcome to the hotel network</body></html>';
    proxy.inject({ match: (m, p) => m === 'POST' && p.endsWith('/oauth/token'), status: 200, body: page });
    const onToken = await client().getUser(id).catch((e: unknown) => e);
    expect(onToken).toBeInstanceOf(ConnectApiError);
    expect((onToken as ConnectApiError).problem).toMatchObject({ title: 'Answer is not JSON', status: 200 });
    // Not quoted: a token endpoint answer may hold the token (a form-encoded one, JSON cut short).
    expect((onToken as ConnectApiError).message).toBe(`HTTP 200 with a body that is not JSON (${page.length} characters, not quoted: a token endpoint answer may hold credentials)`);

    const sdk = client();
    await sdk.upsertUser({ provider_email: `${id}@example.com`, external_provider_id: id });
    proxy.inject({ match: (m, p) => m === 'GET' && p.includes(id), status: 200, body: page });
    const onCall = await sdk.getUser(id).catch((e: unknown) => e);
    expect(onCall).toBeInstanceOf(ConnectApiError);
    expect((onCall as ConnectApiError).status).toBe(200);
  });
});

describe('an external_provider_id holding a lone surrogate', () => {
  it('getUser and deactivateUser fail as a ConnectApiError 400 from the server, as upsertUser does, not with a URIError', async () => {
    const sdk = client();
    for (const id of ['\ud800', `x\udc00y-${randomUUID()}`, `😀\ud83d`]) {
      for (const call of [() => sdk.getUser(id), () => sdk.deactivateUser(id), () => sdk.upsertUser({ provider_email: 'lone@example.com', external_provider_id: id })]) {
        const error = await call().then(() => undefined, (err: unknown) => err);
        expect(error, id).toBeInstanceOf(ConnectApiError);
        expect((error as ConnectApiError).status).toBe(400);
      }
    }
  });
});

describe('upsertUser outcome (X-Connect-Outcome)', () => {
  it('created, then updated, then unchanged for a request that changes nothing', async () => {
    const sdk = client();
    const id = newId();
    const body = { provider_email: `${id}@example.com`, external_provider_id: id };
    expect((await sdk.upsertUser(body)).outcome).toBe('created');
    const updated = await sdk.upsertUser({ ...body, settings });
    expect(updated.outcome).toBe('updated');
    const unchanged = await sdk.upsertUser({ ...body, settings });
    expect(unchanged.outcome).toBe('unchanged');
    expect(unchanged.user.version).toBe(updated.user.version);
    expect(unchanged.user.updated_at).toBe(updated.user.updated_at);
  });
});

describe('upsertUser outcome when an attempt of the call may have reached the server (its answer lost, then retried)', () => {
  /** A fetch through which the first POST /users reaches the API but its answer is lost (a TypeError after it was served), or, `beforeSending`, never goes out. */
  const losingFirstAnswer = (beforeSending = false): typeof fetch => {
    let lost = false;
    return async (input, init) => {
      const url = input instanceof Request ? input.url : input.toString();
      if (!lost && url.endsWith('/users') && init?.method === 'POST') {
        lost = true;
        if (!beforeSending) await (await fetch(input, init)).text();
        throw new TypeError('fetch failed', { cause: new Error('read ECONNRESET') });
      }
      return fetch(input, init);
    };
  };

  it('the lost attempt created the user: created, not the retry answer unchanged', async () => {
    const id = newId();
    const result = await client({ fetch: losingFirstAnswer(), maxRetries: 1 }).upsertUser({ provider_email: `${id}@example.com`, external_provider_id: id });
    expect(result).toMatchObject({ outcome: 'created', retried: true, user: { version: 1 } });
  });

  it('the lost attempt updated the user: updated, not unchanged', async () => {
    const id = newId();
    const body = { provider_email: `${id}@example.com`, external_provider_id: id };
    await client().upsertUser(body);
    const result = await client({ fetch: losingFirstAnswer(), maxRetries: 1 }).upsertUser({ ...body, settings });
    expect(result).toMatchObject({ outcome: 'updated', retried: true, user: { version: 2 } });
  });

  it('the failed attempt never went out and nothing changed: unchanged (the user was written before the call), retried true', async () => {
    const id = newId();
    const body = { provider_email: `${id}@example.com`, external_provider_id: id };
    await client().upsertUser(body);
    await new Promise((r) => setTimeout(r, 20));
    const result = await client({ fetch: losingFirstAnswer(true), maxRetries: 1 }).upsertUser(body);
    expect(result).toMatchObject({ outcome: 'unchanged', retried: true, user: { version: 1 } });
    expect((await client().upsertUser(body)).retried).toBe(false);
  });
});

describe('typed errors from real server answers', () => {
  it('ValidationError carries the problem and errors[] naming the field', async () => {
    const error = await client()
      .upsertUser({ provider_email: 'not an email', external_provider_id: newId() })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ValidationError);
    expect(error).toBeInstanceOf(ConnectApiError);
    expect((error as ValidationError).status).toBe(400);
    expect((error as ValidationError).errors.map((e) => e.path)).toContain('provider_email');
    expect((error as ValidationError).problem.type).toMatch(/validation$/);
  });

  it('EmailMismatchError: the id exists with another email', async () => {
    const sdk = client();
    const id = newId();
    await sdk.upsertUser({ provider_email: `${id}@example.com`, external_provider_id: id });
    const error = await sdk.upsertUser({ provider_email: `other-${id}@example.com`, external_provider_id: id }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(EmailMismatchError);
    expect((error as EmailMismatchError).status).toBe(409);
  });

  it('EmailConflictError: another user has the email', async () => {
    const sdk = client();
    const id = newId();
    await sdk.upsertUser({ provider_email: `${id}@example.com`, external_provider_id: id });
    const error = await sdk.upsertUser({ provider_email: `${id}@example.com`, external_provider_id: newId() }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(EmailConflictError);
    expect((error as EmailConflictError).problem.status).toBe(409);
  });

  it('NotFoundError: getUser for an id the organization does not have', async () => {
    const error = await client().getUser(newId()).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(NotFoundError);
    expect((error as NotFoundError).status).toBe(404);
  });

  it('AuthenticationError: the token endpoint refuses a key the client was not registered with', async () => {
    const error = await client({ privateKey: rsaKeyPair().privateKey })
      .getUser('x')
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AuthenticationError);
    expect((error as AuthenticationError).status).toBe(401);
    expect((error as AuthenticationError).problem.title).toBe('invalid_client');
  });

  it('RateLimitedError: the API\'s own per-client limit, once retries are spent', async () => {
    const limited = await startTestApi({ label: 'sdk-limit', mongoUrl, env: { RATE_LIMIT_PER_CLIENT_PER_MINUTE: '2' } });
    opened.push(limited);
    const sdk = new ConnectClient({ baseUrl: limited.baseUrl, clientId: clinic.client._id, privateKey: clinic.privateKey, maxRetries: 0 });
    let error: unknown;
    for (let i = 0; i < 20 && !error; i++) error = await sdk.getUser(newId()).then(() => undefined, (e: unknown) => (e instanceof NotFoundError ? undefined : e));
    expect(error).toBeInstanceOf(RateLimitedError);
    expect((error as RateLimitedError).status).toBe(429);
    expect((error as RateLimitedError).retryAfterSeconds).toBeGreaterThanOrEqual(1);
  });
});

describe('preview lifecycle: listUsers and deactivateUser (x-nabla-next unless apiVersion says otherwise)', () => {
  it('listUsers gives every user (of the token\'s organization only), fetching pages of limit 100 lazily; listUserPages gives the pages', async () => {
    const other = await registerTestClient(api.models, { name: 'Listing clinic' });
    const sdk = new ConnectClient({ baseUrl: `${proxy.origin}${BASE_PATH}`, clientId: other.client._id, privateKey: other.privateKey });
    const ids: string[] = [];
    for (let i = 0; i < 250; i += 25) {
      const batch = Array.from({ length: 25 }, () => newId());
      ids.push(...batch);
      await Promise.all(batch.map((id) => sdk.upsertUser({ provider_email: `${id}@example.com`, external_provider_id: id })));
    }
    const gets = () => proxy.seen.filter((s) => s.method === 'GET' && /\/users(\?|$)/.test(s.path)).length;
    const before = gets();
    const listed: string[] = [];
    for await (const user of sdk.listUsers({ limit: 100 })) {
      expect(user.status).toBe('active');
      listed.push(user.external_provider_id);
      // Lazily: the second page is asked for only once the loop reaches its first user.
      if (listed.length === 100) expect(gets() - before).toBe(1);
    }
    expect(listed.sort()).toEqual([...ids].sort());
    expect(gets() - before).toBe(3);
    const pages: number[] = [];
    for await (const page of sdk.listUserPages({ limit: 100 })) pages.push(page.data.length);
    expect(pages).toEqual([100, 100, 50]);
    // Stopping the loop stops fetching.
    const beforeBreak = gets();
    for await (const user of sdk.listUsers({ limit: 100 })) if (user) break;
    expect(gets() - beforeBreak).toBe(1);
  });

  it('deactivateUser answers the user deactivated; a second call answers 200 again; listUsers({status}) sees it', async () => {
    const sdk = client();
    const id = newId();
    const created = await sdk.upsertUser({ provider_email: `${id}@example.com`, external_provider_id: id });
    const gone = await sdk.deactivateUser(id);
    expect(gone).toMatchObject({ external_provider_id: id, status: 'deactivated', version: created.user.version + 1 });
    expect(gone.deactivated_at).toEqual(expect.stringMatching(/^\d{4}-/));
    const again = await sdk.deactivateUser(id);
    expect(again.version).toBe(gone.version);
    let found = false;
    for await (const user of sdk.listAllUsers({ status: 'deactivated', limit: 200 })) if (user.external_provider_id === id) found = true;
    expect(found).toBe(true);
    await expect(sdk.deactivateUser(newId())).rejects.toBeInstanceOf(NotFoundError);
  });

  it('upsertUser on a deactivated user reactivates it (status active, settings merged)', async () => {
    const sdk = client({ apiVersion: 'x-nabla-next' });
    const id = newId();
    await sdk.upsertUser({ provider_email: `${id}@example.com`, external_provider_id: id });
    await sdk.deactivateUser(id);
    const back = await sdk.upsertUser({ provider_email: `${id}@example.com`, external_provider_id: id, settings });
    expect(back.outcome).toBe('updated');
    expect(back.user).toMatchObject({ status: 'active', deactivated_at: null, settings: { speech_locale: 'ENGLISH_US', specialty: { kind: 'CARDIOLOGY' } } });
  });

  it('with apiVersion pinned to a dated version the preview routes answer NotFoundError (endpoint-not-in-version)', async () => {
    const error = await client({ apiVersion: '2026-03-23' }).deactivateUser(newId()).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(NotFoundError);
    expect((error as NotFoundError).problem.type).toMatch(/endpoint-not-in-version$/);
  });
});
