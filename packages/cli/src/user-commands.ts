import { defineCommand, required, type Command } from './command.ts';

export const userCommands: Command[] = [
  defineCommand({
    name: 'user get',
    synopsis: '--org ID --external-provider-id X',
    description: `Prints a provider user as GET {base}/users/{external_provider_id} answers it,
with "sync": where each target of DOWNSTREAM_TARGETS stands (the same function
serves both, so they agree when the CLI sees the API's DOWNSTREAM_TARGETS), in the
shape of the organization's pinned API version (what the API answers without a version header;
an organization pinned to 2026-02-13, a version without GET /users/{id}, gets the 2026-03-23 shape),
plus status and deactivated_at whatever that version: an operator sees a deactivated user as such.`,
    options: { org: { type: 'string' }, 'external-provider-id': { type: 'string' } },
    parse: (input) => ({ orgId: required(input, 'org'), externalProviderId: required(input, 'external-provider-id') }),
    async run({ orgId, externalProviderId }, { models, config }) {
      const { getProviderUser, providerUserForVersion, requireOrganization } = await import('@connect/shared');
      const org = await requireOrganization(models, orgId);
      const user = await getProviderUser(models, config.downstreamTargets, orgId, externalProviderId);
      // Dated versions leave status and deactivated_at out of the API's answer; an operator needs them.
      return { ...providerUserForVersion(user, org.api_version), status: user.status, deactivated_at: user.deactivated_at };
    },
  }),
];
