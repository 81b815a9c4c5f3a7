import { LRUCache } from 'lru-cache';
import { collectionsOf, type Collections, type Models, type OAuthClientDoc, type OrganizationDoc } from '@connect/shared';

export interface ActiveClient {
  client: OAuthClientDoc;
  organization: OrganizationDoc;
}

/** Boxed, so "no such client" (null) is cached too; `at`: when it was read (ms). */
interface Entry {
  value: ActiveClient | null;
  at: number;
}

/**
 * Clients and their organizations, cached for `ttlMs` on the bearer path. docs/contract.md:
 * a disabled client's tokens stop working within 60 s, so the cache lifetime must
 * stay under that (default 30 s). The token endpoint reads fresh, and its reading replaces
 * the cached one. A reading of "no enabled client" is trusted only for tokens issued before
 * it: a token issued since was issued to an enabled client (by this process or another), so
 * the client was enabled again and is read afresh; without that, a re-enabled client's new
 * tokens were refused for up to the cache's lifetime. Both caches are bounded (10,000
 * entries, the least recently used out first).
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
    const at = Date.now();
    const value = await this.read(clientId);
    this.cache.set(clientId, { value, at });
    return value;
  }

  /** `issuedAt`: the token's `iat` (seconds). */
  async cached(clientId: string, issuedAt: number): Promise<ActiveClient | null> {
    const hit = this.cache.get(clientId);
    // iat is whole seconds: issued before the reading for certain only when a second earlier.
    if (hit && (hit.value !== null || (issuedAt + 1) * 1000 <= hit.at)) return hit.value;
    return this.fresh(clientId);
  }

  private async read(clientId: string): Promise<ActiveClient | null> {
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
}
