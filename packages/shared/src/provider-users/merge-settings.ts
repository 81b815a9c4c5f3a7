import { ValidationError } from '../domain-errors.ts';
import type { Settings, SettingsInput } from './provider-user-schema.ts';

/**
 * docs/contract.md merge rules: when `settings` is sent, `speech_locale` replaces the
 * current one; `specialty` and `secondary_speech_locale` keep their current value
 * when absent and are cleared by null. Returns the settings to store.
 */
export function mergeSettings(current: Settings | null, input: SettingsInput | undefined): Settings | null {
  if (input === undefined) return current;
  const specialty =
    input.specialty === undefined
      ? (current?.specialty ?? null)
      : input.specialty === null
        ? null
        : { kind: input.specialty.kind, other_specialty_name: input.specialty.other_specialty_name ?? null };
  const secondary =
    input.secondary_speech_locale === undefined ? (current?.secondary_speech_locale ?? null) : input.secondary_speech_locale;
  if (secondary !== null && secondary === input.speech_locale) {
    // Only reachable when the kept secondary locale equals the new primary one.
    throw new ValidationError([
      {
        path: 'settings.secondary_speech_locale',
        message: `the current secondary_speech_locale (${secondary}) would equal speech_locale; send another one or null`,
      },
    ]);
  }
  return { specialty, speech_locale: input.speech_locale, secondary_speech_locale: secondary };
}

export function sameSettings(a: Settings | null, b: Settings | null): boolean {
  if (a === null || b === null) return a === b;
  return (
    a.speech_locale === b.speech_locale &&
    a.secondary_speech_locale === b.secondary_speech_locale &&
    (a.specialty?.kind ?? null) === (b.specialty?.kind ?? null) &&
    (a.specialty?.other_specialty_name ?? null) === (b.specialty?.other_specialty_name ?? null)
  );
}
