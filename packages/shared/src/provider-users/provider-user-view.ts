import type { ProviderUserDoc } from '../models/models.ts';
import type { ProviderUserView } from './provider-user-schema.ts';

/** The user as the API returns it and as events carry it. */
export function toProviderUserView(doc: Pick<ProviderUserDoc, 'provider_email' | 'external_provider_id' | 'settings' | 'created_at' | 'updated_at' | 'version'>): ProviderUserView {
  return {
    provider_email: doc.provider_email,
    external_provider_id: doc.external_provider_id,
    settings: doc.settings,
    created_at: doc.created_at.toISOString(),
    updated_at: doc.updated_at.toISOString(),
    version: doc.version,
  };
}
