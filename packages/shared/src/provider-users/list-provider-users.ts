import type { Filter } from 'mongodb';
import { collectionsOf, type Models, type ProviderUserDoc } from '../models/models.ts';
import type { UserStatus } from './provider-user-schema.ts';

export interface ListProviderUsersQuery {
  organizationId: string;
  limit: number;
  status?: UserStatus;
  /** The last external_provider_id of the previous page. */
  after?: string;
}

export interface ListProviderUsersPage {
  users: ProviderUserDoc[];
  /** Set when another page follows: the key to continue after. */
  nextAfter: string | null;
}

/**
 * GET {base}/users (preview): one organization's users in external_provider_id
 * order. That order is stable (the id is unique within the organization and never
 * changes) and served by the unique (organization_id, external_provider_id)
 * index, so a page costs the same wherever it starts, and users created or
 * deactivated between pages never make the walk repeat or skip another user.
 */
export async function listProviderUsers(models: Models, q: ListProviderUsersQuery): Promise<ListProviderUsersPage> {
  const filter: Filter<ProviderUserDoc> = { organization_id: q.organizationId };
  if (q.after !== undefined) filter.external_provider_id = { $gt: q.after };
  // Documents written before the lifecycle existed have no status and are active.
  if (q.status === 'deactivated') filter.status = 'deactivated';
  if (q.status === 'active') filter.status = { $ne: 'deactivated' };
  const users = await collectionsOf(models)
    .providerUsers.find(filter)
    .sort({ external_provider_id: 1 })
    .limit(q.limit + 1)
    .toArray();
  const more = users.length > q.limit;
  const page = more ? users.slice(0, q.limit) : users;
  return { users: page, nextAfter: more ? page.at(-1)!.external_provider_id : null };
}
