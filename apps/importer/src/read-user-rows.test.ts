import { describe, expect, it } from 'vitest';
import { bodyOfFlatRow, validateRow } from './read-user-rows.ts';

describe('a flat CSV row as a POST /users body', () => {
  it('empty cells are absent (keep current), settings only when a settings cell has a value', () => {
    expect(bodyOfFlatRow({ provider_email: ' a@b.org ', external_provider_id: 'x', specialty: '', other_specialty_name: '', speech_locale: '', secondary_speech_locale: '' })).toEqual({ provider_email: 'a@b.org', external_provider_id: 'x' });
    expect(bodyOfFlatRow({ provider_email: 'a@b.org', external_provider_id: 'x', specialty: 'OTHER', other_specialty_name: 'Sports', speech_locale: 'ENGLISH_US', secondary_speech_locale: '' })).toEqual({
      provider_email: 'a@b.org',
      external_provider_id: 'x',
      settings: { speech_locale: 'ENGLISH_US', specialty: { kind: 'OTHER', other_specialty_name: 'Sports' } },
    });
  });

  it('is checked with the API schema: a specialty without speech_locale is refused naming the field', () => {
    const row = validateRow(7, { provider_email: 'a@b.org', external_provider_id: 'x', specialty: 'CARDIOLOGY', speech_locale: '' });
    expect(row).toMatchObject({ line: 7, ok: false, error: { kind: 'validation' } });
    expect(!row.ok && row.error.errors?.map((e) => e.path)).toEqual(['settings.speech_locale']);
  });

  it('an NDJSON line in the API shape is taken as is', () => {
    expect(validateRow(1, { provider_email: 'a@b.org', external_provider_id: 'x', settings: { speech_locale: 'FRENCH_FR' } })).toMatchObject({ ok: true, body: { settings: { speech_locale: 'FRENCH_FR' } } });
  });
});
