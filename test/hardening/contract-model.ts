/**
 * docs/contract.md's rules for POST /users and docs/api-lifecycle.md's for DELETE, as an in-memory
 * model written independently of the implementation, with generators of what a client sends.
 * Shared by the sequential model-based test and the linearizability test.
 */
import fc from 'fast-check';
import { expect } from 'vitest';

export type Org = 'A' | 'B';
export const ORGS: Org[] = ['A', 'B'];
export interface Specialty {
  kind: string;
  other_specialty_name: string | null;
}
export interface Settings {
  specialty: Specialty | null;
  speech_locale: string;
  secondary_speech_locale: string | null;
}
export interface ModelUser {
  email: string; // as first stored (trimmed)
  settings: Settings | null;
  version: number;
  /** docs/api-lifecycle.md: DELETE deactivates (preview version), any POST reactivates. */
  status: 'active' | 'deactivated';
  deactivatedAt: string | null;
  createdAt: string;
  updatedAt: string;
}
export interface Model {
  users: Record<Org, Map<string, ModelUser>>;
}

/** Settings as sent: undefined members are left out of the JSON (absent keeps). */
export interface SettingsInput {
  specialty?: { kind: string; other_specialty_name?: string | null } | null;
  speech_locale: string;
  secondary_speech_locale?: string | null;
}

export type Expected =
  | { status: 201 | 200; user: ModelUser; changed: boolean }
  | { status: 400 | 409; problem: string; errorPath?: string };

/** docs/contract.md's decision table and merge rules, written independently of the implementation. */
export function decide(model: Model, org: Org, id: string, sentEmail: string, input: SettingsInput | undefined): Expected {
  if (input?.secondary_speech_locale != null && input.secondary_speech_locale === input.speech_locale) {
    return { status: 400, problem: 'validation', errorPath: 'settings.secondary_speech_locale' };
  }
  const email = sentEmail.trim();
  const users = model.users[org];
  const existing = users.get(id);
  if (existing) {
    if (existing.email.toLowerCase() !== email.toLowerCase()) return { status: 409, problem: 'email-mismatch' };
    // A POST on a deactivated user reactivates it: a change even when the settings stay the same.
    const reactivated = existing.status === 'deactivated';
    const next = (settings: Settings | null) => ({ ...existing, settings, version: existing.version + 1, status: 'active' as const, deactivatedAt: null });
    if (input === undefined) return reactivated ? { status: 200, user: next(existing.settings), changed: true } : { status: 200, user: existing, changed: false };
    const specialty =
      input.specialty === undefined
        ? (existing.settings?.specialty ?? null)
        : input.specialty === null
          ? null
          : { kind: input.specialty.kind, other_specialty_name: input.specialty.other_specialty_name?.trim() ?? null };
    const secondary = input.secondary_speech_locale === undefined ? (existing.settings?.secondary_speech_locale ?? null) : input.secondary_speech_locale;
    if (secondary !== null && secondary === input.speech_locale) {
      return { status: 400, problem: 'validation', errorPath: 'settings.secondary_speech_locale' };
    }
    const settings: Settings = { specialty, speech_locale: input.speech_locale, secondary_speech_locale: secondary };
    if (!reactivated && existing.settings !== null && JSON.stringify(settings) === JSON.stringify(existing.settings)) {
      return { status: 200, user: existing, changed: false };
    }
    return { status: 200, user: next(settings), changed: true };
  }
  for (const u of users.values()) if (u.email.toLowerCase() === email.toLowerCase()) return { status: 409, problem: 'email-conflict' };
  const settings: Settings | null =
    input === undefined
      ? null
      : {
          specialty: input.specialty ? { kind: input.specialty.kind, other_specialty_name: input.specialty.other_specialty_name?.trim() ?? null } : null,
          speech_locale: input.speech_locale,
          secondary_speech_locale: input.secondary_speech_locale ?? null,
        };
  return { status: 201, user: { email, settings, version: 1, status: 'active', deactivatedAt: null, createdAt: '', updatedAt: '' }, changed: true };
}

/** docs/api-lifecycle.md's DELETE under the preview version: 404 for no such user, the same user again when deactivated, else deactivated at version + 1. */
export function decideDeactivate(model: Model, org: Org, id: string): { status: 404 } | { status: 200; user: ModelUser; changed: boolean } {
  const existing = model.users[org].get(id);
  if (!existing) return { status: 404 };
  if (existing.status === 'deactivated') return { status: 200, user: existing, changed: false };
  return { status: 200, user: { ...existing, status: 'deactivated', deactivatedAt: null, version: existing.version + 1 }, changed: true };
}

export const LOCALES = ['ENGLISH_US', 'FRENCH_FR', 'SPANISH_ES', 'GERMAN_DE'];
export const localeArb = fc.constantFrom(...LOCALES);
export const specialtyArb = fc.oneof(
  fc.constant(undefined),
  fc.constant(null),
  fc.constantFrom('CARDIOLOGY', 'UROLOGY').map((kind) => ({ kind })),
  fc.constant({ kind: 'PEDIATRICS', other_specialty_name: null }),
  fc.constantFrom('Sleep', '  Sleep ', 'Pain').map((name) => ({ kind: 'OTHER', other_specialty_name: name })),
);
export const settingsArb: fc.Arbitrary<SettingsInput | undefined> = fc.oneof(
  { weight: 1, arbitrary: fc.constant(undefined) },
  {
    weight: 4,
    arbitrary: fc.record(
      { specialty: specialtyArb, speech_locale: localeArb, secondary_speech_locale: fc.oneof(fc.constant(undefined), fc.constant(null), localeArb) },
      { requiredKeys: ['speech_locale'] },
    ) as fc.Arbitrary<SettingsInput>,
  },
);
/** How the email is written this time: case and surrounding spaces vary, the address does not. */
export const emailFormArb = fc.record({ upper: fc.constantFrom('none', 'all', 'first'), pad: fc.boolean() });
export type EmailForm = { upper: string; pad: boolean };
export function writeEmail(email: string, form: EmailForm): string {
  const cased = form.upper === 'all' ? email.toUpperCase() : form.upper === 'first' ? email[0]!.toUpperCase() + email.slice(1) : email;
  return form.pad ? `  ${cased} ` : cased;
}
/** A user as answered: under the preview version with `status` and `deactivated_at`, under a dated one without (docs/api-lifecycle.md). */
export function expectView(body: any, id: string, u: ModelUser, next: boolean): void {
  expect(body).toMatchObject({ provider_email: u.email, external_provider_id: id, settings: u.settings, version: u.version });
  const dated = ['created_at', 'external_provider_id', 'provider_email', 'settings', 'updated_at', 'version'];
  expect(Object.keys(body).filter((k) => k !== 'sync').sort()).toEqual(next ? [...dated, 'deactivated_at', 'status'].sort() : dated);
  if (!next) return;
  expect(body.status).toBe(u.status);
  if (u.status === 'active') expect(body.deactivated_at).toBeNull();
  else if (u.deactivatedAt) expect(body.deactivated_at).toBe(u.deactivatedAt);
  else expect(Date.parse(body.deactivated_at)).not.toBeNaN();
}

/** The request headers of one API version: the preview's, or none (the organization's pinned dated version). */
export const versionHeaders = (next: boolean): Record<string, string> => (next ? { 'x-nabla-api-version': 'x-nabla-next' } : {});

