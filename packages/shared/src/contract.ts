/**
 * The wire contract without the server: zod schemas, enums and API versions only.
 * The SDKs (`@connect/client`, `@connect/receiver`) import `@connect/shared/contract`
 * so integrators' programs get the same types and validation as the server without
 * pulling mongoose, BullMQ or pino into their import graph. Only modules that import
 * nothing but zod belong here.
 */
import { z } from 'zod';
import { SPECIALTY_KINDS, SPEECH_LOCALES } from './enums.ts';
import { providerUserSchema, USER_STATUSES } from './provider-users/provider-user-schema.ts';
import { USER_EVENT_TYPES, type UserEventType } from './events/user-event-type.ts';

export * from './enums.ts';
export * from './api-versions.ts';
export * from './provider-users/provider-user-schema.ts';
export * from './events/user-event-type.ts';
export * from './field-errors.ts';
export * from './json-members.ts';

/** Every event type a callback can carry. */
export const CALLBACK_EVENT_TYPES = USER_EVENT_TYPES;
export type CallbackEventType = UserEventType;

/**
 * A value of one of our enums as a callback carries it: any string is taken, typed as the
 * values known today. A server that adds a locale, a specialty or a status must not make
 * receivers built before it refuse the callback (a 4xx dead-letters it, and the receiver is
 * left holding stale settings); a receiver handles a value it does not know as it sees fit.
 */
function openEnum<const V extends readonly string[]>(values: V) {
  return z.custom<V[number] | (string & {})>((v) => typeof v === 'string', { message: `must be a string (known values: ${values.join(', ')})` });
}

/** Settings as a callback carries them: the API's shape with open enums, unknown members kept. */
export const callbackSettingsSchema = z
  .object({
    specialty: z.object({ kind: openEnum(SPECIALTY_KINDS), other_specialty_name: z.string().nullable().optional() }).loose().nullable(),
    speech_locale: openEnum(SPEECH_LOCALES),
    secondary_speech_locale: openEnum(SPEECH_LOCALES).nullable(),
  })
  .loose();

/**
 * The user inside a callback: the API's user plus `status` / `deactivated_at` (optional
 * here so callbacks from servers without the lifecycle still verify). Unknown members
 * are kept, not refused, and enum values are open (openEnum): a receiver must not start
 * rejecting callbacks when a later version adds a field or a value.
 */
export const callbackUserSchema = providerUserSchema
  .extend({
    settings: callbackSettingsSchema.nullable(),
    status: openEnum(USER_STATUSES).optional(),
    deactivated_at: z.string().nullable().optional(),
  })
  .loose();

/** The body of every callback: `{request_uuid, type, occurred_at, data: {organization_id, version, user}}`. */
export const callbackEventSchema = z
  .object({
    // The event id (a UUID today); only non-empty is required, it is the dedupe key.
    request_uuid: z.string().min(1),
    type: z.enum(USER_EVENT_TYPES),
    occurred_at: z.string(),
    data: z
      .object({
        organization_id: z.string(),
        version: z.number().int().min(1),
        user: callbackUserSchema,
      })
      .loose(),
  })
  .loose()
  .meta({ id: 'CallbackEvent' });
export type CallbackEvent = z.infer<typeof callbackEventSchema>;
