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
});
