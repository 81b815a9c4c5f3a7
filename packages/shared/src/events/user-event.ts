import { z } from 'zod';
import type { ProviderUserDoc } from '../models/models.ts';
import { providerUserNextSchema } from '../provider-users/provider-user-schema.ts';
import { toProviderUserNextView } from '../provider-users/provider-user-view.ts';
import { userEventTypeSchema } from './user-event-type.ts';

export * from './user-event-type.ts';

/**
 * An event; `id` stays the same on every retry and every re-publish. `data` is
 * the user with `status` and `deactivated_at` whatever API version the
 * organization uses: events are not served under a request's version, and a
 * receiver must be able to tell a leaver from an active user (receivers ignore
 * members they do not know, so the dated shape plus two members is safe).
 */
export const userEventSchema = z
  .object({
    id: z.string(),
    type: userEventTypeSchema,
    occurred_at: z.string().meta({ format: 'date-time' }),
    organization_id: z.string(),
    version: z.number().int().min(1),
    data: providerUserNextSchema,
  })
  .meta({ id: 'UserEvent' });
export type UserEvent = z.infer<typeof userEventSchema>;

/** The body of a callback as a downstream target receives it, signed as sent. */
export const callbackBodySchema = z
  .object({
    request_uuid: z.string(),
    type: userEventTypeSchema,
    occurred_at: z.string().meta({ format: 'date-time' }),
    data: z.object({ organization_id: z.string(), version: z.number().int().min(1), user: providerUserNextSchema }),
  })
  .meta({ id: 'CallbackBody' });
export type CallbackBodyOfSchema = z.infer<typeof callbackBodySchema>;

/**
 * What the relay puts on the events queue, job id = `event.id`: the user's newest
 * event, plus its creation event. Events describe state, so the newest one alone
 * brings a target up to date, and updates never published are overtaken by it
 * (coalescing is allowed; see docs/delivery.md). The creation event rides along so
 * that a target that never got it receives it first, whatever order jobs run in.
 */
export interface UserEventJob {
  /** The user document's id: the key for per-user ordering downstream. */
  user_id: string;
  event: UserEvent;
  created: UserEvent;
}

export function eventJobOf(doc: ProviderUserDoc): UserEventJob {
  const created: UserEvent = {
    id: doc.created_event.id,
    type: 'user.created',
    occurred_at: doc.created_event.occurred_at.toISOString(),
    organization_id: doc.organization_id,
    version: 1,
    // Creation events stored before the lifecycle existed have no status: a new user is active.
    data: { status: 'active', deactivated_at: null, ...doc.created_event.data },
  };
  const event: UserEvent =
    doc.last_event.id === doc.created_event.id
      ? created
      : {
          id: doc.last_event.id,
          type: doc.last_event.type,
          occurred_at: doc.last_event.occurred_at.toISOString(),
          organization_id: doc.organization_id,
          version: doc.last_event.version,
          data: toProviderUserNextView(doc),
        };
  return { user_id: doc._id.toString(), event, created };
}

/**
 * The user's latest change of status as an event (from `status_event`), or undefined when its
 * status never changed. The delivery processor sends it before a newer event to a target that
 * does not have it yet (docs/delivery.md, "Status changes").
 */
export function statusChangeOf(doc: ProviderUserDoc): UserEvent | undefined {
  const e = doc.status_event;
  if (!e) return undefined;
  return { id: e.id, type: e.type, occurred_at: e.occurred_at.toISOString(), organization_id: doc.organization_id, version: e.version, data: { status: 'active', deactivated_at: null, ...e.data } };
}
