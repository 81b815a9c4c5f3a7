import type { OrganizationDoc } from '@connect/shared';
import { API_VERSIONS, DEFAULT_PINNED_API_VERSION, organizationProblems } from '@connect/shared/input-rules';
import { CliError, defineCommand, required, type Command } from './command.ts';

function orgView(org: OrganizationDoc) {
  return { id: org._id, name: org.name, api_version: org.api_version, created_at: org.created_at.toISOString() };
}

export const orgCommands: Command[] = [
  defineCommand({
    name: 'org create',
    synopsis: '--name N [--api-version V]',
    description: `Registers an organization (a tenant: its users, clients and pinned API version).
--api-version pins the version its requests are served under when they do not
name one: ${API_VERSIONS.join(', ')} (default ${DEFAULT_PINNED_API_VERSION}).
Prints {"id", "name", "api_version", "created_at"}.`,
    options: { name: { type: 'string' }, 'api-version': { type: 'string' } },
    parse(input) {
      const args = { name: required(input, 'name'), apiVersion: input.values['api-version'] as string | undefined };
      // registerOrganization's own checks, made before any setting is read.
      const problem = organizationProblems(args)[0];
      if (problem) throw new CliError('usage', `--${problem.path.replace('_', '-')} ${problem.message}`);
      return args;
    },
    async run(args, { models }) {
      const { registerOrganization } = await import('@connect/shared');
      return orgView(await registerOrganization(models, args));
    },
  }),
  defineCommand({
    name: 'org list',
    synopsis: '',
    description: `Lists every organization, oldest first.
Prints {"organizations": [{"id", "name", "api_version", "created_at"}]}.`,
    parse: () => undefined,
    async run(_args, { models }) {
      const { collectionsOf } = await import('@connect/shared');
      const orgs = await collectionsOf(models).organizations.find({}).sort({ created_at: 1, _id: 1 }).toArray();
      return { organizations: orgs.map(orgView) };
    },
  }),
];
