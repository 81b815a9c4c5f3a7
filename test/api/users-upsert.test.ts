import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KeyedLock, upsertProviderUser, type ProviderUserDoc } from '@connect/shared';
import { getToken, getUser, http, postUser, registerTestClient, startTestApi, type TestApi, type TestClient } from '../support/harness.ts';

let api: TestApi;
let clinic: TestClient;
let token: string;
let seq = 0;
const nextId = () => `ehr-${++seq}-${Date.now()}`;

beforeAll(async () => {
  api = await startTestApi({ label: 'upsert' });
  clinic = await registerTestClient(api.models);
  token = await getToken(api, clinic);
});
afterAll(async () => api?.close());

const stored = (externalProviderId: string) =>
  api.models.ProviderUser.findOne({ organization_id: clinic.organization._id, external_provider_id: externalProviderId }).lean();

describe('POST /users: no user has this external_provider_id nor this email → create', () => {
  it('answers 201 with Location, the documented fields, updated_at and version 1, and stores the user', async () => {
    const id = nextId();
    const res = await postUser(api, token, {
      provider_email: '  Dr.Who@Example.com ',
      external_provider_id: id,
      settings: { specialty: { kind: 'CARDIOLOGY' }, speech_locale: 'ENGLISH_US', secondary_speech_locale: 'SPANISH_ES' },
    });
    expect(res.status).toBe(201);
    expect(res.headers.get('location')).toBe(`${api.baseUrl}/users/${id}`);
    expect(res.headers.get('x-nabla-api-version')).toBe('2026-03-23');
    expect(res.body).toEqual({
      provider_email: 'Dr.Who@Example.com',
      external_provider_id: id,
      settings: {
        specialty: { kind: 'CARDIOLOGY', other_specialty_name: null },
        speech_locale: 'ENGLISH_US',
        secondary_speech_locale: 'SPANISH_ES',
      },
      created_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
      updated_at: res.body.created_at,
      version: 1,
    });
    const doc = await stored(id);
    expect(doc?.email_normalized).toBe('dr.who@example.com');
    expect(doc?.version).toBe(1);
    expect(doc?.last_event.type).toBe('user.created');
  });

  it('without settings stores settings: null', async () => {
    const id = nextId();
    const res = await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id });
    expect(res.status).toBe(201);
    expect(res.body.settings).toBeNull();
    expect((await stored(id))?.settings).toBeNull();
  });
});

describe('POST /users: every address a mail server takes', () => {
  it('a local part with any of RFC 5322\'s specials (!#$%&\'*+/=?^_`{|}~-), a non-ASCII local part and an internationalized domain are created, and matched case-insensitively after', async () => {
    const tag = randomUUID().slice(0, 8);
    for (const [i, email] of [`a&b!#$%*/=?^\`{|}~-${tag}@Example.com`, `O'Brien+${tag}@example.com`, `Ünï.${tag}@bücher.example`, `${tag}@пример.рф`, `${tag}@xn--bcher-kva.example`].entries()) {
      const id = `${tag}-intl-${i}`;
      const created = await postUser(api, token, { provider_email: email, external_provider_id: id });
      expect(created.status, JSON.stringify(created.body)).toBe(201);
      expect(created.body.provider_email).toBe(email);
      const again = await postUser(api, token, { provider_email: email.toUpperCase(), external_provider_id: id });
      expect(again.status).toBe(200);
      expect(again.headers.get('x-connect-outcome')).toBe('unchanged');
      expect(again.body.provider_email).toBe(email);
    }
  });
});

describe('POST /users: one address in two Unicode spellings is one address (docs/contract.md, "Email addresses")', () => {
  it('"é" as one character (NFC) or as "e" and an accent (NFD), in the local part or the domain: one user, returned as first stored; another id with the other spelling is an email-conflict', async () => {
    const tag = randomUUID().slice(0, 8);
    const nfd = `jose\u0301.${tag}@bu\u0308cher.example`;
    const nfc = nfd.normalize('NFC');
    expect(nfc).not.toBe(nfd);
    const created = await postUser(api, token, { provider_email: nfd, external_provider_id: `${tag}-a` });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    expect(created.body.provider_email).toBe(nfd);
    const again = await postUser(api, token, { provider_email: nfc.toUpperCase(), external_provider_id: `${tag}-a`, settings: { speech_locale: 'ENGLISH_US' } });
    expect(again.status, JSON.stringify(again.body)).toBe(200);
    expect(again.body.provider_email).toBe(nfd);
    expect(again.body.version).toBe(2);
    const other = await postUser(api, token, { provider_email: nfc, external_provider_id: `${tag}-b` });
    expect(other.status).toBe(409);
    expect(other.body.type).toMatch(/\/email-conflict$/);
    expect(await stored(`${tag}-b`)).toBeNull();
  });

  it('a user stored before keys were composed (its key in NFD) still matches its own spelling: 200, not email-mismatch', async () => {
    const tag = randomUUID().slice(0, 8);
    const nfd = `rene\u0301e.${tag}@example.com`;
    const created = await postUser(api, token, { provider_email: `plain.${tag}@example.com`, external_provider_id: `${tag}-old` });
    expect(created.status).toBe(201);
    // As an earlier version wrote it: the address as sent, lower-cased only.
    await api.models.ProviderUser.updateOne({ organization_id: clinic.organization._id, external_provider_id: `${tag}-old` }, { $set: { provider_email: nfd, email_normalized: nfd.toLowerCase() } });
    // The write path itself, on a fresh read: the API's cache of recent users still holds the address as created.
    const published: ProviderUserDoc[] = [];
    const deps = { models: api.models, lock: new KeyedLock(), publisher: { publishSoon: (u: ProviderUserDoc) => void published.push(u) } };
    const res = await upsertProviderUser(deps, { organizationId: clinic.organization._id, body: { provider_email: nfd, external_provider_id: `${tag}-old`, settings: { speech_locale: 'FRENCH_FR' } } });
    expect(res.outcome).toBe('updated');
    expect(res.user.provider_email).toBe(nfd);
    expect(published.map((u) => u.version)).toEqual([2]);
  });
});

describe('POST /users: addresses stored by an earlier version that this one reads or refuses otherwise (docs/operations.md, Upgrading)', () => {
  /** A user as an earlier version stored it: its address as sent, its key that address lower-cased only. */
  async function storedEarlier(tag: string, email: string) {
    const id = `${tag}-earlier`;
    // Written beside the API (which then holds no copy of it in its cache of recent users), then given the earlier shape.
    const deps = { models: api.models, lock: new KeyedLock(), publisher: { publishSoon: () => undefined } };
    await upsertProviderUser(deps, { organizationId: clinic.organization._id, body: { provider_email: `plain.${tag}@example.com`, external_provider_id: id } });
    await api.models.ProviderUser.updateOne({ organization_id: clinic.organization._id, external_provider_id: id }, { $set: { provider_email: email, email_normalized: email.toLowerCase() } });
    return id;
  }

  it('a create of another id with the very spelling an earlier version stored decomposed is 409 email-conflict, not a second user (the unique index knows the earlier key only)', async () => {
    const tag = randomUUID().slice(0, 8);
    const nfd = `rene\u0301e.${tag}@example.com`;
    await storedEarlier(tag, nfd);
    const twin = await postUser(api, token, { provider_email: nfd, external_provider_id: `${tag}-twin` });
    expect(twin.status, JSON.stringify(twin.body)).toBe(409);
    expect(twin.body.type).toMatch(/\/email-conflict$/);
    expect(await stored(`${tag}-twin`)).toBeNull();
  });

  it('an address refused for new users (an invisible character, a full-width domain letter) is 400 naming provider_email on a create; a user stored with it earlier is updated, deactivated and reactivated with it', async () => {
    for (const email of [`vs16\ufe0f.${randomUUID().slice(0, 8)}@example.com`, `fw.${randomUUID().slice(0, 8)}@\uff45xample.com`]) {
      const created = await postUser(api, token, { provider_email: email, external_provider_id: `new-${randomUUID()}` });
      expect(created.status, JSON.stringify(created.body)).toBe(400);
      expect(created.body.errors).toEqual([{ path: 'provider_email', message: expect.stringMatching(/^must be a valid email address: /) }]);

      const id = await storedEarlier(randomUUID().slice(0, 8), email);
      const updated = await postUser(api, token, { provider_email: email, external_provider_id: id, settings: { speech_locale: 'FRENCH_FR' } });
      expect([updated.status, updated.body.version], JSON.stringify(updated.body)).toEqual([200, 2]);
      const deactivated = await http(`${api.baseUrl}/users/${encodeURIComponent(id)}`, { method: 'DELETE', headers: { authorization: `Bearer ${token}`, 'x-nabla-api-version': 'x-nabla-next' } });
      expect(deactivated.status).toBe(200);
      const reactivated = await postUser(api, token, { provider_email: email, external_provider_id: id });
      expect([reactivated.status, reactivated.headers.get('x-connect-outcome'), reactivated.body.version]).toEqual([200, 'updated', 4]);
      expect(reactivated.body.provider_email).toBe(email);
    }
  });
});

describe('POST /users: same external_provider_id and same email → merge settings', () => {
  it('matches the email case-insensitively, returns it as first stored, and bumps the version', async () => {
    const id = nextId();
    const first = await postUser(api, token, { provider_email: `Ann.${id}@Example.com`, external_provider_id: id });
    const res = await postUser(api, token, {
      provider_email: `ann.${id}@EXAMPLE.com`,
      external_provider_id: id,
      settings: { speech_locale: 'FRENCH_FR' },
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('location')).toBeNull();
    expect(res.body.provider_email).toBe(`Ann.${id}@Example.com`);
    expect(res.body.version).toBe(2);
    expect(res.body.created_at).toBe(first.body.created_at);
    expect(res.body.settings).toEqual({ specialty: null, speech_locale: 'FRENCH_FR', secondary_speech_locale: null });
    expect((await stored(id))?.version).toBe(2);
  });

  it('absent specialty and secondary locale keep their values; null clears them', async () => {
    const id = nextId();
    const email = `${id}@example.com`;
    await postUser(api, token, {
      provider_email: email,
      external_provider_id: id,
      settings: { specialty: { kind: 'OTHER', other_specialty_name: 'Sleep medicine' }, speech_locale: 'ENGLISH_US', secondary_speech_locale: 'GERMAN_DE' },
    });
    const kept = await postUser(api, token, { provider_email: email, external_provider_id: id, settings: { speech_locale: 'ENGLISH_UK' } });
    expect(kept.status).toBe(200);
    expect(kept.body.settings).toEqual({
      specialty: { kind: 'OTHER', other_specialty_name: 'Sleep medicine' },
      speech_locale: 'ENGLISH_UK',
      secondary_speech_locale: 'GERMAN_DE',
    });
    const cleared = await postUser(api, token, {
      provider_email: email,
      external_provider_id: id,
      settings: { specialty: null, speech_locale: 'ENGLISH_UK', secondary_speech_locale: null },
    });
    expect(cleared.body.settings).toEqual({ specialty: null, speech_locale: 'ENGLISH_UK', secondary_speech_locale: null });
    expect(cleared.body.version).toBe(3);
    expect((await stored(id))?.settings).toEqual(cleared.body.settings);
  });

  it('omitting settings keeps the current ones and changes nothing', async () => {
    const id = nextId();
    const email = `${id}@example.com`;
    await postUser(api, token, { provider_email: email, external_provider_id: id, settings: { speech_locale: 'ITALIAN_IT' } });
    const res = await postUser(api, token, { provider_email: email, external_provider_id: id });
    expect(res.status).toBe(200);
    expect(res.body.settings.speech_locale).toBe('ITALIAN_IT');
    expect(res.body.version).toBe(1);
  });

  it('a request that changes nothing answers 200, leaves version and updated_at, and writes no event', async () => {
    const id = nextId();
    const email = `${id}@example.com`;
    const body = { provider_email: email, external_provider_id: id, settings: { specialty: { kind: 'UROLOGY' }, speech_locale: 'POLISH_PL' } };
    const first = await postUser(api, token, body);
    const before = await stored(id);
    await new Promise((r) => setTimeout(r, 20));
    const again = await postUser(api, token, { ...body, provider_email: email.toUpperCase() });
    expect(again.status).toBe(200);
    expect(again.body).toEqual(first.body);
    const after = await stored(id);
    expect(after?.version).toBe(1);
    expect(after?.updated_at.toISOString()).toBe(before?.updated_at.toISOString());
    expect(after?.last_event.id).toBe(before?.last_event.id);
  });

  it('a kept secondary locale that would equal the new primary one is a 400 naming it, and nothing changes', async () => {
    const id = nextId();
    const email = `${id}@example.com`;
    await postUser(api, token, { provider_email: email, external_provider_id: id, settings: { speech_locale: 'ENGLISH_US', secondary_speech_locale: 'FRENCH_FR' } });
    const res = await postUser(api, token, { provider_email: email, external_provider_id: id, settings: { speech_locale: 'FRENCH_FR' } });
    expect(res.status).toBe(400);
    expect(res.body.errors).toEqual([expect.objectContaining({ path: 'settings.secondary_speech_locale' })]);
    expect((await stored(id))?.version).toBe(1);
  });
});

describe('POST /users: conflicts', () => {
  it('same external_provider_id with another email → 409 email-mismatch, nothing changes', async () => {
    const id = nextId();
    await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id, settings: { speech_locale: 'ENGLISH_US' } });
    const res = await postUser(api, token, { provider_email: `other-${id}@example.com`, external_provider_id: id, settings: { speech_locale: 'FRENCH_FR' } });
    expect(res.status).toBe(409);
    expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(res.body.type).toMatch(/\/email-mismatch$/);
    expect(res.body).toMatchObject({ title: expect.any(String), status: 409, detail: expect.any(String) });
    const doc = await stored(id);
    expect(doc?.settings?.speech_locale).toBe('ENGLISH_US');
    expect(doc?.version).toBe(1);
  });

  it('new external_provider_id with an email another user has → 409 email-conflict, nothing created', async () => {
    const a = nextId();
    const b = nextId();
    await postUser(api, token, { provider_email: `${a}@example.com`, external_provider_id: a });
    const res = await postUser(api, token, { provider_email: `${a.toUpperCase()}@EXAMPLE.COM`, external_provider_id: b });
    expect(res.status).toBe(409);
    expect(res.body.type).toMatch(/\/email-conflict$/);
    expect(await stored(b)).toBeNull();
  });
});

describe('GET /users/{external_provider_id}', () => {
  it('returns the user with a sync array, and 404 for an unknown id', async () => {
    const id = `with/slash ${nextId()}`;
    await postUser(api, token, { provider_email: `${seq}-x@example.com`, external_provider_id: id, settings: { speech_locale: 'THAI_TH' } });
    const res = await getUser(api, token, id);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ external_provider_id: id, version: 1, settings: { speech_locale: 'THAI_TH' }, sync: [] });
    const missing = await getUser(api, token, 'nobody');
    expect(missing.status).toBe(404);
    expect(missing.headers.get('content-type')).toMatch(/^application\/problem\+json/);
  });
});

describe('POST /users and GET /users/{id}: external_provider_id is matched exactly (SPEC §1)', () => {
  it('ids differing only in case or by a leading space are different users; a case variant never created is 404', async () => {
    const tag = nextId();
    const id = `Abc-1-${tag}`;
    const first = await postUser(api, token, { provider_email: `first-${tag}@example.com`, external_provider_id: id });
    expect(first.status).toBe(201);

    // Another case: not this user (that would be 409 email-mismatch with this other email), a second one.
    const lower = await postUser(api, token, { provider_email: `second-${tag}@example.com`, external_provider_id: id.toLowerCase() });
    expect(lower.status, JSON.stringify(lower.body)).toBe(201);
    expect(lower.body.external_provider_id).toBe(id.toLowerCase());

    // A leading space is kept, not trimmed (only blank ids are refused): a third id, a third user.
    const spaced = await postUser(api, token, { provider_email: `third-${tag}@example.com`, external_provider_id: ` ${id}` });
    expect(spaced.status, JSON.stringify(spaced.body)).toBe(201);
    expect(spaced.body.external_provider_id).toBe(` ${id}`);
    expect(spaced.headers.get('location')).toBe(`${api.baseUrl}/users/${encodeURIComponent(` ${id}`)}`);
    // Sent with the first user's email it is not that user either: the email belongs to another id.
    const spacedFirstEmail = await postUser(api, token, { provider_email: `first-${tag}@example.com`, external_provider_id: `${id} ` });
    expect(spacedFirstEmail.status).toBe(409);
    expect(spacedFirstEmail.body.type).toMatch(/\/email-conflict$/);

    const docs = await api.models.ProviderUser.find({ organization_id: clinic.organization._id, provider_email: { $regex: tag } }).lean();
    expect(docs.map((d) => [d.external_provider_id, d.provider_email]).sort()).toEqual(
      [[id, `first-${tag}@example.com`], [id.toLowerCase(), `second-${tag}@example.com`], [` ${id}`, `third-${tag}@example.com`]].sort(),
    );

    // GET reads each id as sent, never another's.
    expect((await getUser(api, token, id)).body.provider_email).toBe(`first-${tag}@example.com`);
    expect((await getUser(api, token, id.toLowerCase())).body.provider_email).toBe(`second-${tag}@example.com`);
    expect((await getUser(api, token, ` ${id}`)).body.provider_email).toBe(`third-${tag}@example.com`);
    for (const never of [id.toUpperCase(), `${id} `, `ABC-1-${tag}`]) {
      const missing = await getUser(api, token, never);
      expect(missing.status, never).toBe(404);
      expect(missing.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    }
  });

  it('ids "." and ".." are refused 400 naming the field: as a URL path segment (even %2E) they resolve to another route, so no Location or GET could reach them', async () => {
    for (const id of ['.', '..']) {
      const res = await postUser(api, token, { provider_email: `dots-${seq++}@example.com`, external_provider_id: id });
      // Before: 201 with `Location: {base}/users/..`, what a client resolves to `{base}/`.
      expect(res.status, JSON.stringify(res.body)).toBe(400);
      expect(res.body.errors).toEqual([{ path: 'external_provider_id', message: 'must not be "." or "..": no URL path can carry it' }]);
      expect(new URL(`${api.baseUrl}/users/${id.replaceAll('.', '%2E')}`).pathname).not.toMatch(/\/users\/%2E/);
    }
    // Dots within an id are fine.
    expect((await postUser(api, token, { provider_email: `dots-${seq++}@example.com`, external_provider_id: `...${seq}` })).status).toBe(201);
  });
});
