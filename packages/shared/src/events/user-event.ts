import type { ProviderUserDoc } from '../models/models.ts';
import type { ProviderUserView } from '../provider-users/provider-user-schema.ts';
import { toProviderUserView } from '../provider-users/provider-user-view.ts';

export type UserEventType = 'user.created' | 'user.updated';

/** docs/contract.md, Events: an event; `id` stays the same on every retry and every re-publish. */
export interface UserEvent {
  id: string;
  type: UserEventType;
  occurred_at: string;
  organization_id: string;
  version: number;
  data: ProviderUserView;
}

/**
 * What the relay puts on the events queue, job id = `event.id`: the user's newest
 * event, plus its creation event. Events describe state, so the newest one alone
 * brings a target up to date, and updates never published are overtaken by it
 * (docs/contract.md allows coalescing). The creation event rides along so that a target
 * that never got it receives it first, whatever order jobs run in.
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
    data: doc.created_event.data,
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
          data: toProviderUserView(doc),
        };
  return { user_id: doc._id.toString(), event, created };
}
