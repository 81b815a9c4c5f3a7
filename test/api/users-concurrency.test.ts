import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SPEECH_LOCALES } from '@connect/shared';
import { getToken, postUser, registerTestClient, startTestApi, type TestApi, type TestClient } from '../support/harness.ts';

let api: TestApi;
let clinic: TestClient;
let token: string;

beforeAll(async () => {
  api = await startTestApi({ label: 'concurrency' });
  clinic = await registerTestClient(api.models);
  token = await getToken(api, clinic);
});
afterAll(async () => api?.close());

// These run through one API process. The unique indexes decide create races on
// MongoDB and FerretDB alike; several processes racing on one existing document
// need the database's atomic conditional update (MongoDB, our FerretDB build:
// test/hardening/linearizability.test.ts, test/resilience/many-instances.test.ts).
describe('Concurrency of POST /users', () => {
  it('50 simultaneous identical creates give one user: 201 once, 200 for the rest, one user.created', async () => {
    const id = randomUUID();
    const body = { provider_email: `${id}@example.com`, external_provider_id: id, settings: { speech_locale: 'ENGLISH_US' } };
    const answers = await Promise.all(Array.from({ length: 50 }, () => postUser(api, token, body)));
    const statuses = answers.map((a) => a.status).sort();
    expect(statuses.filter((s) => s === 201)).toHaveLength(1);
    expect(statuses.filter((s) => s === 200)).toHaveLength(49);
    const users = await api.models.ProviderUser.find({ organization_id: clinic.organization._id, external_provider_id: id }).lean();
    expect(users).toHaveLength(1);
    expect(users[0]!.version).toBe(1);
    expect(users[0]!.last_event.type).toBe('user.created');
    expect(new Set(answers.map((a) => a.body.version))).toEqual(new Set([1]));
  });

  it('20 simultaneous creates sharing an email with different ids give one 201 and 409 email-conflict for the rest', async () => {
    const email = `shared-${randomUUID()}@example.com`;
    const answers = await Promise.all(
      Array.from({ length: 20 }, (_, i) => postUser(api, token, { provider_email: i % 2 ? email : email.toUpperCase(), external_provider_id: `${email}-${i}` })),
    );
    expect(answers.filter((a) => a.status === 201)).toHaveLength(1);
    const conflicts = answers.filter((a) => a.status === 409);
    expect(conflicts).toHaveLength(19);
    for (const c of conflicts) expect(c.body.type).toMatch(/\/email-conflict$/);
    expect(await api.models.ProviderUser.countDocuments({ organization_id: clinic.organization._id, email_normalized: email })).toBe(1);
  });

  it('30 simultaneous different updates of one user each bump the version once, none lost', async () => {
    const id = randomUUID();
    const email = `${id}@example.com`;
    await postUser(api, token, { provider_email: email, external_provider_id: id, settings: { speech_locale: 'ENGLISH_US' } });
    // 30 distinct locales, none the current one: every request changes something whatever order they run in.
    const locales = SPEECH_LOCALES.filter((l) => l !== 'ENGLISH_US').slice(0, 30);
    const answers = await Promise.all(
      locales.map((speech_locale) => postUser(api, token, { provider_email: email, external_provider_id: id, settings: { speech_locale } })),
    );
    expect(answers.every((a) => a.status === 200)).toBe(true);
    const versions = answers.map((a) => a.body.version).sort((a, b) => a - b);
    expect(versions).toEqual(Array.from({ length: 30 }, (_, i) => i + 2));
    const doc = await api.models.ProviderUser.findOne({ organization_id: clinic.organization._id, external_provider_id: id }).lean();
    expect(doc!.version).toBe(31);
    const last = answers.find((a) => a.body.version === 31)!;
    expect(doc!.settings!.speech_locale).toBe(last.body.settings.speech_locale);
  });
});
