import { randomUUID } from 'node:crypto';
import { API_VERSIONS, DEFAULT_PINNED_API_VERSION, isApiVersion, type ApiVersion } from '../api-versions.ts';
import { NotFoundError, ValidationError, type FieldError } from '../domain-errors.ts';
import { collectionsOf, type Models, type OrganizationDoc } from '../models/models.ts';

export interface RegisterOrganizationCommand {
  name: string;
  apiVersion?: string;
}

/** What is wrong with a registration, checked before anything is stored (and by the CLI before it reads its settings). */
export function organizationProblems(cmd: RegisterOrganizationCommand): FieldError[] {
  const problems: FieldError[] = [];
  const name = cmd.name.trim();
  if (!name || name.length > 200) problems.push({ path: 'name', message: 'must be 1 to 200 characters' });
  if (cmd.apiVersion !== undefined && !isApiVersion(cmd.apiVersion)) {
    problems.push({ path: 'api_version', message: `must be one of ${API_VERSIONS.join(', ')}, got "${cmd.apiVersion}"` });
  }
  return problems;
}

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
