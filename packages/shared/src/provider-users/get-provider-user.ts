import { NotFoundError } from '../domain-errors.ts';
import { collectionsOf, type Models } from '../models/models.ts';
import type { ProviderUserNextView } from './provider-user-schema.ts';
import { toProviderUserNextView } from './provider-user-view.ts';

export interface SyncView {
  target: string;
  status: 'pending' | 'delivered' | 'failed';
  version: number | null;
  attempts: number;
  last_attempt_at: string | null;
  last_error: string | null;
}

/** With `status` and `deactivated_at`; the API drops them under dated versions. */
export type ProviderUserWithSync = ProviderUserNextView & { sync: SyncView[] };

/**
 * docs/contract.md GET /users/{external_provider_id}: the user plus, for each configured
 * target, where its copy stands. A target the worker has not touched yet is
 * `pending` at the user's version. 404 when this organization has no such user.
 */
export async function getProviderUser(
  models: Models,
  targets: readonly { name: string }[],
  organizationId: string,
  externalProviderId: string,
): Promise<ProviderUserWithSync> {
  const { providerUsers, syncStates } = collectionsOf(models);
  const user = await providerUsers.findOne({ organization_id: organizationId, external_provider_id: externalProviderId });
  if (!user) throw new NotFoundError('This organization has no user with this external_provider_id.');
  const rows = await syncStates.find({ user_id: user._id }).toArray();
  const byTarget = new Map(rows.map((r) => [r.target, r]));
  const sync = targets.map(({ name }): SyncView => {
    const row = byTarget.get(name);
    if (!row) return { target: name, status: 'pending', version: user.version, attempts: 0, last_attempt_at: null, last_error: null };
    const delivered = row.delivered_version >= user.version;
    return {
      target: name,
      status: delivered ? 'delivered' : row.status === 'failed' ? 'failed' : 'pending',
      version: delivered ? row.delivered_version : Math.max(row.version, user.version),
      attempts: row.attempts,
      last_attempt_at: row.last_attempt_at?.toISOString() ?? null,
      last_error: row.last_error ?? null,
    };
  });
  return { ...toProviderUserNextView(user), sync };
}

/**
 * The user as GET /users/{id} answers it under one API version: under dated
 * versions without `status` and `deactivated_at` (the preview's members), so the
 * API and `pnpm cli user get` (which uses the organization's pinned version) agree.
 */
export function providerUserForVersion(user: ProviderUserWithSync, apiVersion: string): ProviderUserWithSync | Omit<ProviderUserWithSync, 'status' | 'deactivated_at'> {
  if (apiVersion === 'x-nabla-next') return user;
  const { status: _status, deactivated_at: _deactivatedAt, ...dated } = user;
  return dated;
}
