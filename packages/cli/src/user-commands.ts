import { getProviderUser } from '@connect/shared';
import { required, type Command } from './command.ts';

export const userCommands: Command[] = [
  {
    name: 'user get',
    synopsis: '--org ID --external-provider-id X',
    description: `Prints a provider user as GET {base}/users/{external_provider_id} answers it,
with "sync": where each target of DOWNSTREAM_TARGETS stands (the same function
serves both, so they agree when the CLI sees the API's DOWNSTREAM_TARGETS).`,
    options: { org: { type: 'string' }, 'external-provider-id': { type: 'string' } },
    async run(input, { models, config }) {
      return getProviderUser(models, config.downstreamTargets, required(input, 'org'), required(input, 'external-provider-id'));
    },
  },
];
