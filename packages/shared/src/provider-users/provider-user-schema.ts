import { z } from 'zod';
import { SPECIALTY_KINDS, SPEECH_LOCALES } from '../enums.ts';
import { emailAddressProblem } from '../email-address.ts';

/**
 * The request and response shapes of POST /users (the public Nabla Connect API's,
 * with docs/contract.md's decisions where it is silent). Types, validation and the OpenAPI document
 * all come from these schemas.
 */

/**
 * Characters that show nothing on their own: white space, format characters (zero-width space,
 * bidi controls, BOM), control characters, combining marks with nothing to combine with, and the
 * fillers and blanks that render empty (Hangul fillers, the braille blank).
 */
const INVISIBLE = /[\s\p{Cf}\p{Cc}\p{M}\u115F\u1160\u3164\uFFA0\u2800]/gu;

/** Invisible characters at either end of a text: white space, and what Unicode says to show as nothing (zero-width spaces, BOM, bidi controls, variation selectors). */
const INVISIBLE_EDGES = /^[\s\p{Default_Ignorable_Code_Point}]+|[\s\p{Default_Ignorable_Code_Point}]+$/gu;

/** A name as shown to people, trimmed of what shows nothing at its ends (String.trim stops at a zero-width space, leaving a BOM after it). */
export function trimInvisible(text: string): string {
  return text.replace(INVISIBLE_EDGES, '');
}

/** A text made of invisible characters only (or of nothing) is blank: no person could read or type it back. */
export function isBlank(text: string): boolean {
  return text.replace(INVISIBLE, '').length === 0;
}

export const specialtyKindSchema = z.enum(SPECIALTY_KINDS).meta({ id: 'SpecialtyKind' });
export const speechLocaleSchema = z.enum(SPEECH_LOCALES).meta({ id: 'SpeechLocale' });

export const specialtyInputSchema = z
  .strictObject({
    kind: specialtyKindSchema,
    other_specialty_name: z
      .string()
      .overwrite(trimInvisible)
      .min(1, { message: 'must not be blank', abort: true })
      .max(256, 'at most 256 characters')
      .refine((s) => !isBlank(s), 'must not be blank')
      .nullish(),
  })
  .superRefine((s, ctx) => {
    if (s.kind === 'OTHER' && (s.other_specialty_name === undefined || s.other_specialty_name === null)) {
      ctx.addIssue({ code: 'custom', path: ['other_specialty_name'], message: 'is required when kind is OTHER' });
    }
    if (s.kind !== 'OTHER' && s.other_specialty_name !== undefined && s.other_specialty_name !== null) {
      ctx.addIssue({ code: 'custom', path: ['other_specialty_name'], message: 'must be null or absent unless kind is OTHER' });
    }
  });

export const settingsInputSchema = z
  .strictObject({
    /** Absent keeps the current specialty, null clears it. */
    specialty: specialtyInputSchema.nullish(),
    speech_locale: speechLocaleSchema,
    /** Absent keeps the current secondary locale, null clears it. */
    secondary_speech_locale: speechLocaleSchema.nullish(),
  })
  .superRefine((s, ctx) => {
    if (s.secondary_speech_locale && s.secondary_speech_locale === s.speech_locale) {
      ctx.addIssue({ code: 'custom', path: ['secondary_speech_locale'], message: 'must differ from speech_locale' });
    }
  });

export const upsertProviderUserBodySchema = z
  .strictObject({
    provider_email: z
      .string()
      .trim()
      .max(320, { message: 'at most 320 characters', abort: true })
      // Every address a mail server takes, internationalized ones included (docs/contract.md, "Email addresses").
      .superRefine((address, ctx) => {
        const problem = emailAddressProblem(address);
        if (problem) ctx.addIssue({ code: 'custom', message: problem });
      })
      .meta({ format: 'idn-email', description: 'An email address, internationalized or not (spaces around it are trimmed).' }),
    external_provider_id: z
      .string()
      // An empty id is not also "blank": one message per field.
      .min(1, { message: 'must not be empty', abort: true })
      .max(256, 'at most 256 characters')
      .refine((s) => !isBlank(s), 'must not be blank')
      // URL parsers drop the path segments "." and "..", encoded as %2E or not: no Location or GET could reach such a user.
      .refine((s) => s !== '.' && s !== '..', 'must not be "." or "..": no URL path can carry it'),
    settings: settingsInputSchema.optional(),
  })
  .meta({ id: 'UpsertProviderUserRequest' });
export type UpsertProviderUserBody = z.infer<typeof upsertProviderUserBodySchema>;
export type SettingsInput = z.infer<typeof settingsInputSchema>;

export const specialtySchema = z.object({
  kind: specialtyKindSchema,
  other_specialty_name: z.string().nullable(),
});
export const settingsSchema = z
  .object({
    specialty: specialtySchema.nullable(),
    speech_locale: speechLocaleSchema,
    secondary_speech_locale: speechLocaleSchema.nullable(),
  })
  .meta({ id: 'ProviderUserSettings' });
export type Settings = z.infer<typeof settingsSchema>;

export const providerUserSchema = z
  .object({
    provider_email: z.string(),
    external_provider_id: z.string(),
    settings: settingsSchema.nullable(),
    created_at: z.string().meta({ format: 'date-time' }),
    updated_at: z.string().meta({ format: 'date-time' }),
    version: z.number().int().min(1),
  })
  .meta({ id: 'ProviderUser' });
export type ProviderUserView = z.infer<typeof providerUserSchema>;

/** A user's place in the lifecycle (preview `x-nabla-next`; see docs/api-lifecycle.md). */
export const USER_STATUSES = ['active', 'deactivated'] as const;
export const userStatusSchema = z.enum(USER_STATUSES).meta({ id: 'UserStatus' });
export type UserStatus = z.infer<typeof userStatusSchema>;

/**
 * The user as `x-nabla-next` answers it, and as every event carries it: the dated
 * shape plus where the user stands. Dated versions never show these two fields.
 */
export const providerUserNextSchema = providerUserSchema
  .extend({
    status: userStatusSchema,
    deactivated_at: z.string().meta({ format: 'date-time' }).nullable(),
  })
  .meta({ id: 'ProviderUserNext' });
export type ProviderUserNextView = z.infer<typeof providerUserNextSchema>;

export const syncStateSchema = z.object({
  target: z.string(),
  status: z.enum(['pending', 'delivered', 'failed']),
  version: z.number().int().min(1).nullable().meta({ description: 'The version the target is being brought to (the user\'s newest when the last attempt ran); once delivered, the version it has.' }),
  attempts: z.number().int().min(0).meta({ description: 'Attempts at bringing the target to `version`, a `user.created` sent first included.' }),
  last_attempt_at: z.string().meta({ format: 'date-time' }).nullable(),
  last_error: z.string().nullable().meta({ description: 'The last attempt\'s error; when it was on an event sent before the newest, it says so: `HTTP 500 (on user.created, sent first)`.' }),
});
export const providerUserWithSyncSchema = providerUserSchema
  .extend({ sync: z.array(syncStateSchema) })
  .meta({ id: 'ProviderUserWithSync' });

export const providerUserWithSyncNextSchema = providerUserNextSchema
  .extend({ sync: z.array(syncStateSchema) })
  .meta({ id: 'ProviderUserWithSyncNext' });

/**
 * The longest cursor the list issues, with room to spare: base64url of its JSON state, whose `after`
 * is an external_provider_id of up to 256 characters of up to 4 bytes each (about 1,500 characters
 * in all); 1,024 was less, and a page ending on such an id gave a cursor the list refused.
 */
export const MAX_CURSOR_LENGTH = 2048;

/** GET {base}/users (preview): one page of the organization's users. */
export const listUsersQuerySchema = z.object({
  limit: z.coerce.number().int('must be an integer').min(1, 'must be at least 1').max(200, 'must be at most 200').default(50),
  cursor: z.string().min(1, 'must not be empty').max(MAX_CURSOR_LENGTH, `at most ${MAX_CURSOR_LENGTH} characters`).optional(),
  status: userStatusSchema.optional(),
});
export type ListUsersQuery = z.infer<typeof listUsersQuerySchema>;

export const listUsersResponseSchema = z
  .object({
    data: z.array(providerUserNextSchema),
    /** Opaque: pass it back as `cursor` for the next page; null on the last page. */
    next_cursor: z.string().min(1).max(MAX_CURSOR_LENGTH).nullable(),
  })
  .meta({ id: 'ProviderUserList' });
export type ListUsersResponse = z.infer<typeof listUsersResponseSchema>;
