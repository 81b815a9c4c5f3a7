import { randomUUID } from 'node:crypto';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REQUEST_DEADLINE_MS, SPECIALTY_KINDS, SPEECH_LOCALES } from '@connect/shared';
import { connectMethodHandler, expectationFailedHandler } from '@connect/api';
import { rawExchange } from '../support/raw-exchange.ts';
import { getToken, http, postUser, rawHttp, registerTestClient, requestToken, startTestApi, type TestApi, type TestClient } from '../support/harness.ts';

/** Error messages a person can act on: each one, word for word. */

let api: TestApi;
let clinic: TestClient;
let token: string;

beforeAll(async () => {
  api = await startTestApi({ label: 'errmsg' });
  clinic = await registerTestClient(api.models);
  token = await getToken(api, clinic);
});
afterAll(async () => api?.close());

const valid = () => ({ provider_email: `${randomUUID()}@example.com`, external_provider_id: randomUUID(), settings: { speech_locale: 'ENGLISH_US' } });

async function problemFor(body: unknown) {
  const res = await postUser(api, token, body);
  expect(res.status, res.text).toBe(400);
  expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
  return res.body as { detail: string; errors: { path: string; message: string; allowed?: string[] }[] };
}

describe('validation messages', () => {
  it('a missing member "is required" (an enum member too)', async () => {
    const { provider_email, settings } = valid();
    const p = await problemFor({ provider_email, settings });
    expect(p.errors).toEqual([{ path: 'external_provider_id', message: 'is required' }]);
    const locale = await problemFor({ ...valid(), settings: { specialty: { kind: 'UROLOGY' } } });
    expect(locale.errors).toEqual([{ path: 'settings.speech_locale', message: 'is required' }]);
    expect(locale.detail).toBe('Invalid request: settings.speech_locale: is required');
  });

  it('a wrong type says what was expected: "expected an object", "expected a string"', async () => {
    const specialty = await problemFor({ ...valid(), settings: { speech_locale: 'ENGLISH_US', specialty: 'CARDIOLOGY' } });
    expect(specialty.errors).toEqual([{ path: 'settings.specialty', message: 'expected an object' }]);
    const email = await problemFor({ ...valid(), provider_email: 42 });
    expect(email.errors).toEqual([{ path: 'provider_email', message: 'expected a string' }]);
    // null, as answers show settings until they are first sent: refused (the request's settings are an object or absent), saying what to do.
    const settings = await problemFor({ ...valid(), settings: null });
    expect(settings.errors).toEqual([{ path: 'settings', message: 'expected an object, not null: leave settings out to keep the current ones' }]);
    const nullEmail = await problemFor({ ...valid(), provider_email: null });
    expect(nullEmail.errors).toEqual([{ path: 'provider_email', message: 'expected a string, not null' }]);
  });

  it('an unknown locale: "must be one of the supported locales", the list once, in errors[] only', async () => {
    const p = await problemFor({ ...valid(), settings: { speech_locale: 'KLINGON' } });
    expect(p.errors).toEqual([{ path: 'settings.speech_locale', message: 'must be one of the supported locales', allowed: [...SPEECH_LOCALES] }]);
    expect(p.detail).toBe('Invalid request: settings.speech_locale: must be one of the supported locales');
    // The whole answer names a locale once: in `allowed`.
    expect(JSON.stringify(p).split('ENGLISH_UK')).toHaveLength(2);
  });

  it('an unknown specialty: "must be one of the supported specialties", the list in errors[] only', async () => {
    const p = await problemFor({ ...valid(), settings: { speech_locale: 'ENGLISH_US', specialty: { kind: 'WIZARDRY' } } });
    expect(p.errors).toEqual([{ path: 'settings.specialty.kind', message: 'must be one of the supported specialties', allowed: [...SPECIALTY_KINDS] }]);
    expect(p.detail).toBe('Invalid request: settings.specialty.kind: must be one of the supported specialties');
  });

  it('an array, a string or null as the body: "the body must be a JSON object"', async () => {
    for (const raw of ['[]', '[{"provider_email":"a@example.com"}]', '"text"', 'null', '42']) {
      const p = await problemFor(raw);
      expect(p.errors, raw).toEqual([{ path: '', message: 'the body must be a JSON object' }]);
      expect(p.detail, raw).toBe('Invalid request: the body must be a JSON object');
    }
  });
});

describe('members that could reach a prototype, and bounds on path and query', () => {
  it('a "__proto__" member (or "constructor" holding "prototype"), at any depth, is an unknown member named by its path; nothing is stored', async () => {
    const before = await api.models.ProviderUser.countDocuments({});
    const base = valid();
    const top = await problemFor(`{"provider_email":"${base.provider_email}","external_provider_id":"${base.external_provider_id}","__proto__":{"x":1}}`);
    expect(top.errors).toEqual([{ path: '__proto__', message: 'unknown member' }]);
    expect(top.detail).toBe('Invalid request: __proto__: unknown member');
    const nested = await problemFor(`{"provider_email":"${base.provider_email}","external_provider_id":"${base.external_provider_id}","settings":{"speech_locale":"ENGLISH_US","specialty":{"kind":"UROLOGY","constructor":{"prototype":{"x":1}}}}}`);
    expect(nested.errors).toEqual([{ path: 'settings.specialty.constructor', message: 'unknown member' }]);
    expect(await api.models.ProviderUser.countDocuments({})).toBe(before);
  });

  it('an empty external_provider_id gets one message, not "empty" and "blank" both', async () => {
    const p = await problemFor({ ...valid(), external_provider_id: '' });
    expect(p.errors).toEqual([{ path: 'external_provider_id', message: 'must not be empty' }]);
  });

  it('a wrong type gets one message per field: [] as external_provider_id is "expected a string" only', async () => {
    const p = await problemFor({ ...valid(), external_provider_id: [] });
    expect(p.errors).toEqual([{ path: 'external_provider_id', message: 'expected a string' }]);
  });

  it('4,000 unknown members: each listed in errors once, the detail names the first 10 and counts the rest (the answer is not twice the list)', async () => {
    const body: Record<string, unknown> = valid();
    for (let i = 0; i < 4000; i++) body[`x${i}`] = 1;
    const p = await problemFor(body);
    expect(p.errors).toHaveLength(4000);
    expect(p.errors[0]).toEqual({ path: 'x0', message: 'unknown member' });
    expect(p.detail).toBe(`Invalid request: ${Array.from({ length: 10 }, (_, i) => `x${i}: unknown member`).join('; ')}; and 3990 more (see errors)`);
  });

  it('a path id past 256 characters and an empty list cursor say so in the body\'s words, not the validator\'s', async () => {
    const long = await http(`${api.baseUrl}/users/${'a'.repeat(257)}`, { headers: { authorization: `Bearer ${token}`, 'x-nabla-api-version': '2026-03-23' } });
    expect(long.status).toBe(400);
    expect(long.body.errors).toEqual([{ path: 'params.external_provider_id', message: 'at most 256 characters' }]);
    const cursor = await http(`${api.baseUrl}/users?cursor=`, { headers: { authorization: `Bearer ${token}`, 'x-nabla-api-version': 'x-nabla-next' } });
    expect(cursor.status).toBe(400);
    expect(cursor.body.errors).toEqual([{ path: 'querystring.cursor', message: 'must not be empty' }]);
  });
});

describe('HTTP-level refusals', () => {
  it('requests the HTTP parser refuses (headers over 16 KiB, an unknown method, a broken request line) answer problem+json, echoing nothing; a POST /users among them with X-Connect-Outcome: unchanged', async () => {
    const port = Number(new URL(api.origin).port);
    const cases = [
      { bytes: `GET /v1/connect/server/users/x HTTP/1.1\r\nHost: a\r\nX-Big: ${'q'.repeat(20_000)}\r\n\r\n`, status: 431, type: /\/headers-too-large$/ },
      { bytes: 'FOO /v1/connect/server/users HTTP/1.1\r\nHost: a\r\n\r\n', status: 400, type: /\/malformed-request$/ },
      { bytes: 'GET /v1 qq HTTP/9\r\n\r\n', status: 400, type: /\/malformed-request$/ },
      // A POST /users refused by the parser says it changed nothing, as every POST /users answer says what it did.
      { bytes: `POST /v1/connect/server/users HTTP/1.1\r\nHost: a\r\nX-Big: ${'q'.repeat(20_000)}\r\n\r\n`, status: 431, type: /\/headers-too-large$/, outcome: 'unchanged' },
      { bytes: 'POST /v1/connect/server/users?x=1 HTTP/1.1\r\nHost: a\r\nBroken header line\r\n\r\n', status: 400, type: /\/malformed-request$/, outcome: 'unchanged' },
    ];
    for (const c of cases) {
      const res = await rawHttp(port, c.bytes);
      expect(res.status, c.bytes.slice(0, 40)).toBe(c.status);
      const outcome = /\r\nx-connect-outcome: ([^\r]*)\r\n/i.exec(res.headers)?.[1];
      expect(outcome, c.bytes.slice(0, 40)).toBe(c.outcome);
      expect(res.headers).toMatch(/\r\ncontent-type: application\/problem\+json\r\n/i);
      expect(res.headers, 'never cached').toMatch(/\r\ncache-control: no-store\r\n/i);
      const problem = JSON.parse(res.body);
      expect(problem).toEqual({ type: expect.stringMatching(c.type), title: expect.any(String), status: c.status, detail: expect.any(String) });
      expect(res.body).not.toContain('qqq');
    }
    // The server goes on answering.
    expect((await http(`${api.origin}/livez`)).status).toBe(200);
  });

  it('what Node lets through but the API must not guess at: no Host in HTTP/1.1 (400), a transfer coding other than chunked, Content-Type, Authorization or Host given twice, CONNECT: each 400 problem+json (bad input is never a 5xx), nothing stored', async () => {
    const port = Number(new URL(api.origin).port);
    const body = () => JSON.stringify(valid());
    const post = (headers: string, payload: string) => `POST /v1/connect/server/users HTTP/1.1\r\nHost: a\r\n${headers}Content-Length: ${Buffer.byteLength(payload)}\r\n\r\n${payload}`;
    const chunked = (coding: string, payload: string) =>
      `POST /v1/connect/server/users HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nTransfer-Encoding: ${coding}\r\n\r\n${Buffer.byteLength(payload).toString(16)}\r\n${payload}\r\n0\r\n\r\n`;
    const sent: string[] = [];
    const cases = [
      { bytes: 'GET /livez HTTP/1.1\r\nConnection: close\r\n\r\n', status: 400, type: /\/missing-host$/, detail: 'An HTTP/1.1 request must carry a Host header; send one.' },
      { bytes: ((b) => (sent.push(b), chunked('x-unknown, chunked', b)))(body()), status: 400, type: /\/unsupported-transfer-coding$/, detail: /^Transfer-Encoding x-unknown, chunked is not supported/ },
      { bytes: ((b) => (sent.push(b), chunked('gzip, chunked', b)))(body()), status: 400, type: /\/unsupported-transfer-coding$/, detail: /^Transfer-Encoding gzip, chunked is not supported/ },
      {
        bytes: ((b) => (sent.push(b), post(`Authorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Type: text/plain\r\n`, b)))(body()),
        status: 400,
        type: /\/repeated-header$/,
        detail: 'The Content-Type header is given more than once; send it once.',
      },
      {
        bytes: ((b) => (sent.push(b), post(`Authorization: Bearer ${token}\r\nAuthorization: Bearer other\r\nContent-Type: application/json\r\n`, b)))(body()),
        status: 400,
        type: /\/repeated-header$/,
        detail: 'The Authorization header is given more than once; send it once.',
      },
      { bytes: 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n', status: 400, type: /\/unsupported-method$/, detail: /^CONNECT is not supported/ },
      {
        bytes: `GET /v1/connect/server/users/x HTTP/1.1\r\nHost: a\r\nHost: b\r\nAuthorization: Bearer ${token}\r\n\r\n`,
        status: 400,
        type: /\/repeated-header$/,
        detail: 'The Host header is given more than once; send it once.',
      },
    ];
    for (const c of cases) {
      const res = await rawHttp(port, c.bytes);
      expect(res.status, c.bytes.slice(0, 60)).toBe(c.status);
      expect(res.headers).toMatch(/\r\ncontent-type: application\/problem\+json/i);
      expect(JSON.parse(res.body)).toMatchObject({ type: expect.stringMatching(c.type), status: c.status, detail: typeof c.detail === 'string' ? c.detail : expect.stringMatching(c.detail) });
    }
    for (const b of sent) expect(await api.models.ProviderUser.countDocuments({ external_provider_id: JSON.parse(b).external_provider_id }), b).toBe(0);
    // HTTP/1.0 needs no Host; chunked alone is read as before.
    expect((await rawHttp(port, 'GET /livez HTTP/1.0\r\n\r\n')).headers).toMatch(/^HTTP\/1\.1 200 /);
    const plain = body();
    // Written without closing our side: a half-closed connection ends a request still being handled.
    const plainAnswer = await rawExchange(port, chunked('chunked', plain).replace('\r\nContent-Type', '\r\nConnection: close\r\nContent-Type'));
    expect(plainAnswer).toMatch(/^HTTP\/1\.1 201 /);
    // The token endpoint answers in RFC 6749 form, as for every request it cannot read.
    const tokenCoding = await rawHttp(port, `POST /v1/connect/server/oauth/token HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nTransfer-Encoding: br, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n`);
    expect(tokenCoding.status).toBe(400);
    expect(JSON.parse(tokenCoding.body)).toMatchObject({ error: 'invalid_request', error_description: expect.stringMatching(/^Transfer-Encoding br, chunked is not supported/) });
  });

  it('headers trickling in (a line a second, never ending) get 408 problem+json once the 10 s request deadline is past, not after the 60 s plus a 30 s check of Node defaults', async () => {
    const port = Number(new URL(api.origin).port);
    const started = Date.now();
    const answer = await new Promise<string>((resolve) => {
      const socket = connect(port, '127.0.0.1');
      let got = '';
      socket.setEncoding('utf8');
      socket.on('data', (chunk: string) => (got += chunk));
      socket.on('error', () => undefined);
      socket.write('GET /livez HTTP/1.1\r\nHost: a\r\n');
      let n = 0;
      const drip = setInterval(() => socket.write(`X-Drip-${n++}: 1\r\n`), 1000);
      socket.on('close', () => {
        clearInterval(drip);
        resolve(got);
      });
    });
    const [head = '', body = ''] = answer.split('\r\n\r\n');
    expect(head).toMatch(/^HTTP\/1\.1 408 /);
    expect(head).toMatch(/\r\ncontent-type: application\/problem\+json\r\n/i);
    expect(JSON.parse(body)).toMatchObject({ type: expect.stringMatching(/\/request-timeout$/), status: 408 });
    // Closed by the headers timeout (10 s, checked each second), well before the 60 to 90 s of Node's defaults.
    expect(Date.now() - started).toBeLessThan(30_000);
    // The server the API process runs (Fastify's own) has the same limits as this test's.
    expect(api.app.server.headersTimeout).toBe(REQUEST_DEADLINE_MS);
  }, 45_000);

  it('answered before its body was all in, a client that does finish its body keeps its connection: the next request on it is answered', async () => {
    const port = Number(new URL(api.origin).port);
    const body = JSON.stringify(valid());
    const answers = await new Promise<string>((resolve) => {
      const socket = connect(port, '127.0.0.1');
      let got = '';
      let restSent = false;
      socket.setEncoding('utf8');
      socket.on('error', () => undefined);
      socket.write(`POST /v1/connect/server/users HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer not-a-token\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body.slice(0, 10)}`);
      socket.on('data', (chunk: string) => {
        got += chunk;
        // The 401 is in: the rest of the body, then a second request on the same connection.
        if (!restSent && /^HTTP\/1\.1 401 /.test(got)) {
          restSent = true;
          socket.write(`${body.slice(10)}GET /livez HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`);
        }
      });
      socket.on('close', () => resolve(got));
    });
    expect(answers).toMatch(/^HTTP\/1\.1 401 /);
    expect(answers.split('HTTP/1.1 ').slice(1).map((a) => a.slice(0, 3))).toEqual(['401', '200']);
  });

  it('an Expect other than 100-continue: 417 problem+json (Node answered it with an empty body), nothing stored', async () => {
    const port = Number(new URL(api.origin).port);
    const body = JSON.stringify(valid());
    const res = await rawHttp(
      port,
      `POST /v1/connect/server/users HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nExpect: bogus\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
    expect(res.status).toBe(417);
    expect(res.headers).toMatch(/\r\ncontent-type: application\/problem\+json\r\n/i);
    expect(res.headers, 'never cached').toMatch(/\r\ncache-control: no-store\r\n/i);
    expect(JSON.parse(res.body)).toMatchObject({ type: expect.stringMatching(/\/expectation-failed$/), status: 417, detail: expect.stringContaining('100-continue') });
    // Refused, so unchanged: as every other refusal of POST /users says.
    expect(res.headers).toMatch(/\r\nx-connect-outcome: unchanged\r\n/i);
    expect(await api.models.ProviderUser.countDocuments({ external_provider_id: JSON.parse(body).external_provider_id })).toBe(0);
    // The server the API process runs (Fastify's own) answers it the same way as this test's.
    expect(api.app.server.listeners('checkExpectation')).toContain(expectationFailedHandler);
    expect(api.app.server.listeners('connect')).toContain(connectMethodHandler);
  });

  it('a 4xx without a problem type of its own is named by its status (a 403 said "Bad request")', async () => {
    // Raw: fetch would resolve the dot segments before sending. The docs' static files refuse the climb with 403.
    const res = await rawHttp(Number(new URL(api.origin).port), 'GET /docs/static/../../package.json HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    expect(res.status).toBe(403);
    expect(res.headers).toMatch(/\r\ncontent-type: application\/problem\+json/i);
    expect(JSON.parse(res.body)).toMatchObject({ type: expect.stringMatching(/\/forbidden$/), title: 'Forbidden', status: 403 });
  });

  it('answers under {base} are never cached (Cache-Control: no-store): a user, a list, a refusal, a request line in absolute form', async () => {
    const created = await postUser(api, token, valid());
    expect(created.headers.get('cache-control')).toBe('no-store');
    const read = await http(`${api.baseUrl}/users/${encodeURIComponent(created.body.external_provider_id)}`, { headers: { authorization: `Bearer ${token}` } });
    expect(read.status).toBe(200);
    expect(read.headers.get('cache-control')).toBe('no-store');
    expect((await http(`${api.baseUrl}/users/x`)).headers.get('cache-control')).toBe('no-store');
    // A request line in absolute form (`GET http://host/path`, as a client talking to a proxy writes it)
    // is under {base} too: its user came back without no-store, and without the version asked.
    const absolute = await rawExchange(
      Number(new URL(api.baseUrl).port),
      `GET ${api.baseUrl}/users/${encodeURIComponent(created.body.external_provider_id)} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nX-Nabla-Api-Version: 2026-03-23\r\nConnection: close\r\n\r\n`,
    );
    expect(absolute).toMatch(/^HTTP\/1\.1 200 /);
    expect(absolute).toMatch(/\r\ncache-control: no-store\r\n/i);
    expect(absolute).toMatch(/\r\nx-nabla-api-version: 2026-03-23\r\n/i);
  });

  it('a URL Fastify refuses before routing, under {base} (414 for a segment over the limit, 400 for bad percent-encoding), is never cached either, and carries the request id and the version asked', async () => {
    for (const [path, status] of [[`/users/${'a'.repeat(1100)}`, 414], ['/users/%FF', 400]] as const) {
      const res = await http(`${api.baseUrl}${path}`, { headers: { authorization: `Bearer ${token}`, 'x-nabla-api-version': '2026-03-23', 'x-request-id': 'bad-url-1' } });
      expect(res.status).toBe(status);
      expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
      // 414 is cacheable by default (RFC 9111 §4.2.2): without no-store a shared cache may keep it.
      expect(res.headers.get('cache-control')).toBe('no-store');
      expect(res.headers.get('x-request-id')).toBe('bad-url-1');
      expect(res.headers.get('x-nabla-api-version')).toBe('2026-03-23');
    }
    // No "request completed" line comes for them: each gets a line of its own, with its status and request id.
    const refused = api.logs.lines.map((l) => JSON.parse(l)).filter((l) => l.msg === 'request refused before routing' && l.reqId === 'bad-url-1');
    expect(refused.map((l) => l.res.statusCode).sort()).toEqual([400, 414]);
  });

  it('a compressed body (Content-Encoding: gzip) is refused as 415 naming the encoding, not parsed as text', async () => {
    const res = await postUser(api, token, valid(), { 'content-encoding': 'gzip' });
    expect(res.status).toBe(415);
    expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(res.body.detail).toBe('Content-Encoding gzip is not accepted; send the body uncompressed.');
    expect((await postUser(api, token, valid(), { 'content-encoding': 'identity' })).status).toBe(201);
  });

  it('problems carry the RFC 9457 members and no internal ones (no "slug")', async () => {
    for (const raw of ['{"provider_email":', '']) {
      const res = await postUser(api, token, raw);
      expect(res.status, raw).toBe(400);
      expect(Object.keys(res.body).sort(), raw).toEqual(['detail', 'instance', 'status', 'title', 'type']);
    }
  });

  it('413 names the limit in bytes', async () => {
    const res = await postUser(api, token, { ...valid(), padding: 'x'.repeat(70 * 1024) });
    expect(res.status).toBe(413);
    expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(res.body.detail).toBe('The body is larger than 65536 bytes, the most this endpoint accepts.');
    expect(res.body.limit_bytes).toBe(65536);
  });

  it('a wrong method on a known path: 405 with Allow (GET /oauth/token, PUT /users/{id}, OPTIONS with a JSON Content-Type and no body, QUERY without one, a body nobody reads)', async () => {
    const token405 = await http(api.tokenUrl);
    expect(token405.status).toBe(405);
    expect(token405.headers.get('allow')).toBe('POST');
    expect(token405.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(token405.body).toMatchObject({ status: 405, type: expect.stringMatching(/\/method-not-allowed$/), detail: 'This path answers POST only.' });

    const put = await http(`${api.baseUrl}/users/someone`, { method: 'PUT', headers: { authorization: `Bearer ${token}` } });
    expect(put.status).toBe(405);
    expect(put.headers.get('allow')).toBe('DELETE, GET, HEAD');

    // A client that sets Content-Type: application/json on every request, with no body or a broken one: still 405.
    for (const [path, body] of [['/users', undefined], ['/users/someone', undefined], ['/oauth/token', undefined], ['/users', '{"broken']] as const) {
      const res = await http(`${api.baseUrl}${path}`, { method: 'OPTIONS', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body });
      expect(res.status, `OPTIONS ${path} ${body ?? ''}`).toBe(405);
      expect(res.headers.get('allow')).toBeTruthy();
    }

    // An unknown path stays 404.
    const unknown = await http(`${api.baseUrl}/encounters`);
    expect(unknown.status).toBe(404);
    expect(unknown.headers.get('allow')).toBeNull();

    // Fastify reads a body before it finds no route: QUERY (a method with a body) without Content-Type, and
    // bodies it cannot parse, to a method or path nobody serves, were 400 "could not be processed" or 415.
    const query = await http(`${api.baseUrl}/users`, { method: 'QUERY', headers: { authorization: `Bearer ${token}` } });
    expect(query.status).toBe(405);
    expect(query.headers.get('allow')).toBe('GET, HEAD, POST');
    for (const [path, contentType, body] of [['/encounters', 'application/json', '{"broken'], ['/encounters', 'text/plain', 'x'], ['/users/someone', 'application/json', '{"broken']] as const) {
      const res = await http(`${api.baseUrl}${path}`, { method: 'PUT', headers: { authorization: `Bearer ${token}`, 'content-type': contentType }, body });
      expect(res.status, `PUT ${path} ${contentType}`).toBe(path === '/encounters' ? 404 : 405);
    }
  });

  it('a path that is a route but for a doubled or trailing "/" (a base URL ending in "/"): 404 naming the route it missed; nothing is stored', async () => {
    const email = `${randomUUID()}@example.com`;
    const body = JSON.stringify({ provider_email: email, external_provider_id: email, settings: { speech_locale: 'ENGLISH_US' } });
    const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
    const base = new URL(api.baseUrl).pathname;
    const doubled = await http(`${api.baseUrl}//users`, { method: 'POST', headers, body });
    expect(doubled.status).toBe(404);
    expect(doubled.body).toMatchObject({ type: expect.stringMatching(/\/not-found$/), detail: `No such route. Did you mean ${base}/users? This path has a doubled or trailing "/" (a base URL that ends in "/" gives one).` });
    const trailing = await http(`${api.baseUrl}/oauth/token/`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'grant_type=client_credentials' });
    expect(trailing.status).toBe(404);
    expect(trailing.body.detail).toBe(`No such route. Did you mean ${base}/oauth/token? This path has a doubled or trailing "/" (a base URL that ends in "/" gives one).`);
    expect((await http(`${api.baseUrl}/users/${encodeURIComponent(email)}`, { headers })).status).toBe(404);
    // No hint where none would help: an unknown route, and a tidy path that answers other methods only.
    expect((await http(`${api.baseUrl}//encounters`)).body.detail).toBe('No such route.');
    expect((await http(`${api.baseUrl}//oauth/token`)).body.detail).toBe('No such route.');
  });

  it('WWW-Authenticate: Bearer error="invalid_token" when a token was sent and refused; plain Bearer when none was', async () => {
    const none = await http(`${api.baseUrl}/users/x`);
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toBe('Bearer');

    for (const authorization of ['Bearer not.a.jwt', `Bearer ${token}x`, 'Bearer @@@']) {
      const refused = await http(`${api.baseUrl}/users/x`, { headers: { authorization } });
      expect(refused.status, authorization).toBe(401);
      expect(refused.headers.get('www-authenticate'), authorization).toBe('Bearer error="invalid_token"');
    }
  });
});

describe('POST /oauth/token: every refusal is invalid_client; the log names the claim, and the caller hears it once the signature verified', () => {
  const refusalsLogged = () => api.logs.lines.map((l) => JSON.parse(l)).filter((l) => l.msg === 'client assertion refused');

  it('a wrong aud: logged with the claim, the expected and the received values; no assertion in the log', async () => {
    const wrongAud = api.audience.replace('127.0.0.1', 'localhost');
    const before = refusalsLogged().length;
    const res = await requestToken(api, clinic, { aud: wrongAud });
    expect(res.status).toBe(401);
    expect(res.body).toEqual({ error: 'invalid_client', error_description: `The assertion's aud must be ${api.audience} or ${api.deps.config.issuer}: the URL this server knows itself by, whatever name reached it.` });
    const logged = refusalsLogged().slice(before);
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatchObject({ claim: 'aud', expected: [api.audience, api.deps.config.issuer], received: wrongAud });
    expect(api.logs.text).not.toMatch(/eyJ[A-Za-z0-9_-]+\.eyJ/); // no JWT of any kind
  });

  it('other claims are named too: to the caller when the client\'s key signed the assertion, and an unknown client hears only "Client authentication failed."', async () => {
    const now = Math.floor(Date.now() / 1000);
    const cases = [
      { o: { jti: null }, claim: 'jti', told: 'The assertion must carry jti.' },
      { o: { iat: now - 600, exp: now - 300 }, claim: 'exp', told: "The assertion has expired (its exp is past by this server's clock): sign a new one for each token request." },
      { o: { sub: 'someone-else' }, claim: 'sub', told: "The assertion's sub must equal its iss, the client id." },
      { o: { iss: randomUUID() }, claim: 'iss', told: 'Client authentication failed.' },
    ] as const;
    for (const { o, claim, told } of cases) {
      const before = refusalsLogged().length;
      const res = await requestToken(api, clinic, o);
      expect(res.status, claim).toBe(401);
      expect(res.body, claim).toEqual({ error: 'invalid_client', error_description: told });
      expect(refusalsLogged().slice(before), claim).toEqual([expect.objectContaining({ claim })]);
    }
  });
});
