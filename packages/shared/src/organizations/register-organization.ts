import { randomUUID } from 'node:crypto';
import { DEFAULT_PINNED_API_VERSION, type ApiVersion } from '../api-versions.ts';
import { NotFoundError, ValidationError } from '../domain-errors.ts';
import { collectionsOf, type Models, type OrganizationDoc } from '../models/models.ts';
import { organizationProblems, type RegisterOrganizationCommand } from '../input-rules.ts';

export { organizationProblems, type RegisterOrganizationCommand };

/** An organization, pinned to an API version used when a request names none (docs/contract.md Versioning). */
export async function registerOrganization(models: Models, cmd: RegisterOrganizationCommand): Promise<OrganizationDoc> {
  const problems = organizationProblems(cmd);
  if (problems.length > 0) throw new ValidationError(problems);
  const apiVersion = (cmd.apiVersion ?? DEFAULT_PINNED_API_VERSION) as ApiVersion;
  const org: OrganizationDoc = { _id: randomUUID(), name: cmd.name.trim(), api_version: apiVersion, created_at: new Date() };
  await collectionsOf(models).organizations.insertOne(org);
  return org;
}

/** The organization with this id, or NotFoundError: every command that names one checks it exists. */
export async function requireOrganization(models: Models, organizationId: string): Promise<OrganizationDoc> {
  const org = await collectionsOf(models).organizations.findOne({ _id: organizationId });
  if (!org) throw new NotFoundError(`No organization ${organizationId}.`);
  return org;
}
