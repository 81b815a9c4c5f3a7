import type { Filter } from 'mongodb';
import { collectionsOf, type Models, type ProviderUserDoc } from '../models/models.ts';
import type { UserStatus } from './provider-user-schema.ts';

export interface ListProviderUsersQuery {
  organizationId: string;
  limit: number;
  status?: UserStatus;
  /** The last external_provider_id of the previous page. */
  after?: string;
  /** Server-side time limit of the query (MongoDB's and FerretDB's maxTimeMS): past it, the database stops it. */
  maxTimeMS?: number;
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
 *
 * On FerretDB the range and the sort are not pushed down: a page reads and sorts every user of
 * the organization (seconds at 15,000 users on a loaded machine), so its cost grows with the
 * organization. `maxTimeMS` stops such a query in the database once its answer could no longer
 * be used, instead of letting it run on, holding a connection, after the request got its 503.
 */
export async function listProviderUsers(models: Models, q: ListProviderUsersQuery): Promise<ListProviderUsersPage> {
  const filter: Filter<ProviderUserDoc> = { organization_id: q.organizationId };
  if (q.after !== undefined) filter.external_provider_id = { $gt: q.after };
  // Documents written before the lifecycle existed have no status and are active.
  if (q.status === 'deactivated') filter.status = 'deactivated';
  if (q.status === 'active') filter.status = { $ne: 'deactivated' };
  // 0: no limit (the driver's and the server's meaning of it).
  const users = await collectionsOf(models)
    .providerUsers.find(filter)
    .sort({ external_provider_id: 1 })
    .limit(q.limit + 1)
    // The whole page in the first batch: no getMore, whose cursor FerretDB may have killed at the
    // time limit (an error that says "cursor not found", not the time limit), and one round trip.
    .batchSize(q.limit + 1)
    .maxTimeMS(q.maxTimeMS ?? 0)
    .toArray();
  const more = users.length > q.limit;
  const page = more ? users.slice(0, q.limit) : users;
  return { users: page, nextAfter: more ? page.at(-1)!.external_provider_id : null };
}
