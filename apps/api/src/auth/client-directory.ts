import type { Models, OAuthClientDoc, OrganizationDoc } from '@connect/shared';

export interface ActiveClient {
  client: OAuthClientDoc;
  organization: OrganizationDoc;
}

interface Entry {
  value: ActiveClient | null;
  expiresAt: number;
}

/**
 * Clients and their organizations, cached for `ttlMs` on the bearer path. docs/contract.md:
 * a disabled client's tokens stop working within 60 s, so the cache lifetime must
 * stay under that (default 30 s). The token endpoint reads fresh.
 */
export class ClientDirectory {
  private readonly cache = new Map<string, Entry>();
  /** Organizations never change once created (no API edits them), so the token path reads them once. */
  private readonly organizations = new Map<string, OrganizationDoc>();

  constructor(
    private readonly models: Models,
    private readonly ttlMs = 30_000,
  ) {}

  async fresh(clientId: string): Promise<ActiveClient | null> {
    const client = await this.models.OAuthClient.findById(clientId).lean<OAuthClientDoc>();
    if (!client || !client.enabled) return null;
    let organization = this.organizations.get(client.organization_id);
    if (!organization) {
      organization = (await this.models.Organization.findById(client.organization_id).lean<OrganizationDoc>()) ?? undefined;
      if (!organization) return null;
      if (this.organizations.size > 10_000) this.organizations.clear();
      this.organizations.set(organization._id, organization);
    }
    return { client, organization };
  }

  async cached(clientId: string): Promise<ActiveClient | null> {
    const now = Date.now();
    const hit = this.cache.get(clientId);
    if (hit && hit.expiresAt > now) return hit.value;
    const value = await this.fresh(clientId);
    if (this.cache.size > 10_000) this.cache.clear();
    this.cache.set(clientId, { value, expiresAt: now + this.ttlMs });
    return value;
  }
}
