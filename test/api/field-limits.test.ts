import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getToken, getUser, postUser, registerTestClient, startTestApi, type TestApi } from '../support/harness.ts';

let api: TestApi;
let token: string;

beforeAll(async () => {
  api = await startTestApi({ label: 'field_limits' });
  token = await getToken(api, await registerTestClient(api.models));
});
afterAll(async () => api?.close());

/** A valid address of exactly `length` characters: a 64-character local part and labels of at most 63. */
function emailOfLength(length: number): string {
  const local = randomUUID().replace(/-/g, '').padEnd(64, 'l');
  let domain = '';
  const labels = ['a', 'b', 'c', 'd'];
  for (const l of labels) {
    const left = length - local.length - 1 - domain.length - '.com'.length;
    if (left <= 0) break;
    const size = Math.min(63, left - (domain ? 1 : 0));
    domain += (domain ? '.' : '') + l.repeat(size);
  }
  const email = `${local}@${domain}.com`;
  if (email.length !== length) throw new Error(`built ${email.length}, wanted ${length}`);
  return email;
}

describe('docs/contract.md field limits, at the limit and one past it', () => {
  it('a 320-character provider_email is accepted and returned as sent; 321 is 400 naming provider_email', async () => {
    const id = randomUUID();
    const email = emailOfLength(320);
    const created = await postUser(api, token, { provider_email: email, external_provider_id: id });
    expect(created.status, created.text).toBe(201);
    expect(created.body.provider_email).toBe(email);
    expect((await getUser(api, token, id)).body.provider_email).toBe(email);

    const over = await postUser(api, token, { provider_email: emailOfLength(321), external_provider_id: randomUUID() });
    expect(over.status).toBe(400);
    expect(over.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(over.body.errors.map((e: { path: string }) => e.path)).toContain('provider_email');
  });

  it('a 256-character other_specialty_name is accepted and stored whole; 257 is 400 naming it', async () => {
    const id = randomUUID();
    const name = 'S'.repeat(256);
    const settings = { speech_locale: 'ENGLISH_US', specialty: { kind: 'OTHER', other_specialty_name: name } };
    const created = await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id, settings });
    expect(created.status, created.text).toBe(201);
    expect(created.body.settings.specialty).toEqual({ kind: 'OTHER', other_specialty_name: name });
    expect((await getUser(api, token, id)).body.settings.specialty.other_specialty_name).toBe(name);

    const over = await postUser(api, token, {
      provider_email: `${randomUUID()}@example.com`,
      external_provider_id: randomUUID(),
      settings: { speech_locale: 'ENGLISH_US', specialty: { kind: 'OTHER', other_specialty_name: 'S'.repeat(257) } },
    });
    expect(over.status).toBe(400);
    expect(over.body.errors.map((e: { path: string }) => e.path)).toContain('settings.specialty.other_specialty_name');
  });

  it('other_specialty_name is trimmed of what shows nothing at its ends (white space, zero-width spaces, BOM), as stored and as read back; inside, it is kept', async () => {
    const id = randomUUID();
    const settings = { speech_locale: 'ENGLISH_US', specialty: { kind: 'OTHER', other_specialty_name: '\u3000\u00a0\u200bSports\u00a0medicine\ufeff\u200b ' } };
    const created = await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id, settings });
    expect(created.status, created.text).toBe(201);
    expect(created.body.settings.specialty.other_specialty_name).toBe('Sports\u00a0medicine');
    expect((await getUser(api, token, id)).body.settings.specialty.other_specialty_name).toBe('Sports\u00a0medicine');
  });
});

