/**
 * Fuzzing POST /users and POST /oauth/token with random and mutated bodies,
 * headers and content types, huge and deeply nested JSON, invalid UTF-8,
 * `__proto__` / `constructor` / `$`-operator keys and numbers where strings go.
 * Whatever arrives: never a 5xx, never a stack trace or an internal path, always
 * problem+json (RFC 6749 on the token endpoint), nothing stored unless the answer
 * says so, and the process still answers /livez with its memory bounded.
 */
import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getToken, http, registerTestClient, signAssertion, startTestApi, type HttpAnswer, type TestApi, type TestClient } from '../support/harness.ts';

let api: TestApi;
let clinic: TestClient;
let token: string;
let rssBefore = 0;
const fuzzed: Record<string, number> = {};
const statuses: Record<string, number> = {};

const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const OAUTH_ERRORS = ['invalid_request', 'invalid_client', 'unsupported_grant_type'];

beforeAll(async () => {
  // Thousands of requests from one client and one IP: the rate limits (test/api/rate-limits.test.ts) are off here.
  api = await startTestApi({ label: 'fuzz', env: { RATE_LIMIT_PER_CLIENT_PER_MINUTE: '0', RATE_LIMIT_TOKEN_PER_IP_PER_MINUTE: '0' } });
  clinic = await registerTestClient(api.models, { name: 'Fuzz clinic' });
  token = await getToken(api, clinic);
  rssBefore = process.memoryUsage().rss;
});
afterAll(async () => {
  const total = Object.values(fuzzed).reduce((a, b) => a + b, 0);
  console.log(`[fuzz] ${total} inputs: ${JSON.stringify(fuzzed)}; statuses ${JSON.stringify(statuses)}`);
  await api?.close();
});

/** Every string inside a (parsed) answer, to look for leaks wherever they sit. */
function stringsIn(v: unknown, out: string[] = []): string[] {
  if (typeof v === 'string') out.push(v);
  else if (Array.isArray(v)) for (const x of v) stringsIn(x, out);
  else if (v && typeof v === 'object') for (const x of Object.values(v)) stringsIn(x, out);
  return out;
}

function expectNoInternals(res: HttpAnswer, context: string): void {
  for (const s of [res.text, ...stringsIn(res.body)]) {
    expect(s, context).not.toMatch(/\n\s+at \S/); // a stack frame
    expect(s, context).not.toMatch(/\/work\/|node_modules|[\w-]+\.[cm]?[jt]s:\d+/); // an internal path or source location
    expect(s, context).not.toMatch(/RangeError|TypeError|ReferenceError|SyntaxError|MongoServerError|E11000/);
  }
}

function tally(kind: string, res: HttpAnswer): void {
  fuzzed[kind] = (fuzzed[kind] ?? 0) + 1;
  statuses[res.status] = (statuses[res.status] ?? 0) + 1;
}

/** /users: below 500, problem+json whenever it refuses, with the same status inside. */
function expectUsersAnswer(res: HttpAnswer, context: string): void {
  expect(res.status, `${context} → ${res.status} ${res.text.slice(0, 300)}`).toBeLessThan(500);
  expectNoInternals(res, context);
  if (res.status >= 400) {
    expect(res.headers.get('content-type'), context).toMatch(/^application\/problem\+json/);
    expect(res.body, context).toMatchObject({ type: expect.any(String), title: expect.any(String), status: res.status, detail: expect.any(String) });
  } else {
    expect([200, 201], context).toContain(res.status);
  }
}

/** /oauth/token: 200 with a token, or RFC 6749 `{error, error_description}` with 400/401. */
function expectTokenAnswer(res: HttpAnswer, context: string): void {
  expect(res.status, `${context} → ${res.status} ${res.text.slice(0, 300)}`).toBeLessThan(500);
  expectNoInternals(res, context);
  expect(res.headers.get('content-type'), context).toMatch(/^application\/json/);
  if (res.status === 200) {
    expect(res.body).toMatchObject({ access_token: expect.any(String), token_type: 'Bearer', expires_in: expect.any(Number) });
    return;
  }
  expect([400, 401], context).toContain(res.status);
  expect(Object.keys(res.body).sort(), context).toEqual(['error', 'error_description']);
  expect(OAUTH_ERRORS, context).toContain(res.body.error);
  expect(res.headers.get('cache-control')).toBe('no-store');
}

interface Counts {
  users: number;
  organizations: number;
  clients: number;
  assertions: number;
}

async function counts(): Promise<Counts> {
  const m = api.models;
  const [users, organizations, clients, assertions] = await Promise.all([
    m.ProviderUser.countDocuments(),
    m.Organization.countDocuments(),
    m.OAuthClient.countDocuments(),
    m.UsedAssertion.countDocuments(),
  ]);
  return { users, organizations, clients, assertions };
}

function sendUsers(body: BodyInit, headers: Record<string, string> = {}): Promise<HttpAnswer> {
  return http(`${api.baseUrl}/users`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'x-nabla-api-version': '2026-03-23', ...headers },
    body,
  });
}

function sendToken(body: BodyInit, contentType: string, headers: Record<string, string> = {}): Promise<HttpAnswer> {
  return http(api.tokenUrl, { method: 'POST', headers: { 'content-type': contentType, ...headers }, body });
}

// ---------------------------------------------------------------- arbitraries

const hostile: unknown[] = [
  { $ne: null },
  { $gt: '' },
  { $where: 'sleep(1000) || true' },
  { $regex: '.*' },
  { $exists: true },
  { __proto__: { admin: true } },
  { constructor: { prototype: { admin: true } } },
  ['client_credentials'],
  [],
  {},
  '',
  '   ',
  '\u0000',
  '\ud800',
  'x'.repeat(20_000),
  1e308,
  -1,
  0,
  42,
  true,
  false,
  null,
];
/** Values to put where a string (or an object) belongs. */
const valueArb: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...hostile) },
  { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
  { weight: 2, arbitrary: fc.string({ unit: 'grapheme', maxLength: 40 }) },
  { weight: 1, arbitrary: fc.double() },
);
const keyArb = fc.oneof(
  fc.constantFrom('__proto__', 'constructor', 'prototype', '$where', '$ne', '$set', 'settings.speech_locale', 'provider_email\u0000', ''),
  fc.string({ maxLength: 12 }),
);

type Mutation = { op: 'replace' | 'remove'; path: string[]; value?: unknown } | { op: 'add'; path: string[]; key: string; value: unknown };

/** Applies a mutation to a copy of a JSON body, writing keys like `__proto__` as own members (as JSON text would). */
function mutate(body: Record<string, unknown>, m: Mutation): unknown {
  const copy = JSON.parse(JSON.stringify(body));
  let target = copy;
  for (const p of m.path.slice(0, -1)) target = target?.[p];
  if (target === null || typeof target !== 'object') return copy;
  const last = m.path[m.path.length - 1]!;
  if (m.op === 'remove') delete target[last];
  else if (m.op === 'replace') Object.defineProperty(target, last, { value: m.value, enumerable: true, writable: true, configurable: true });
  else {
    const holder = m.path.length === 0 ? copy : target[last];
    const { key } = m as Extract<Mutation, { op: 'add' }>;
    if (holder && typeof holder === 'object') Object.defineProperty(holder, key, { value: m.value, enumerable: true, writable: true, configurable: true });
  }
  return copy;
}

const USER_PATHS = [[], ['provider_email'], ['external_provider_id'], ['settings'], ['settings', 'speech_locale'], ['settings', 'secondary_speech_locale'], ['settings', 'specialty'], ['settings', 'specialty', 'kind'], ['settings', 'specialty', 'other_specialty_name']];
const mutationArb = (paths: string[][]): fc.Arbitrary<Mutation[]> =>
  fc.array(
    fc.oneof(
      fc.record({ op: fc.constant('replace' as const), path: fc.constantFrom(...paths.filter((p) => p.length > 0)), value: valueArb }),
      fc.record({ op: fc.constant('remove' as const), path: fc.constantFrom(...paths.filter((p) => p.length > 0)) }),
      fc.record({ op: fc.constant('add' as const), path: fc.constantFrom(...paths.filter((p) => p.length <= 2)), key: keyArb, value: valueArb }),
    ),
    { minLength: 1, maxLength: 3 },
  );

function validUserBody(): Record<string, unknown> {
  const id = `fz-${randomUUID()}`;
  return {
    provider_email: `${id}@fuzz.example.com`,
    external_provider_id: id,
    settings: { specialty: { kind: 'OTHER', other_specialty_name: 'Sleep' }, speech_locale: 'ENGLISH_US', secondary_speech_locale: 'FRENCH_FR' },
  };
}

/** What an HTTP client can put in a header value (fetch refuses control characters before sending). */
const headerValueArb = (maxLength: number) => fc.string({ unit: 'binary-ascii', maxLength }).map((s) => s.replace(/[^\x20-\x7e]/g, '').trim());

const CONTENT_TYPES = [
  'application/json',
  'application/json; charset=utf-8',
  'application/json; charset=latin1',
  'APPLICATION/JSON',
  'application/merge-patch+json',
  'application/x-www-form-urlencoded',
  'text/plain',
  'text/json',
  'multipart/form-data; boundary=x',
  'application/xml',
  'application/octet-stream',
  'application/jsonx',
  'application/json, text/plain',
  ';',
  '',
  'application/',
  '*/*',
];

function nested(depth: number, open = '{"a":', close = '}', leaf = '1'): string {
  return open.repeat(depth) + leaf + close.repeat(depth);
}

/** Bodies at and around the limits: 64 KiB on /users (413 beyond), 16 KiB for form bodies and assertions. */
const bigBodies: [string, string][] = [
  ['60 KiB email (within the limit)', JSON.stringify({ provider_email: `${'a'.repeat(60_000)}@x.com`, external_provider_id: 'big-1' })],
  ['60 KiB external id', JSON.stringify({ provider_email: 'big@x.com', external_provider_id: 'b'.repeat(60_000) })],
  ['5000 unknown members', JSON.stringify(Object.fromEntries(Array.from({ length: 5000 }, (_, i) => [`k${i}`, i])))],
  ['array of 20000 numbers', JSON.stringify(Array.from({ length: 20_000 }, (_, i) => i % 10))],
  ['12000 nested objects', nested(12_000)],
  ['30000 nested arrays', nested(30_000, '[', ']')],
  ['nested objects inside settings', JSON.stringify({ provider_email: 'n@x.com', external_provider_id: 'n-1', settings: 'X' }).replace('"X"', nested(10_000))],
  ['nested objects as the email', JSON.stringify({ provider_email: 'X', external_provider_id: 'n-2' }).replace('"X"', nested(10_000))],
  ['200000 nested arrays (beyond)', nested(200_000, '[', ']')],
  ['70 KiB email (beyond)', JSON.stringify({ provider_email: `${'a'.repeat(70_000)}@x.com`, external_provider_id: 'big-2' })],
  ['1 MiB of spaces (beyond)', ' '.repeat(1024 * 1024)],
  ['5 MiB string (beyond)', JSON.stringify({ provider_email: 'a'.repeat(5 * 1024 * 1024) })],
  ['string of 60000 escapes', JSON.stringify({ provider_email: '\\u0000'.repeat(10_000), external_provider_id: 'e' })],
];

// ---------------------------------------------------------------- POST /users

describe('POST /users under fuzzed input: never a 5xx or a stack trace, problem+json every time, nothing stored on rejection', () => {
  let before: Counts;
  let created = 0;
  beforeAll(async () => {
    before = await counts();
  });
  afterAll(async () => {
    // Only answered creations (201) may have added users; nothing else changes.
    expect(await counts()).toEqual({ ...before, users: before.users + created });
  });
  const note = (res: HttpAnswer) => {
    if (res.status === 201) created++;
  };

  it('random JSON values as the body', async () => {
    await fc.assert(
      fc.asyncProperty(fc.jsonValue({ maxDepth: 4 }), async (value) => {
        const res = await sendUsers(JSON.stringify(value));
        tally('users: random JSON', res);
        note(res);
        expectUsersAnswer(res, JSON.stringify(value).slice(0, 200));
      }),
      { numRuns: 80 },
    );
  });

  it('valid bodies with members replaced, removed or added ($-operators, __proto__, constructor, numbers for strings)', async () => {
    await fc.assert(
      fc.asyncProperty(mutationArb(USER_PATHS), async (mutations) => {
        let body: unknown = validUserBody();
        for (const m of mutations) body = mutate(body as Record<string, unknown>, m);
        const text = JSON.stringify(body);
        const res = await sendUsers(text);
        tally('users: mutated body', res);
        note(res);
        expectUsersAnswer(res, text.slice(0, 300));
        // A `$`-operator or prototype key never makes it into a stored user.
        if (res.status < 300) expect(text).not.toMatch(/"(\$\w+|__proto__|constructor)"\s*:/);
      }),
      { numRuns: 200 },
    );
  });

  it('the documented injection shapes are refused with 400 naming the field', async () => {
    const base = validUserBody();
    const cases: [unknown, string][] = [
      [{ ...base, provider_email: { $ne: null } }, 'provider_email'],
      [{ ...base, external_provider_id: { $gt: '' } }, 'external_provider_id'],
      [{ ...base, $where: 'sleep(5000)' }, '$where'],
      [{ ...base, settings: { ...(base.settings as object), $set: { version: 99 } } }, 'settings.$set'],
      [{ ...base, provider_email: 12345 }, 'provider_email'],
      [{ ...base, external_provider_id: 12345 }, 'external_provider_id'],
      [{ ...base, settings: { speech_locale: 7 } }, 'settings.speech_locale'],
    ];
    for (const [body, path] of cases) {
      const res = await sendUsers(JSON.stringify(body));
      tally('users: injection', res);
      expectUsersAnswer(res, JSON.stringify(body));
      expect(res.status).toBe(400);
      expect(res.body.errors.map((e: { path: string }) => e.path)).toContain(path);
    }
    for (const text of ['{"__proto__": {"admin": true}}', '{"constructor": {"prototype": {"admin": true}}}', `{"provider_email":"p@x.com","external_provider_id":"p","__proto__":{"isAdmin":1}}`]) {
      const res = await sendUsers(text);
      tally('users: injection', res);
      expectUsersAnswer(res, text);
      expect(res.status).toBe(400);
    }
    // The API runs in this process: nothing reached Object.prototype.
    expect(({} as Record<string, unknown>).admin).toBeUndefined();
    expect(({} as Record<string, unknown>).isAdmin).toBeUndefined();
  });

  it('lone UTF-16 surrogates and NUL (valid JSON escapes, not storable text) are refused with 400 naming the field', async () => {
    // Found by this fuzzing: "\ud800" as external_provider_id was stored as U+FFFD and answered 500.
    const id = `sur-${randomUUID()}`;
    const cases: [string, string][] = [
      [`{"provider_email":"${id}@x.com","external_provider_id":"${id}\\ud800"}`, 'external_provider_id'],
      [`{"provider_email":"${id}\\udc00@x.com","external_provider_id":"${id}"}`, 'provider_email'],
      [`{"provider_email":"${id}@x.com","external_provider_id":"${id}","settings":{"speech_locale":"ENGLISH_US","specialty":{"kind":"OTHER","other_specialty_name":"Sleep\\ud83d"}}}`, 'settings.specialty.other_specialty_name'],
      // Found the same way: NUL was a 5xx on FerretDB (PostgreSQL jsonb cannot hold it).
      [`{"provider_email":"${id}@x.com","external_provider_id":"${id}\\u0000"}`, 'external_provider_id'],
      [`{"provider_email":"${id}@x.com","external_provider_id":"${id}","settings":{"speech_locale":"ENGLISH_US","specialty":{"kind":"OTHER","other_specialty_name":"\\u0000"}}}`, 'settings.specialty.other_specialty_name'],
    ];
    for (const [text, path] of cases) {
      const res = await sendUsers(text);
      tally('users: injection', res);
      expectUsersAnswer(res, text);
      expect(res.status).toBe(400);
      expect(res.body.errors).toContainEqual({ path, message: expect.stringMatching(/Unicode/) });
    }
    expect(await api.models.ProviderUser.countDocuments({ external_provider_id: { $regex: `^${id}` } })).toBe(0);
    // A well-formed astral character (a surrogate pair) is ordinary text.
    const ok = await sendUsers(JSON.stringify({ provider_email: `${id}@x.com`, external_provider_id: `${id}-\u{1F600}` }));
    expect(ok.status).toBe(201);
    expect(ok.body.external_provider_id).toBe(`${id}-\u{1F600}`);
    created++;
  });

  it('random content types, API versions and request ids', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(fc.constantFrom(...CONTENT_TYPES), headerValueArb(30)),
        fc.oneof(fc.constantFrom('2026-03-23', 'x-nabla-next', '2026-02-13', '2099-01-01', '2026-3-23', 'latest', ''), headerValueArb(20)),
        headerValueArb(200),
        fc.boolean(),
        async (contentType, version, requestId, formBody) => {
          const body = formBody ? new URLSearchParams({ provider_email: 'f@x.com', external_provider_id: `ct-${randomUUID()}` }).toString() : JSON.stringify(validUserBody());
          const res = await sendUsers(body, { 'content-type': contentType, 'x-nabla-api-version': version, 'x-request-id': requestId });
          tally('users: content types and headers', res);
          note(res);
          expectUsersAnswer(res, `${contentType} | ${version}`);
          if (res.status < 300) expect(contentType.trim().toLowerCase()).toMatch(/^application\/([a-z0-9.+-]*\+)?json\s*(;|$)/);
        },
      ),
      { numRuns: 80 },
    );
  });

  it.each(bigBodies)('%s', async (_label, body) => {
    const res = await sendUsers(body);
    tally('users: huge or nested', res);
    note(res);
    expectUsersAnswer(res, _label);
    expect(res.status).not.toBe(201);
    if (Buffer.byteLength(body) > 64 * 1024) {
      expect(res.status).toBe(413);
    } else {
      expect(res.status).toBe(400);
    }
  });

  it('invalid UTF-8 and random bytes', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 400 }), fc.boolean(), async (bytes, wrap) => {
        let body = Buffer.from(bytes);
        if (wrap) {
          // Valid JSON framing around invalid UTF-8 sequences inside strings.
          const id = `u8-${randomUUID()}`;
          body = Buffer.concat([Buffer.from(`{"provider_email":"${id}`), Buffer.from([0xff, 0xfe, 0xc0, 0x80, 0xed, 0xa0, 0x80]), Buffer.from(`@x.com","external_provider_id":"${id}`), Buffer.from(bytes.filter((b) => b !== 0x22 && b !== 0x5c && b >= 0x20)), Buffer.from('"}')]);
        }
        const res = await sendUsers(body);
        tally('users: bytes', res);
        note(res);
        expectUsersAnswer(res, body.toString('hex').slice(0, 100));
      }),
      { numRuns: 60 },
    );
  });

  it('random external ids on GET /users/{id} ($-operators, path tricks, 101 to 1100 characters): 404 or 400, 414 past the router limit, never a 5xx', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc
          .oneof(
            fc.constantFrom('{"$ne":null}', '[$ne]=1', '../../admin', '%00', '.', '..', '__proto__', 'constructor', 'a'.repeat(101), 'a'.repeat(256), 'a'.repeat(1100)),
            fc.string({ unit: 'grapheme', minLength: 1, maxLength: 60 }),
            fc.string({ minLength: 101, maxLength: 256 }),
          ),
        async (id) => {
          const res = await http(`${api.baseUrl}/users/${encodeURIComponent(id)}`, { headers: { authorization: `Bearer ${token}` } });
          tally('users: GET ids', res);
          expectUsersAnswer(res, id);
          // Past the router's 1024-character path segment (3 × 256 percent-encoded, and more), 414 problem+json;
          // otherwise 400 when fetch normalises `.` away and the id is empty, or no such user.
          expect(encodeURIComponent(id).length > 1024 ? [414] : [400, 404], id).toContain(res.status);
        },
      ),
      { numRuns: 50 },
    );
  });
});

/**
 * docs/contract.md allows 256-character external ids; Fastify's default maxParamLength (100)
 * once refused them on GET with a 414 in Fastify's own JSON echoing the URL
 * (fixed in apps/api/src/build-app.ts: maxParamLength and frameworkErrors).
 */
describe('External ids over 100 characters on GET /users/{id}', () => {
  it('a user whose external_provider_id has 101 to 256 characters can be read back', async () => {
    const id = `long-${'x'.repeat(200)}`;
    const created = await sendUsers(JSON.stringify({ provider_email: `long-${randomUUID()}@x.com`, external_provider_id: id }));
    expect(created.status).toBe(201);
    const res = await http(`${api.baseUrl}/users/${encodeURIComponent(id)}`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status, res.text.slice(0, 200)).toBe(200);
    expect(res.body.external_provider_id).toBe(id);
  });

  it('an over-long id answers problem+json without echoing the URL', async () => {
    const res = await http(`${api.baseUrl}/users/${'a'.repeat(300)}`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBeLessThan(500);
    expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(res.text).not.toContain('a'.repeat(300));
  });
});

// ---------------------------------------------------------------- POST /oauth/token

describe('GET /users (the list) and DELETE /users/{id} under fuzzed input: 200, 4xx problem+json naming a parameter, never a 5xx, nothing deactivated', () => {
  const PREVIEW = { 'x-nabla-api-version': 'x-nabla-next' };
  const valueArb = fc.oneof(
    fc.constantFrom('', '0', '1', '200', '201', '-1', '1e2', '0x10', ' 5', '5 ', '2.0', '999999999999999999999', 'active', 'deactivated', 'ACTIVE', 'x-nabla-next', '2026-03-23', '[]', '{"$ne":null}', '%00', '%zz', '..'),
    fc.string({ maxLength: 40 }),
    fc.string({ unit: 'binary', maxLength: 40 }),
    // Something like a cursor: base64url of random JSON.
    fc.jsonValue({ maxDepth: 2 }).map((v) => Buffer.from(JSON.stringify(v)).toString('base64url')),
  );
  const keyArb = fc.oneof({ weight: 4, arbitrary: fc.constantFrom('limit', 'cursor', 'status', 'nabla-api-version') }, { weight: 1, arbitrary: fc.string({ maxLength: 12 }) }, { weight: 1, arbitrary: fc.constantFrom('limit[]', 'status[$ne]', '__proto__', 'constructor') });
  // Pairs encoded as a client would, or glued raw (stray "%", "&&", "=" and "+" left as typed).
  const queryArb = fc.oneof(
    fc.array(fc.tuple(keyArb, valueArb), { maxLength: 5 }).map((pairs) => pairs.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&')),
    fc.array(fc.tuple(keyArb, valueArb), { maxLength: 4 }).map((pairs) => pairs.map(([k, v]) => `${k}=${v}`).join('&').replace(/[#\s]/g, '')),
  );
  let deactivatedBefore = 0;
  beforeAll(async () => {
    deactivatedBefore = await api.models.ProviderUser.countDocuments({ status: 'deactivated' });
  });
  afterAll(async () => {
    expect(await api.models.ProviderUser.countDocuments({ status: 'deactivated' })).toBe(deactivatedBefore);
  });

  it('random query strings on the list', async () => {
    await fc.assert(
      fc.asyncProperty(queryArb, fc.boolean(), async (query, preview) => {
        const res = await http(`${api.baseUrl}/users?${query}`, { headers: { authorization: `Bearer ${token}`, ...(preview ? PREVIEW : {}) } });
        tally('users: list queries', res);
        expectUsersAnswer(res, query);
        if (res.status === 200) expect(res.body, query).toEqual({ data: expect.any(Array), next_cursor: expect.toSatisfy((c) => c === null || typeof c === 'string') });
        // A refusal of a parameter names it (or the API version, given in the query or not).
        else if (res.status === 400 && Array.isArray(res.body.errors)) {
          for (const e of res.body.errors) expect(e.path, query).toMatch(/^(querystring\.|header\.|x-nabla-api-version|nabla-api-version)/);
        }
      }),
      { numRuns: 120 },
    );
  });

  it('random external ids on DELETE /users/{id} under the preview version: 404 or 400, 414 past the router limit', async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.string({ unit: 'grapheme', minLength: 1, maxLength: 60 }), fc.constantFrom('{"$ne":null}', '[$ne]=1', '../users', '%00', '__proto__', 'a'.repeat(300), 'a'.repeat(1100))), async (id) => {
        const res = await http(`${api.baseUrl}/users/${encodeURIComponent(id)}`, { method: 'DELETE', headers: { authorization: `Bearer ${token}`, ...PREVIEW } });
        tally('users: DELETE ids', res);
        expectUsersAnswer(res, id);
        // As GET's: 414 past the router's 1024-character path segment, 404 (no such user) or 400 below it.
        expect(encodeURIComponent(id).length > 1024 ? [414] : [400, 404], id).toContain(res.status);
      }),
      { numRuns: 60 },
    );
  });
});

describe('POST /oauth/token under fuzzed JSON and form input: always RFC 6749, never a 5xx, nothing stored on refusal', () => {
  let before: Counts;
  let issued = 0;
  beforeAll(async () => {
    before = await counts();
  });
  afterAll(async () => {
    // A used assertion is recorded only for an issued token.
    expect(await counts()).toEqual({ ...before, assertions: before.assertions + issued });
  });
  const note = (res: HttpAnswer) => {
    if (res.status === 200) issued++;
  };
  const TOKEN_PATHS = [[], ['grant_type'], ['client_assertion_type'], ['client_assertion'], ['client_id'], ['scope']];
  const validParams = async (): Promise<Record<string, unknown>> => ({
    grant_type: 'client_credentials',
    client_assertion_type: JWT_BEARER,
    client_assertion: await signAssertion(clinic.client._id, clinic.privateKey, api.audience),
  });

  it('random JSON values as the body', async () => {
    await fc.assert(
      fc.asyncProperty(fc.jsonValue({ maxDepth: 4 }), async (value) => {
        const res = await sendToken(JSON.stringify(value), 'application/json');
        tally('token: random JSON', res);
        note(res);
        expectTokenAnswer(res, JSON.stringify(value).slice(0, 200));
        expect(res.status).not.toBe(200);
      }),
      { numRuns: 80 },
    );
  });

  it('valid JSON requests with members replaced, removed or added', async () => {
    await fc.assert(
      fc.asyncProperty(mutationArb(TOKEN_PATHS), async (mutations) => {
        let body: unknown = await validParams();
        for (const m of mutations) body = mutate(body as Record<string, unknown>, m);
        const text = JSON.stringify(body);
        const res = await sendToken(text, 'application/json');
        tally('token: mutated JSON', res);
        note(res);
        expectTokenAnswer(res, text.slice(0, 300));
      }),
      { numRuns: 100 },
    );
  });

  it('form bodies with random, repeated and hostile parameters', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.oneof(fc.constantFrom('grant_type', 'client_assertion_type', 'client_assertion', 'client_id', '__proto__', 'constructor', '__proto__[admin]', 'grant_type[$ne]', 'client_assertion[]'), fc.string({ maxLength: 10 })), fc.oneof(fc.constantFrom('client_credentials', JWT_BEARER, '', 'x'.repeat(17_000)), fc.string({ unit: 'grapheme', maxLength: 50 }))), { maxLength: 6 }),
        fc.boolean(),
        async (pairs, startValid) => {
          const params = new URLSearchParams(startValid ? ((await validParams()) as Record<string, string>) : {});
          for (const [k, v] of pairs) params.append(k, v);
          const res = await sendToken(params.toString(), 'application/x-www-form-urlencoded');
          tally('token: form', res);
          note(res);
          expectTokenAnswer(res, params.toString().slice(0, 300));
        },
      ),
      { numRuns: 80 },
    );
    expect(({} as Record<string, unknown>).admin).toBeUndefined();
  });

  it('random content types and bytes', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...CONTENT_TYPES), fc.uint8Array({ maxLength: 300 }), async (contentType, bytes) => {
        const res = await sendToken(Buffer.from(bytes), contentType);
        tally('token: content types and bytes', res);
        note(res);
        expectTokenAnswer(res, `${contentType} ${Buffer.from(bytes).toString('hex').slice(0, 60)}`);
        expect(res.status).not.toBe(200);
      }),
      { numRuns: 80 },
    );
  });

  it.each([
    ['JSON, 60 KiB assertion', 'application/json', async () => JSON.stringify({ ...(await validParams()), client_assertion: 'a'.repeat(60_000) })],
    ['JSON, 70 KiB (beyond the body limit)', 'application/json', async () => JSON.stringify({ ...(await validParams()), scope: 's'.repeat(70_000) })],
    ['JSON, 12000 nested objects', 'application/json', async () => nested(12_000)],
    ['JSON, nested objects as the assertion', 'application/json', async () => JSON.stringify({ grant_type: 'client_credentials', client_assertion_type: JWT_BEARER, client_assertion: 'X' }).replace('"X"', nested(10_000))],
    ['JSON, 200000 nested arrays (beyond)', 'application/json', async () => nested(200_000, '[', ']')],
    ['form, 20 KiB (beyond the form limit)', 'application/x-www-form-urlencoded', async () => new URLSearchParams({ ...((await validParams()) as Record<string, string>), scope: 's'.repeat(20_000) }).toString()],
    ['form, 3000 parameters', 'application/x-www-form-urlencoded', async () => Array.from({ length: 3000 }, (_, i) => `p${i}=${i}`).join('&')],
    ['form, 5000 repeated grant_type', 'application/x-www-form-urlencoded', async () => 'grant_type=client_credentials&'.repeat(500)],
    ['JSON, __proto__ member', 'application/json', async () => `{"grant_type":"client_credentials","__proto__":{"admin":true}}`],
    ['JSON, constructor.prototype member', 'application/json', async () => `{"grant_type":"client_credentials","constructor":{"prototype":{"admin":true}}}`],
    ['JSON, $-operator assertion', 'application/json', async () => JSON.stringify({ grant_type: 'client_credentials', client_assertion_type: JWT_BEARER, client_assertion: { $ne: null } })],
    ['JSON, $-operator client_id', 'application/json', async () => JSON.stringify({ ...(await validParams()), client_id: { $gt: '' } })],
    ['JSON, number assertion', 'application/json', async () => JSON.stringify({ grant_type: 'client_credentials', client_assertion_type: JWT_BEARER, client_assertion: 1e308 })],
  ] as [string, string, () => Promise<string>][])('%s', async (_label, contentType, make) => {
    const res = await sendToken(await make(), contentType);
    tally('token: huge, nested, hostile', res);
    note(res);
    expectTokenAnswer(res, _label);
    expect(res.status).not.toBe(200);
    expect(({} as Record<string, unknown>).admin).toBeUndefined();
  });
});

describe('After the fuzzing the process is healthy', () => {
  it('answers /livez and its resident memory grew by less than 256 MiB', async () => {
    const live = await http(`${api.origin}/livez`);
    expect(live.status).toBe(200);
    expect(live.body).toEqual({ status: 'ok' });
    const growth = process.memoryUsage().rss - rssBefore;
    console.log(`[fuzz] RSS growth ${(growth / 1024 / 1024).toFixed(1)} MiB`);
    expect(growth).toBeLessThan(256 * 1024 * 1024);
    // And it still does its job.
    const body = validUserBody();
    const res = await sendUsers(JSON.stringify(body));
    expect(res.status).toBe(201);
  });
});
