/**
 * docs/operations.md, Logs: pino JSON with a request id; Authorization, assertions, tokens
 * and secrets never appear; emails are masked. A busy sequence of everything an
 * integrator (or an attacker) sends, then every captured line is checked.
 */
import { createHmac, randomUUID } from 'node:crypto';
import { exportJWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawExchange } from '../support/raw-exchange.ts';
import { getUser, http, postUser, registerTestClient, signAssertion, startTestApi, type TestApi, type TestClient } from '../support/harness.ts';

const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');

let api: TestApi;
let clinics: TestClient[];
/** Everything that must never reach a log line. */
const secrets: { label: string; value: string }[] = [];
const emails: string[] = [];

function secret(label: string, value: string): string {
  secrets.push({ label, value });
  return value;
}
/** A JWT and each of its parts (even the signature alone is a credential's fingerprint). */
function jwtSecret(label: string, jwt: string): string {
  const [, payload, signature] = jwt.split('.');
  secret(label, jwt);
  if (payload && payload.length > 20) secret(`${label} payload`, payload);
  if (signature && signature.length > 20) secret(`${label} signature`, signature);
  return jwt;
}
/** Each base64 line of a PEM (a log would not need the header to leak it). */
function pemSecret(label: string, pem: string): void {
  for (const line of pem.split('\n').filter((l) => l.length > 40 && !l.startsWith('-----'))) secret(label, line);
}
function email(local: string): string {
  const e = `${local}.${randomUUID().slice(0, 6)}@hospital-example.com`;
  emails.push(e);
  return e;
}

/** No secret and no email of this file, in any form, anywhere in these lines. */
function expectNoLeak(lines: string[]): void {
  const text = lines.join('\n');
  const lower = text.toLowerCase();
  const leaks: string[] = [];
  for (const { label, value } of secrets) if (text.includes(value)) leaks.push(`${label}: …${value.slice(-24)}`);
  for (const e of emails) {
    // Neither the address (in any case, or percent-encoded) nor its local part.
    for (const form of [e.toLowerCase(), encodeURIComponent(e).toLowerCase(), e.split('@')[0]!.toLowerCase()]) {
      if (lower.includes(form)) leaks.push(`email: ${form}`);
    }
  }
  if (/authorization|bearer /i.test(text)) leaks.push('an Authorization header or Bearer credential');
  if (/BEGIN [A-Z ]*KEY/.test(text)) leaks.push('PEM key material');
  const where = (needle: string) => lines.find((l) => l.toLowerCase().includes(needle.toLowerCase()))?.slice(0, 400);
  expect(leaks, leaks.map((l) => `${l}\n    in: ${where(l.split('…').pop()!.split(': ').pop()!) ?? '?'}`).join('\n')).toEqual([]);
}

function tokenRequest(assertion: string, form = false, extra: Record<string, string> = {}) {
  const params = { grant_type: 'client_credentials', client_assertion_type: JWT_BEARER, client_assertion: assertion, ...extra };
  return http(api.tokenUrl, {
    method: 'POST',
    headers: { 'content-type': form ? 'application/x-www-form-urlencoded' : 'application/json' },
    body: form ? new URLSearchParams(params).toString() : JSON.stringify(params),
  });
}

const ADMIN_TOKEN = `admin-${randomUUID()}-${randomUUID()}`;

beforeAll(async () => {
  api = await startTestApi({ label: 'loghygiene', env: { ADMIN_TOKEN } });
  secret('ADMIN_TOKEN', ADMIN_TOKEN);
  clinics = [await registerTestClient(api.models, { name: 'Log clinic A' }), await registerTestClient(api.models, { name: 'Log clinic B' })];
  for (const c of clinics) {
    pemSecret('client private key', c.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString());
    pemSecret('client public key', c.client.public_key_pem!);
    const jwk = await exportJWK(c.privateKey);
    secret('client private JWK d', jwk.d!);
    secret('client JWK n', jwk.n!.slice(0, 60));
  }
  pemSecret('service signing key', api.deps.tokens.key.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString());
  pemSecret('service public key', api.deps.tokens.key.publicKey.export({ type: 'spki', format: 'pem' }).toString());
});
afterAll(async () => api?.close());

describe('Logs after a busy sequence: JSON, a request id on every request line, no credential, no unmasked email', () => {
  it('tokens, creates, updates, conflicts, validation errors and refused assertions leave nothing readable behind', async () => {
    const [a, b] = clinics as [TestClient, TestClient];
    const now = Math.floor(Date.now() / 1000);
    const firstLine = api.logs.lines.length;

    // Tokens: JSON and form, then refusals of every kind.
    const tokens: string[] = [];
    for (const [c, form] of [[a, false], [b, true]] as [TestClient, boolean][]) {
      const assertion = jwtSecret('accepted assertion', await signAssertion(c.client._id, c.privateKey, api.audience));
      const res = await tokenRequest(assertion, form, form ? { client_id: c.client._id } : {});
      expect(res.status).toBe(200);
      tokens.push(jwtSecret('access token', res.body.access_token));
      expect((await tokenRequest(assertion, !form)).status).toBe(401); // replayed
    }
    const [ta, tb] = tokens as [string, string];
    const refused = [
      await signAssertion(a.client._id, b.privateKey, api.audience), // someone else's key
      await signAssertion(a.client._id, a.privateKey, 'https://elsewhere.example.com/token'), // wrong audience
      await signAssertion(a.client._id, a.privateKey, api.audience, { iat: now - 100, exp: now - 50 }), // expired
      await signAssertion(a.client._id, a.privateKey, api.audience, { jti: null }), // no jti
      `${b64({ alg: 'HS256' })}.${b64({ iss: a.client._id, sub: a.client._id, aud: api.audience, exp: now + 60, iat: now, jti: randomUUID() })}`,
      `${b64({ alg: 'none' })}.${b64({ iss: 'ghost', sub: 'ghost', aud: api.audience, exp: now + 60, iat: now, jti: randomUUID() })}.`,
    ];
    refused[4] = `${refused[4]}.${createHmac('sha256', a.client.public_key_pem!).update(refused[4]!).digest('base64url')}`;
    for (const r of refused) {
      jwtSecret('refused assertion', r);
      expect((await tokenRequest(r)).status).toBe(401);
      expect((await tokenRequest(r, true, { client_id: b.client._id })).status).toBe(401); // client_id ≠ iss
    }
    // Claim values the log quotes to say what was wrong (iss of an unknown client, a wrong aud):
    // attacker-chosen text, so an email in them is masked and a URL loses its query.
    const claimEmail = email('iss.as.email');
    expect((await tokenRequest(await signAssertion(claimEmail, a.privateKey, api.audience))).status).toBe(401);
    const querySecret = secret('query in a wrong aud', `q${randomUUID().replaceAll('-', '')}`);
    expect((await tokenRequest(await signAssertion(a.client._id, a.privateKey, `https://aud.example.com/x?token=${querySecret}`))).status).toBe(401);
    expect((await tokenRequest(await signAssertion(a.client._id, a.privateKey, api.audience, { sub: `someone ${email('sub.as.email')}` }))).status).toBe(401);
    // A JWT as a claim's value (an assertion pasted as the audience): the quoted claim is cut at 200
    // characters, so its start is what could show (a security audit saw its header and claims).
    const pasted = jwtSecret('an assertion as a claim', await signAssertion(a.client._id, a.privateKey, api.audience));
    secret('the start of an assertion given as a claim', pasted.split('.')[1]!.slice(0, 40));
    expect((await tokenRequest(await signAssertion(a.client._id, a.privateKey, pasted))).status).toBe(401);
    // An assertion where a parameter should be, and a token request that is not JSON at all.
    const misplaced = jwtSecret('misplaced assertion', await signAssertion(a.client._id, a.privateKey, api.audience));
    expect((await tokenRequest('x', false, { client_id: misplaced })).status).toBeGreaterThanOrEqual(400);
    const broken = jwtSecret('assertion in broken JSON', await signAssertion(a.client._id, a.privateKey, api.audience));
    expect((await http(api.tokenUrl, { method: 'POST', headers: { 'content-type': 'application/json' }, body: `{"client_assertion":"${broken}",` })).status).toBe(400);

    // Users: creates, updates, no-ops, both conflicts, validation errors, bad bodies, from both organizations.
    const e1 = email('florence.nightingale');
    const e2 = email('mary.seacole');
    const e3 = email('elizabeth.blackwell');
    const id1 = `ehr-${randomUUID()}`;
    const id2 = `ehr-${randomUUID()}`;
    expect((await postUser(api, ta, { provider_email: e1, external_provider_id: id1, settings: { speech_locale: 'ENGLISH_US' } }, { 'x-request-id': 'hygiene-1' })).status).toBe(201);
    expect((await postUser(api, ta, { provider_email: e1.toUpperCase(), external_provider_id: id1, settings: { speech_locale: 'FRENCH_FR' } })).status).toBe(200);
    expect((await postUser(api, ta, { provider_email: e1, external_provider_id: id1 })).status).toBe(200);
    expect((await postUser(api, ta, { provider_email: e2, external_provider_id: id1 })).status).toBe(409); // email-mismatch
    expect((await postUser(api, ta, { provider_email: e2, external_provider_id: id2 })).status).toBe(201);
    expect((await postUser(api, ta, { provider_email: e2, external_provider_id: `ehr-${randomUUID()}` })).status).toBe(409); // email-conflict
    expect((await postUser(api, tb, { provider_email: e1, external_provider_id: id1 })).status).toBe(201); // the other organization
    expect((await postUser(api, ta, { provider_email: `not an email ${e3}`, external_provider_id: id2 })).status).toBe(400);
    expect((await postUser(api, ta, { provider_email: e3, external_provider_id: id2, [e3]: true, settings: { speech_locale: 'KLINGON', [e3]: 1 } })).status).toBe(400);
    expect((await postUser(api, ta, `{"provider_email":"${e3}","external_provider_id":`)).status).toBe(400);
    expect((await postUser(api, ta, `{"provider_email":"${e3}","external_provider_id":"${id2}","__proto__":{"x":1}}`)).status).toBe(400);
    expect((await postUser(api, ta, `provider_email=${e3}`, { 'content-type': 'text/plain' })).status).toBe(415);
    expect((await postUser(api, ta, { provider_email: e3, external_provider_id: id2 }, { 'x-nabla-api-version': '1999-01-01' })).status).toBe(400);
    expect((await postUser(api, ta, { provider_email: e3, external_provider_id: 'x'.repeat(70_000) })).status).toBe(413);

    // Bearer refusals: tampered, another organization's claim, in the wrong header, and in the query string.
    const [h, p, s] = ta.split('.') as [string, string, string];
    const tampered = jwtSecret('tampered token', `${h}.${b64({ ...JSON.parse(Buffer.from(p, 'base64url').toString()), org_id: 'other' })}.${s}`);
    expect((await postUser(api, tampered, { provider_email: e1, external_provider_id: id1 })).status).toBe(401);
    expect((await postUser(api, `${ta}x`, { provider_email: e1, external_provider_id: id1 })).status).toBe(401);
    expect((await http(`${api.baseUrl}/users/${id1}`, { headers: { authorization: `Basic ${secret('basic credentials', Buffer.from(`user:${ta.slice(-30)}`).toString('base64'))}` } })).status).toBe(401);
    expect((await http(`${api.baseUrl}/users/${id1}`, { headers: { 'x-api-key': ta } })).status).toBe(401);
    // (The token in the query string and an email in the URL path are the known leaks below.)

    // Reads.
    expect((await getUser(api, ta, id1)).status).toBe(200);
    expect((await getUser(api, tb, id2)).status).toBe(404);
    // An external id that is an address typed with a full-width at sign, in the path of a read.
    const wide = email('wide.at.sign').replace('@', '\uFF20');
    emails.push(wide);
    expect((await getUser(api, ta, wide)).status).toBe(404);

    // ------------------------------------------------------------ the log
    const lines = api.logs.lines;
    expect(lines.length).toBeGreaterThan(60);
    expectNoLeak(lines);
    const parsed = lines.map((line) => {
      try {
        return JSON.parse(line) as Record<string, unknown>;
      } catch {
        throw new Error(`not a JSON log line: ${line.slice(0, 300)}`);
      }
    });
    // Every line about a request (Fastify's own request lines and everything a handler logs) names its request.
    const aboutRequests = parsed.slice(firstLine).filter((l) => 'req' in l || 'res' in l || 'responseTime' in l || /request|token|assertion|upsert|client error|unhandled/i.test(String(l.msg)));
    expect(aboutRequests.length).toBeGreaterThan(50);
    for (const l of aboutRequests) expect(l.reqId, JSON.stringify(l).slice(0, 300)).toEqual(expect.any(String));
    expect(parsed.some((l) => l.reqId === 'hygiene-1')).toBe(true);

  });
});

/**
 * Fastify's default request serializer logs `req.url` whole on every "incoming
 * request" line, before any route code runs, so an access token sent as the
 * RFC 6750 `access_token` query parameter, or an external_provider_id that is an
 * email address, would reach the log as sent; the `req` serializer drops the
 * query string and masks emails in the path.
 */
describe('The queue dashboard\'s ADMIN_TOKEN never reaches the log', () => {
  it('sent right (Bearer, Basic), wrong, in the query string, or as a Basic user name', async () => {
    const from = api.logs.lines.length;
    const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
    secret('ADMIN_TOKEN in Basic credentials', Buffer.from(`admin:${ADMIN_TOKEN}`).toString('base64'));
    secret('ADMIN_TOKEN as a Basic user name', Buffer.from(`${ADMIN_TOKEN}:x`).toString('base64'));
    const wrong = secret('a wrong admin token', `wrong-${randomUUID()}`);
    expect((await http(`${api.origin}/admin/queues`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).status).toBe(200);
    expect((await http(`${api.origin}/admin/queues`, { headers: { authorization: basic('admin', ADMIN_TOKEN) } })).status).toBe(200);
    expect((await http(`${api.origin}/admin/queues`, { headers: { authorization: `Bearer ${wrong}` } })).status).toBe(401);
    expect((await http(`${api.origin}/admin/queues`, { headers: { authorization: basic(ADMIN_TOKEN, 'x') } })).status).toBe(401);
    await http(`${api.origin}/admin/queues?token=${ADMIN_TOKEN}`);
    expect(api.logs.lines.length).toBeGreaterThan(from);
    expectNoLeak(api.logs.lines.slice(from));
  });
});

describe('The request URL in the log: no token from the query string, no email in the path', () => {
  it('an access token sent as ?access_token= does not reach the log', async () => {
    const [a] = clinics as [TestClient];
    const res = await tokenRequest(await signAssertion(a.client._id, a.privateKey, api.audience));
    const token = jwtSecret('access token in a query string', res.body.access_token);
    const from = api.logs.lines.length;
    expect((await http(`${api.baseUrl}/users/anyone?access_token=${token}`)).status).toBe(401);
    expectNoLeak(api.logs.lines.slice(from));
  });

  it('an external_provider_id that is an email address is masked in the logged URL', async () => {
    const [a] = clinics as [TestClient];
    const res = await tokenRequest(await signAssertion(a.client._id, a.privateKey, api.audience));
    const token = jwtSecret('access token', res.body.access_token);
    const emailAsId = email('virginia.apgar');
    const from = api.logs.lines.length;
    expect((await postUser(api, token, { provider_email: emailAsId, external_provider_id: emailAsId })).status).toBe(201);
    expect((await getUser(api, token, emailAsId)).status).toBe(200);
    expectNoLeak(api.logs.lines.slice(from));
  });

  it('so is every address the API takes, also in the path as sent (unencoded): a quote or "=" in the local part, a top-level domain with a digit or a combining mark (a security audit saw each logged whole)', async () => {
    const [a] = clinics as [TestClient];
    const res = await tokenRequest(await signAssertion(a.client._id, a.privateKey, api.audience));
    const token = jwtSecret('access token', res.body.access_token);
    const tag = randomUUID().slice(0, 6);
    const odd = [`dan.o'connor.${tag}@example.com`, `eve.${tag}=x@example.com`, `frank.${tag}@example.a1`, `gita.${tag}@example.भारत`];
    emails.push(...odd);
    const from = api.logs.lines.length;
    for (const id of odd) {
      expect((await postUser(api, token, { provider_email: id, external_provider_id: id })).status).toBe(201);
      // As a client that does not percent-encode sends it (Go's url.PathEscape leaves "'", "=" and "@").
      const raw = await rawExchange(Number(new URL(api.origin).port), `GET ${new URL(api.baseUrl).pathname}/users/${encodeURI(id)} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nX-Nabla-Api-Version: 2026-03-23\r\nConnection: close\r\n\r\n`);
      expect(raw).toMatch(/^HTTP\/1\.1 200 /);
    }
    expect(api.logs.lines.length).toBeGreaterThan(from);
    expectNoLeak(api.logs.lines.slice(from));
  });

  it('a request line in absolute form (http://user:password@host/path) leaves its credentials out of the log and of the answer\'s instance', async () => {
    const password = secret('a password in an absolute-form request line', `abs-${randomUUID()}`);
    const from = api.logs.lines.length;
    const raw = await rawExchange(Number(new URL(api.origin).port), `GET http://admin:${password}@10.0.0.1${new URL(api.baseUrl).pathname}/users/ehr-alice HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    expect(raw).toMatch(/^HTTP\/1\.1 40[14] /);
    expect(raw).not.toContain(password);
    expect(JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4)).instance).toBe(`${new URL(api.baseUrl).pathname}/users/ehr-alice`);
    expect(api.logs.lines.length).toBeGreaterThan(from);
    expectNoLeak(api.logs.lines.slice(from));
  });
});
