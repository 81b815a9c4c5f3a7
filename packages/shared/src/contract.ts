/**
 * The wire contract without the server: zod schemas, enums and API versions only.
 * The SDKs (`@connect/client`, `@connect/receiver`) import `@connect/shared/contract`
 * so integrators' programs get the same types and validation as the server without
 * pulling mongoose, BullMQ or pino into their import graph. Only modules that import
 * nothing but zod belong here.
 */
import { z } from 'zod';
import { providerUserSchema, userStatusSchema } from './provider-users/provider-user-schema.ts';
import { USER_EVENT_TYPES, type UserEventType } from './events/user-event-type.ts';

export * from './enums.ts';
export * from './api-versions.ts';
export * from './provider-users/provider-user-schema.ts';
export * from './events/user-event-type.ts';
export * from './field-errors.ts';

/** Every event type a callback can carry. */
export const CALLBACK_EVENT_TYPES = USER_EVENT_TYPES;
export type CallbackEventType = UserEventType;

/**
 * The user inside a callback: the API's user plus `status` / `deactivated_at` (optional
 * here so callbacks from servers without the lifecycle still verify). Unknown members
 * are kept, not refused: a receiver must not start rejecting callbacks when a later
 * version adds a field.
 */
export const callbackUserSchema = providerUserSchema
  .extend({
    status: userStatusSchema.optional(),
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
