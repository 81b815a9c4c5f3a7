import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getToken, postUser, registerTestClient, startTestApi, uniquePrefix, type TestApi, type TestClient } from '../support/harness.ts';

let a: TestApi;
let b: TestApi;
let clinic: TestClient;
let token: string;

beforeAll(async () => {
  const env = { PUBLIC_BASE_URL: 'https://connect.example.com', QUEUE_PREFIX: uniquePrefix('two') };
  a = await startTestApi({ label: 'two', env });
  b = await startTestApi({ env, mongoUrl: a.env.MONGO_URL });
  clinic = await registerTestClient(a.models);
  token = await getToken(a, clinic);
});
afterAll(async () => {
  await a?.close();
  await b?.close();
});

// Each API process remembers the users it wrote last (recent-users.ts) to skip a read
// on updates. These requests alternate between two processes, so each one's copy is
// stale half of the time: the answers must be exactly what a single process gives.
describe('Two API instances taking turns on one user', () => {
  it('a stale copy never causes a wrong answer: updates, no-ops and kept-locale checks all follow the stored state', async () => {
    const id = randomUUID();
    const email = `${id}@example.com`;
    const send = (api: TestApi, settings?: object) => postUser(api, token, { provider_email: email, external_provider_id: id, ...(settings ? { settings } : {}) });

    expect((await send(a, { speech_locale: 'ENGLISH_US', secondary_speech_locale: 'FRENCH_FR' })).status).toBe(201); // a caches v1
    const onB = await send(b, { speech_locale: 'GERMAN_DE', secondary_speech_locale: null }); // b: v2, secondary cleared
    expect(onB.body).toMatchObject({ version: 2, settings: { speech_locale: 'GERMAN_DE', secondary_speech_locale: null } });

    // a's copy (v1) says secondary FRENCH_FR, so FRENCH_FR as primary would look like a clash: the stored state says it is not.
    const onA = await send(a, { speech_locale: 'FRENCH_FR' });
    expect(onA.status).toBe(200);
    expect(onA.body).toMatchObject({ version: 3, settings: { speech_locale: 'FRENCH_FR', secondary_speech_locale: null } });

    // b's copy (v2) says GERMAN_DE: sending GERMAN_DE is a change against the stored v3.
    const back = await send(b, { speech_locale: 'GERMAN_DE' });
    expect(back.body.version).toBe(4);

    // a's copy (v3) says FRENCH_FR: sending GERMAN_DE looks like a change but is a no-op against v4.
    const noop = await send(a, { speech_locale: 'GERMAN_DE' });
    expect(noop.status).toBe(200);
    expect(noop.body.version).toBe(4);

    // b's copy is v4 and right: sending FRENCH_FR again is a real change, answered in one write.
    expect((await send(b, { speech_locale: 'FRENCH_FR' })).body.version).toBe(5);
    // a's copy is v4 (refreshed by its re-read) and now stale: the same request is a no-op against v5.
    const again = await send(a, { speech_locale: 'FRENCH_FR' });
    expect(again.body).toMatchObject({ version: 5, settings: { speech_locale: 'FRENCH_FR' } });

    const stored = await a.models.ProviderUser.findOne({ external_provider_id: id }).lean();
    expect(stored).toMatchObject({ version: 5, settings: { speech_locale: 'FRENCH_FR', secondary_speech_locale: null } });
  });
});
