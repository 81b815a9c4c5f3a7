import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SPECIALTY_KINDS, SPEECH_LOCALES } from '@connect/shared';
import { getToken, http, postUser, registerTestClient, startTestApi, type TestApi, type TestClient } from '../support/harness.ts';

let api: TestApi;
let clinic: TestClient;
let token: string;

beforeAll(async () => {
  api = await startTestApi({ label: 'validation' });
  clinic = await registerTestClient(api.models);
  token = await getToken(api, clinic);
});
afterAll(async () => api?.close());

const valid = () => ({ provider_email: `${randomUUID()}@example.com`, external_provider_id: randomUUID(), settings: { speech_locale: 'ENGLISH_US' } });

async function expectRejected(body: unknown, path: string, init: { headers?: Record<string, string> } = {}) {
  const before = await api.models.ProviderUser.countDocuments({});
  const res = await postUser(api, token, body, init.headers);
  expect(res.status, JSON.stringify(res.body)).toBe(400);
  expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
  expect(res.body).toMatchObject({ type: expect.stringMatching(/\/validation$/), title: expect.any(String), status: 400, detail: expect.any(String) });
  expect(res.body.errors.map((e: { path: string }) => e.path)).toContain(path);
  expect(res.text).not.toMatch(/\bat .*\.(ts|js):\d+/); // no stack trace
  expect(await api.models.ProviderUser.countDocuments({})).toBe(before);
  return res;
}

describe('POST /users validation: 400 problem naming the field, nothing stored', () => {
  it('bad email', async () => {
    await expectRejected({ ...valid(), provider_email: 'not-an-email' }, 'provider_email');
    await expectRejected({ ...valid(), provider_email: `${'a'.repeat(310)}@example.com` }, 'provider_email');
  });

  it('an address no mail server takes is refused saying what is wrong with it: a domain label ending in "-", no dot, an IP, a quoted local part, two dots in a row', async () => {
    const refused: [string, RegExp][] = [
      ['a@example-.com', /hyphens inside/],
      ['a@example', /needs a dot/],
      ['a@10.0.0.1', /not an IP address/],
      ['"a b"@example.com', /space/],
      ['"ab"@example.com', /holds a character addresses may not/],
      ['a..b@example.com', /two dots in a row/],
    ];
    for (const [provider_email, reason] of refused) {
      const res = await expectRejected({ ...valid(), provider_email }, 'provider_email');
      expect(res.body.errors.find((e: { path: string }) => e.path === 'provider_email').message, provider_email).toMatch(reason);
    }
  });

  it('missing members', async () => {
    const { provider_email, settings } = valid();
    await expectRejected({ provider_email, settings }, 'external_provider_id');
    await expectRejected({ external_provider_id: 'x', settings }, 'provider_email');
  });

  it('external_provider_id of 257 characters, empty, or blank', async () => {
    await expectRejected({ ...valid(), external_provider_id: 'x'.repeat(257) }, 'external_provider_id');
    await expectRejected({ ...valid(), external_provider_id: '' }, 'external_provider_id');
    await expectRejected({ ...valid(), external_provider_id: '   ' }, 'external_provider_id');
    // Invisible all the same: zero-width spaces, a byte order mark, bidi controls.
    await expectRejected({ ...valid(), external_provider_id: '\u200B\u200B' }, 'external_provider_id');
    await expectRejected({ ...valid(), external_provider_id: ' \uFEFF\u202E\u2060 ' }, 'external_provider_id');
    // And characters that show nothing either: controls, lone combining marks, fillers, the braille blank.
    for (const id of ['\u0001\u0002', '\u0301\u0301', '\u3164', '\u2800', '\u115F\u1160\uFFA0']) {
      await expectRejected({ ...valid(), external_provider_id: id }, 'external_provider_id');
    }
    // Letters carrying marks are not blank.
    expect((await postUser(api, token, { ...valid(), external_provider_id: `e\u0301-${randomUUID()}` })).status).toBe(201);
    // 256 is allowed.
    const ok = await postUser(api, token, { ...valid(), external_provider_id: 'y'.repeat(256) });
    expect(ok.status).toBe(201);
  });

  it('unknown members, at the top and inside settings', async () => {
    await expectRejected({ ...valid(), nickname: 'Doc' }, 'nickname');
    await expectRejected({ ...valid(), settings: { speech_locale: 'ENGLISH_US', theme: 'dark' } }, 'settings.theme');
    await expectRejected({ ...valid(), settings: { speech_locale: 'ENGLISH_US', specialty: { kind: 'UROLOGY', level: 3 } } }, 'settings.specialty.level');
  });

  it('settings without speech_locale', async () => {
    await expectRejected({ ...valid(), settings: { specialty: { kind: 'UROLOGY' } } }, 'settings.speech_locale');
  });

  it('OTHER without a name, and a name without OTHER', async () => {
    await expectRejected({ ...valid(), settings: { speech_locale: 'ENGLISH_US', specialty: { kind: 'OTHER' } } }, 'settings.specialty.other_specialty_name');
    await expectRejected({ ...valid(), settings: { speech_locale: 'ENGLISH_US', specialty: { kind: 'OTHER', other_specialty_name: ' ' } } }, 'settings.specialty.other_specialty_name');
    // Blank as ids are: a zero-width space alone was taken while "   " was refused.
    const blankName = await expectRejected({ ...valid(), settings: { speech_locale: 'ENGLISH_US', specialty: { kind: 'OTHER', other_specialty_name: '\u200b' } } }, 'settings.specialty.other_specialty_name');
    expect(blankName.body.errors).toEqual([{ path: 'settings.specialty.other_specialty_name', message: 'must not be blank' }]);
    await expectRejected({ ...valid(), settings: { speech_locale: 'ENGLISH_US', specialty: { kind: 'OTHER', other_specialty_name: 'x'.repeat(257) } } }, 'settings.specialty.other_specialty_name');
    await expectRejected({ ...valid(), settings: { speech_locale: 'ENGLISH_US', specialty: { kind: 'CARDIOLOGY', other_specialty_name: 'Heart' } } }, 'settings.specialty.other_specialty_name');
  });

  it('unknown enum values', async () => {
    await expectRejected({ ...valid(), settings: { speech_locale: 'KLINGON' } }, 'settings.speech_locale');
    await expectRejected({ ...valid(), settings: { speech_locale: 'ENGLISH_US', secondary_speech_locale: 'english_uk' } }, 'settings.secondary_speech_locale');
    await expectRejected({ ...valid(), settings: { speech_locale: 'ENGLISH_US', specialty: { kind: 'WIZARDRY' } } }, 'settings.specialty.kind');
  });

  it('secondary equal to primary', async () => {
    await expectRejected({ ...valid(), settings: { speech_locale: 'ENGLISH_US', secondary_speech_locale: 'ENGLISH_US' } }, 'settings.secondary_speech_locale');
  });

  it('wrong types', async () => {
    await expectRejected({ ...valid(), provider_email: 42 }, 'provider_email');
    await expectRejected({ ...valid(), settings: 'ENGLISH_US' }, 'settings');
    await expectRejected({ ...valid(), settings: null }, 'settings');
  });
});

describe('POST /users: bodies that are not a JSON object', () => {
  it('non-JSON body → 400 problem, nothing stored', async () => {
    const before = await api.models.ProviderUser.countDocuments({});
    for (const raw of ['{"provider_email":', 'null', '[]', '"text"', '']) {
      const res = await postUser(api, token, raw);
      expect(res.status, raw).toBe(400);
      expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    }
    expect(await api.models.ProviderUser.countDocuments({})).toBe(before);
  });

  it('a member given twice (JSON.parse would keep the last: another user than a reader of the first sees) → 400 naming it, nothing stored', async () => {
    const id = randomUUID();
    const res = await expectRejected(`{"provider_email":"${id}@example.com","external_provider_id":"${id}-a","external_provider_id":"${id}-b"}`, 'external_provider_id');
    expect(res.body.detail).toBe('external_provider_id is given more than once.');
    // Inside settings too, however the second is spelled.
    await expectRejected(`{"provider_email":"${id}@example.com","external_provider_id":"${id}","settings":{"speech_locale":"ENGLISH_US","speech_\\u006cocale":"FRENCH_FR"}}`, 'settings.speech_locale');
  });

  it('prototype-poisoning keys are refused', async () => {
    const res = await postUser(api, token, `{"provider_email":"a@example.com","external_provider_id":"p","__proto__":{"admin":true}}`);
    expect(res.status).toBe(400);
  });

  it('wrong content type → 415 problem (form bodies are for the token endpoint only)', async () => {
    for (const [type, payload] of [
      ['text/plain', JSON.stringify(valid())],
      ['application/x-www-form-urlencoded', new URLSearchParams({ provider_email: 'a@example.com', external_provider_id: 'form' }).toString()],
    ] as const) {
      const res = await http(`${api.baseUrl}/users`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': type }, body: payload });
      expect(res.status, type).toBe(415);
      expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    }
    expect(await api.models.ProviderUser.countDocuments({ external_provider_id: 'form' })).toBe(0);
  });

  it('bytes that are not UTF-8 → 400, nothing stored (two such ids were one user); another charset → 415; UTF-8 with charset=utf-8 or a BOM is read, two BOMs are not JSON', async () => {
    const send = (type: string, body: Buffer) => http(`${api.baseUrl}/users`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': type }, body: new Uint8Array(body) });
    const latin1 = (byte: number, tag: string) =>
      Buffer.concat([Buffer.from(`{"provider_email":"${tag}@example.com","external_provider_id":"jos`), Buffer.from([byte]), Buffer.from(`-${tag}"}`)]);
    const tag = randomUUID().slice(0, 8);
    for (const byte of [0xe9, 0xf1, 0xff]) {
      const res = await send('application/json', latin1(byte, `${tag}-${byte}`));
      expect(res.status, JSON.stringify(res.body)).toBe(400);
      expect(res.body).toMatchObject({ type: expect.stringMatching(/\/malformed-body$/), detail: 'The body is not valid UTF-8; JSON is sent as UTF-8.' });
    }
    const declared = await send('application/json; charset=iso-8859-1', latin1(0xe9, `${tag}-declared`));
    expect(declared.status).toBe(415);
    expect(declared.body.detail).toBe('The body is declared as iso-8859-1; send JSON as UTF-8 (charset=utf-8 or none).');
    const emptyCharset = await send('application/json; charset=', latin1(0xe9, `${tag}-empty-charset`));
    expect(emptyCharset.status).toBe(415);
    expect(emptyCharset.body.detail).toBe('The Content-Type has an empty charset; send JSON as UTF-8 (charset=utf-8 or none).');
    expect(await api.models.ProviderUser.countDocuments({ provider_email: { $regex: tag } })).toBe(0);

    const ok = valid();
    const utf8 = Buffer.from(JSON.stringify({ ...ok, external_provider_id: `josé-${tag}` }));
    expect((await send('application/json; charset="UTF-8"', utf8)).status).toBe(201);
    const bom = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(JSON.stringify(valid()))]);
    expect((await send('application/json', bom)).status).toBe(201);
    // One BOM is a marker; a second is a character before the JSON, which JSON does not allow.
    const twoBoms = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf, 0xef, 0xbb, 0xbf]), Buffer.from(JSON.stringify({ ...valid(), external_provider_id: `two-boms-${tag}` }))]);
    const refused = await send('application/json', twoBoms);
    expect(refused.status).toBe(400);
    expect(refused.body).toMatchObject({ type: expect.stringMatching(/\/malformed-body$/), detail: 'The body is not valid JSON.' });
    expect(await api.models.ProviderUser.countDocuments({ external_provider_id: `two-boms-${tag}` })).toBe(0);
    expect((await api.models.ProviderUser.findOne({ external_provider_id: `josé-${tag}` }).lean())?.provider_email).toBe(ok.provider_email);
  });

  it('a body over the limit → 413 problem', async () => {
    const res = await postUser(api, token, { ...valid(), padding: 'x'.repeat(70 * 1024) });
    expect(res.status).toBe(413);
    expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
  });

  it('unknown routes → 404 problem', async () => {
    const res = await http(`${api.baseUrl}/encounters`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(404);
    expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
  });
});

/**
 * The enums as the contract writes them, not as the implementation exports them: SPEC.md §1's
 * specialty kinds (ours: the public docs do not list theirs) and the speech locales of the public
 * Nabla API (spec/reference-facts.md). A value renamed, dropped or added in enums.ts fails here.
 */
const SPEC_SPECIALTY_KINDS = [
  'ALLERGY_AND_IMMUNOLOGY', 'ANESTHESIOLOGY', 'CARDIOLOGY', 'DERMATOLOGY', 'EMERGENCY_MEDICINE', 'ENDOCRINOLOGY', 'FAMILY_MEDICINE',
  'GASTROENTEROLOGY', 'GENERAL_MEDICINE', 'GENERAL_SURGERY', 'GERIATRICS', 'HEMATOLOGY_ONCOLOGY',
  'INFECTIOUS_DISEASE', 'INTERNAL_MEDICINE', 'NEPHROLOGY', 'NEUROLOGY', 'OBSTETRICS_AND_GYNECOLOGY',
  'OPHTHALMOLOGY', 'ORTHOPEDICS', 'OTOLARYNGOLOGY', 'PEDIATRICS', 'PHYSICAL_MEDICINE_AND_REHABILITATION',
  'PSYCHIATRY', 'PULMONOLOGY', 'RADIOLOGY', 'RHEUMATOLOGY', 'UROLOGY', 'OTHER',
];
const REFERENCE_SPEECH_LOCALES = [
  'ENGLISH_US', 'ENGLISH_UK', 'SPANISH_ES', 'SPANISH_MX', 'FRENCH_FR', 'ARABIC_EG', 'ARABIC_LB', 'ARABIC_MA',
  'ARABIC_SA', 'ARMENIAN_AM', 'BENGALI_IN', 'CANTONESE_CN', 'CROATIAN_HR', 'FILIPINO_PH', 'GERMAN_DE', 'GREEK_GR',
  'GUJARATI_IN', 'HEBREW_IL', 'HINDI_IN', 'ITALIAN_IT', 'JAPANESE_JP', 'KHMER_KH', 'KOREAN_KR', 'MANDARIN_CN',
  'PERSIAN_IR', 'POLISH_PL', 'PORTUGUESE_PT', 'PUNJABI_IN', 'RUSSIAN_RU', 'SERBIAN_RS', 'TAMIL_IN', 'TELUGU_IN',
  'THAI_TH', 'URDU_IN', 'VIETNAMESE_VN',
];

describe('the enums are the contract\'s lists, written out here', () => {
  it('the exported constants hold exactly SPEC §1\'s 28 specialty kinds and reference-facts\' 35 speech locales', () => {
    expect(SPEC_SPECIALTY_KINDS).toHaveLength(28);
    expect(REFERENCE_SPEECH_LOCALES).toHaveLength(35);
    expect([...SPECIALTY_KINDS].sort()).toEqual([...SPEC_SPECIALTY_KINDS].sort());
    expect([...SPEECH_LOCALES].sort()).toEqual([...REFERENCE_SPEECH_LOCALES].sort());
  });

  it('POST /users accepts every specialty kind and answers it back; a near-miss is a 400 naming settings.specialty.kind', async () => {
    for (const kind of SPEC_SPECIALTY_KINDS) {
      const specialty = kind === 'OTHER' ? { kind, other_specialty_name: 'Sleep medicine' } : { kind };
      const res = await postUser(api, token, { ...valid(), settings: { speech_locale: 'ENGLISH_US', specialty } });
      expect(res.status, `${kind}: ${JSON.stringify(res.body)}`).toBe(201);
      expect(res.body.settings.specialty.kind).toBe(kind);
    }
    for (const nearMiss of ['cardiology', 'CARDIOLOGIE', 'ALLERGY_IMMUNOLOGY', 'OB_GYN', 'OTHER ']) {
      await expectRejected({ ...valid(), settings: { speech_locale: 'ENGLISH_US', specialty: { kind: nearMiss } } }, 'settings.specialty.kind');
    }
  });

  it('POST /users accepts every speech locale, as speech_locale and as secondary_speech_locale; a near-miss is a 400 naming the field', async () => {
    for (const [i, locale] of REFERENCE_SPEECH_LOCALES.entries()) {
      // The secondary locale is the next one in the list, so each value is sent in both places.
      const secondary = REFERENCE_SPEECH_LOCALES[(i + 1) % REFERENCE_SPEECH_LOCALES.length]!;
      const res = await postUser(api, token, { ...valid(), settings: { speech_locale: locale, secondary_speech_locale: secondary } });
      expect(res.status, `${locale}: ${JSON.stringify(res.body)}`).toBe(201);
      expect(res.body.settings).toMatchObject({ speech_locale: locale, secondary_speech_locale: secondary });
    }
    for (const nearMiss of ['english_us', 'ENGLISH_USA', 'ENGLISH-US', 'FRENCH_CA', 'ENGLISH_GB']) {
      await expectRejected({ ...valid(), settings: { speech_locale: nearMiss } }, 'settings.speech_locale');
      await expectRejected({ ...valid(), settings: { speech_locale: 'ENGLISH_US', secondary_speech_locale: nearMiss } }, 'settings.secondary_speech_locale');
    }
  });
});
