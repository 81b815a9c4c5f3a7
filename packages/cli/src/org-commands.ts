import { collectionsOf, registerOrganization, type OrganizationDoc } from '@connect/shared';
import { optional, required, type Command } from './command.ts';

function orgView(org: OrganizationDoc) {
  return { id: org._id, name: org.name, api_version: org.api_version, created_at: org.created_at.toISOString() };
}

export const orgCommands: Command[] = [
  {
    name: 'org create',
    synopsis: '--name N [--api-version V]',
    description: `Registers an organization (a tenant: its users, clients and pinned API version).
--api-version pins the version its requests are served under when they do not
name one (default 2026-03-23).
Prints {"id", "name", "api_version", "created_at"}.`,
    options: { name: { type: 'string' }, 'api-version': { type: 'string' } },
    async run(input, { models }) {
      return orgView(await registerOrganization(models, { name: required(input, 'name'), apiVersion: optional(input, 'api-version') as never }));
    },
  },
  {
    name: 'org list',
    synopsis: '',
    description: `Lists every organization, oldest first.
Prints {"organizations": [{"id", "name", "api_version", "created_at"}]}.`,
    async run(_input, { models }) {
      const orgs = await collectionsOf(models).organizations.find({}).sort({ created_at: 1, _id: 1 }).toArray();
      return { organizations: orgs.map(orgView) };
    },
  },
];
