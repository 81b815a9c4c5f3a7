import { LRUCache } from 'lru-cache';
import { collectionsOf, type Collections, type Models, type OAuthClientDoc, type OrganizationDoc } from '@connect/shared';

export interface ActiveClient {
  client: OAuthClientDoc;
  organization: OrganizationDoc;
}

/** Boxed, so "no such client" (null) is cached too. */
interface Entry {
  value: ActiveClient | null;
}

/**
 * Clients and their organizations, cached for `ttlMs` on the bearer path. docs/contract.md:
 * a disabled client's tokens stop working within 60 s, so the cache lifetime must
 * stay under that (default 30 s). The token endpoint reads fresh. Both caches are
 * bounded (10,000 entries, the least recently used out first).
 */
export class ClientDirectory {
  private readonly cache: LRUCache<string, Entry>;
  /** Organizations never change once created (no API edits them), so the token path reads them once. */
  private readonly organizations = new LRUCache<string, OrganizationDoc>({ max: 10_000 });

  private readonly collections: Collections;

  constructor(models: Models, ttlMs = 30_000) {
    this.collections = collectionsOf(models);
    this.cache = new LRUCache({ max: 10_000, ttl: ttlMs });
  }

  async fresh(clientId: string): Promise<ActiveClient | null> {
    const client = await this.collections.oauthClients.findOne({ _id: clientId });
    if (!client || !client.enabled) return null;
    let organization = this.organizations.get(client.organization_id);
    if (!organization) {
      organization = (await this.collections.organizations.findOne({ _id: client.organization_id })) ?? undefined;
      if (!organization) return null;
      this.organizations.set(organization._id, organization);
    }
    return { client, organization };
  }

  async cached(clientId: string): Promise<ActiveClient | null> {
    const hit = this.cache.get(clientId);
    if (hit) return hit.value;
    const value = await this.fresh(clientId);
    this.cache.set(clientId, { value });
    return value;
  }
}
