import { describe, expect, it } from 'vitest';
import { ValidationError } from '../domain-errors.ts';
import { mergeSettings, sameSettings } from './merge-settings.ts';
import type { Settings } from './provider-user-schema.ts';

const current: Settings = {
  specialty: { kind: 'OTHER', other_specialty_name: 'Sleep' },
  speech_locale: 'ENGLISH_US',
  secondary_speech_locale: 'FRENCH_FR',
};

describe('mergeSettings (docs/contract.md: absent keeps, null clears)', () => {
  it('no settings sent keeps everything', () => {
    expect(mergeSettings(current, undefined)).toBe(current);
    expect(mergeSettings(null, undefined)).toBeNull();
  });
  it('absent specialty and secondary keep; speech_locale replaces', () => {
    expect(mergeSettings(current, { speech_locale: 'GERMAN_DE' })).toEqual({ ...current, speech_locale: 'GERMAN_DE' });
  });
  it('null clears', () => {
    expect(mergeSettings(current, { speech_locale: 'ENGLISH_US', specialty: null, secondary_speech_locale: null })).toEqual({
      specialty: null,
      speech_locale: 'ENGLISH_US',
      secondary_speech_locale: null,
    });
  });
  it('first settings of a user default the optional parts to null', () => {
    expect(mergeSettings(null, { speech_locale: 'THAI_TH', specialty: { kind: 'UROLOGY' } })).toEqual({
      specialty: { kind: 'UROLOGY', other_specialty_name: null },
      speech_locale: 'THAI_TH',
      secondary_speech_locale: null,
    });
  });
  it('a kept secondary equal to the new primary is refused', () => {
    expect(() => mergeSettings(current, { speech_locale: 'FRENCH_FR' })).toThrow(ValidationError);
  });
  it('sameSettings compares values, not identity', () => {
    expect(sameSettings(current, structuredClone(current))).toBe(true);
    expect(sameSettings(current, { ...current, secondary_speech_locale: null })).toBe(false);
    expect(sameSettings(null, null)).toBe(true);
    expect(sameSettings(null, current)).toBe(false);
  });
});
