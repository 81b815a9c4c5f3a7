import { statusOf, type LastEvent, type ProviderUserDoc, type StatusEvent } from '../models/models.ts';
import type { ProviderUserNextView, ProviderUserView } from './provider-user-schema.ts';

type ViewFields = Pick<ProviderUserDoc, 'provider_email' | 'external_provider_id' | 'settings' | 'created_at' | 'updated_at' | 'version'>;

/** The user as dated API versions return it: no lifecycle fields, whatever the user's status. */
export function toProviderUserView(doc: ViewFields): ProviderUserView {
  return {
    provider_email: doc.provider_email,
    external_provider_id: doc.external_provider_id,
    settings: doc.settings,
    created_at: doc.created_at.toISOString(),
    updated_at: doc.updated_at.toISOString(),
    version: doc.version,
  };
}

/** The user as `x-nabla-next` returns it and as every event carries it: with `status` and `deactivated_at`. */
export function toProviderUserNextView(doc: ViewFields & Pick<ProviderUserDoc, 'status' | 'deactivated_at'>): ProviderUserNextView {
  return {
    ...toProviderUserView(doc),
    status: statusOf(doc),
    deactivated_at: doc.deactivated_at?.toISOString() ?? null,
  };
}

/**
 * The document's `status_event` for a status change just made: the event whole, its data the user
 * as the change leaves it (what the callback for it carries, as with the creation event).
 */
export function statusEventOf(event: LastEvent, after: ViewFields & Pick<ProviderUserDoc, 'status' | 'deactivated_at'>): StatusEvent {
  if (event.type !== 'user.deactivated' && event.type !== 'user.reactivated') throw new Error(`${event.type} is not a change of status`);
  return { id: event.id, type: event.type, occurred_at: event.occurred_at, version: event.version, data: toProviderUserNextView(after) };
}
