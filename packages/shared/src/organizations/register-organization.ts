import { randomUUID } from 'node:crypto';
import { DEFAULT_PINNED_API_VERSION, isApiVersion, type ApiVersion } from '../api-versions.ts';
import { ValidationError } from '../domain-errors.ts';
import { collectionsOf, type Models, type OrganizationDoc } from '../models/models.ts';

export interface RegisterOrganizationCommand {
  name: string;
  apiVersion?: string;
}

/** An organization, pinned to an API version used when a request names none (docs/contract.md Versioning). */
export async function registerOrganization(models: Models, cmd: RegisterOrganizationCommand): Promise<OrganizationDoc> {
  const name = cmd.name.trim();
  if (!name || name.length > 200) throw new ValidationError([{ path: 'name', message: 'must be 1 to 200 characters' }]);
  const apiVersion = cmd.apiVersion ?? DEFAULT_PINNED_API_VERSION;
  if (!isApiVersion(apiVersion)) {
    throw new ValidationError([{ path: 'api_version', message: `unknown API version "${apiVersion}"` }]);
  }
  const org: OrganizationDoc = { _id: randomUUID(), name, api_version: apiVersion as ApiVersion, created_at: new Date() };
  await collectionsOf(models).organizations.insertOne(org);
  return org;
}
