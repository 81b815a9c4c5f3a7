import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { http, postUser, registerTestClient, requestToken, signAssertion, startTestApi, type TestApi, type TestClient } from '../support/harness.ts';

let api: TestApi;
let clinic: TestClient;

beforeAll(async () => {
  api = await startTestApi({ label: 'logging' });
  clinic = await registerTestClient(api.models);
});
afterAll(async () => api?.close());

describe('Logs: pino JSON with a request id; no credentials, emails masked', () => {
  it('after tokens, upserts, conflicts and refusals, the debug-level log holds none of them', async () => {
    const secrets: string[] = [];
    const tokenRes = await requestToken(api, clinic);
    const token = tokenRes.body.access_token as string;
    secrets.push(token);
    const assertion = await signAssertion(clinic.client._id, clinic.privateKey, api.tokenUrl);
    secrets.push(assertion);
    await http(api.tokenUrl, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ grant_type: 'client_credentials', client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: assertion }) });
    // Replayed: refused, and the refusal is logged with its reason.
    await http(api.tokenUrl, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ grant_type: 'client_credentials', client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: assertion }).toString() });

    const id = randomUUID();
    const email = `Grace.Hopper.${id.slice(0, 8)}@navy.example.com`;
    await postUser(api, token, { provider_email: email, external_provider_id: id, settings: { speech_locale: 'ENGLISH_US' } }, { 'x-request-id': 'req-log-test-1' });
    await postUser(api, token, { provider_email: `other.${email}`, external_provider_id: id });
    await postUser(api, token, { provider_email: email, external_provider_id: randomUUID() });
    await postUser(api, token, { provider_email: `bad ${email}`, external_provider_id: id });
    await postUser(api, `${token}x`, { provider_email: email, external_provider_id: id });

    const text = api.logs.text;
    expect(api.logs.lines.length).toBeGreaterThan(10);
    for (const line of api.logs.lines) expect(() => JSON.parse(line)).not.toThrow();
    expect(text).toContain('"reqId":"req-log-test-1"');
    expect(text).toContain('replayed jti');
    for (const s of secrets) {
      expect(text).not.toContain(s);
      expect(text).not.toContain(s.split('.')[2]!); // not even the signature part
    }
    expect(text.toLowerCase()).not.toContain(email.toLowerCase());
    expect(text.toLowerCase()).not.toContain('grace.hopper');
    expect(text).not.toMatch(/authorization/i);
    expect(text).not.toContain(clinic.client.public_key_pem!.split('\n')[1]!);
  });

  it('an X-Request-Id that is not 1 to 128 of [A-Za-z0-9._-] is replaced by a fresh UUID: neither echoed nor logged', async () => {
    const forged = [`req "quoted" <script>${randomUUID()}`, `long-${'A'.repeat(8000)}`];
    for (const given of forged) {
      const res = await http(`${api.baseUrl}/users/someone`, { headers: { 'x-request-id': given } });
      expect(res.status).toBe(401);
      const fresh = res.headers.get('x-request-id')!;
      expect(fresh).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
      // The request was logged, under the fresh id, and the given one appears nowhere.
      await expect.poll(() => api.logs.text).toContain(`"reqId":"${fresh}"`);
      expect(api.logs.text).not.toContain(given.slice(0, 40));
    }
    const kept = await http(`${api.baseUrl}/users/someone`, { headers: { 'x-request-id': 'trace.id-OK_1' } });
    expect(kept.headers.get('x-request-id')).toBe('trace.id-OK_1');
  });

  it('a request is one "request completed" line at info: method, path, status, time taken, request id and the outcome', async () => {
    const token = (await requestToken(api, clinic)).body.access_token as string;
    const id = randomUUID();
    await postUser(api, token, { provider_email: `one.line.${id.slice(0, 8)}@example.com`, external_provider_id: id }, { 'x-request-id': 'req-one-line' });
    await postUser(api, token, { provider_email: `one.line.${id.slice(0, 8)}@example.com`, external_provider_id: id, settings: { speech_locale: 'FRENCH_FR' } }, { 'x-request-id': 'req-one-line-2' });

    const linesOf = (reqId: string) => api.logs.lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.reqId === reqId);
    const info = (reqId: string) => linesOf(reqId).filter((l) => (l.level as number) >= 30);
    expect(info('req-one-line')).toEqual([
      expect.objectContaining({
        msg: 'request completed',
        req: expect.objectContaining({ method: 'POST', url: '/v1/connect/server/users' }),
        res: { statusCode: 201 },
        responseTime: expect.any(Number),
        outcome: 'created',
        version: 1,
      }),
    ]);
    expect(info('req-one-line-2')).toEqual([expect.objectContaining({ msg: 'request completed', res: { statusCode: 200 }, outcome: 'updated', version: 2 })]);
    // Arrival is still logged, one level down: the line a request that never completes leaves.
    expect(linesOf('req-one-line').filter((l) => l.level === 20).map((l) => l.msg)).toContain('incoming request');

    // A refusal's line says why, by the problem's slug (the token endpoint: its RFC 6749 error); an
    // observability audit found only the status there for a bad token, bad input or a conflict.
    await postUser(api, token, { provider_email: 'not an email', external_provider_id: id }, { 'x-request-id': 'req-refused-1' });
    await postUser(api, token, { provider_email: `other.${id.slice(0, 8)}@example.com`, external_provider_id: id }, { 'x-request-id': 'req-refused-2' });
    await postUser(api, 'not-a-token', { provider_email: `x.${id.slice(0, 8)}@example.com`, external_provider_id: id }, { 'x-request-id': 'req-refused-3' });
    await postUser(api, token, '{"provider_email":', { 'x-request-id': 'req-refused-4' });
    await http(api.tokenUrl, { method: 'POST', headers: { 'content-type': 'application/json', 'x-request-id': 'req-refused-5' }, body: '{"grant_type":"client_credentials"}' });
    const completed = (reqId: string) => info(reqId).find((l) => l.msg === 'request completed');
    expect(completed('req-refused-1')).toMatchObject({ res: { statusCode: 400 }, problem: 'validation' });
    expect(completed('req-refused-2')).toMatchObject({ res: { statusCode: 409 }, problem: 'email-mismatch' });
    expect(completed('req-refused-3')).toMatchObject({ res: { statusCode: 401 }, problem: 'unauthorized' });
    expect(completed('req-refused-4')).toMatchObject({ res: { statusCode: 400 }, problem: 'malformed-body' });
    expect(completed('req-refused-5')).toMatchObject({ res: { statusCode: 400 }, oauth_error: 'invalid_request' });
  });

  it('probes and scrapes (/livez, /readyz, /metrics, GET or HEAD) answered 200 are logged at debug, not info: a probe every 10 s was 8,640 info lines a day', async () => {
    const probes = [
      ['GET', '/livez'],
      ['HEAD', '/livez'],
      ['GET', '/readyz'],
      ['GET', '/metrics'],
    ] as const;
    for (const [method, path] of probes) {
      const res = await fetch(`${api.origin}${path}`, { method, headers: { 'x-request-id': `probe-${method}-${path.slice(1)}` } });
      expect(res.status, `${method} ${path}`).toBe(200);
    }
    // A request after them, at info: once its line is written, the probes' lines are too (written in order).
    await http(`${api.origin}/no-such-path`, { headers: { 'x-request-id': 'after-probes' } });
    const lines = () => api.logs.lines.map((l) => JSON.parse(l) as { reqId?: string; level: number; msg: string; res?: { statusCode: number } });
    await expect.poll(() => lines().some((l) => l.reqId === 'after-probes' && l.msg === 'request completed' && l.level === 30)).toBe(true);
    for (const [method, path] of probes) {
      const own = lines().filter((l) => l.reqId === `probe-${method}-${path.slice(1)}`);
      expect(own.find((l) => l.msg === 'request completed'), `${method} ${path}`).toMatchObject({ level: 20, res: { statusCode: 200 } });
      expect(own.filter((l) => l.level >= 30), `${method} ${path}`).toEqual([]);
    }
  });
});

