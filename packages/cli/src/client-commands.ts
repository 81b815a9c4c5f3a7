import { readFileSync } from 'node:fs';
import { collectionsOf, disableClient, enableClient, NotFoundError, registerClient, type OAuthClientDoc } from '@connect/shared';
import { CliError, optional, positional, type Command } from './command.ts';

function clientView(client: OAuthClientDoc) {
  return {
    client_id: client._id,
    organization_id: client.organization_id,
    key: client.jwks_url ? { jwks_url: client.jwks_url } : { public_key: 'pem' },
    enabled: client.enabled,
    created_at: client.created_at.toISOString(),
    disabled_at: client.disabled_at?.toISOString() ?? null,
  };
}

/** `-` is stdin, so a key can be piped into a container (`docker compose run -T ... < key.pem`). */
function readKeyFile(file: string): string {
  try {
    return readFileSync(file === '-' ? 0 : file, 'utf8');
  } catch (err) {
    throw new CliError('usage', `cannot read --public-key-file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

export const clientCommands: Command[] = [
  {
    name: 'client create',
    synopsis: '--org ID (--public-key-file F | --jwks-url U)',
    description: `Registers an OAuth client of an organization. Its assertions are verified with
the PEM public key in F (- reads it from stdin) or with the keys published at
the JWKS URL U (the EHR rotates them on its own).
token_url is the audience its assertions name: PUBLIC_BASE_URL + BASE_PATH + /oauth/token.
Prints {"client_id", "organization_id", "key", "enabled", "token_url", "created_at", "disabled_at"}.`,
    options: { org: { type: 'string' }, 'public-key-file': { type: 'string' }, 'jwks-url': { type: 'string' } },
    async run(input, { models, config }) {
      const org = optional(input, 'org');
      if (!org) throw new CliError('usage', '--org is required');
      const file = optional(input, 'public-key-file');
      const client = await registerClient(models, {
        organizationId: org,
        publicKeyPem: file ? readKeyFile(file) : undefined,
        jwksUrl: optional(input, 'jwks-url'),
      });
      const { disabled_at, ...view } = clientView(client);
      return { ...view, token_url: config.tokenEndpointUrl, disabled_at };
    },
  },
  {
    name: 'client list',
    synopsis: '[--org ID]',
    description: `Lists OAuth clients (of one organization with --org), oldest first. Never prints keys.
Prints {"clients": [{"client_id", "organization_id", "key", "enabled", "created_at", "disabled_at"}]}.`,
    options: { org: { type: 'string' } },
    async run(input, { models }) {
      const org = optional(input, 'org');
      const { organizations, oauthClients } = collectionsOf(models);
      if (org && !(await organizations.findOne({ _id: org }, { projection: { _id: 1 } }))) throw new NotFoundError(`No organization ${org}.`);
      const clients = await oauthClients.find(org ? { organization_id: org } : {}).sort({ created_at: 1, _id: 1 }).toArray();
      return { clients: clients.map(clientView) };
    },
  },
  {
    name: 'client disable',
    synopsis: 'ID',
    description: `Disables an OAuth client: it gets no new tokens, and its tokens stop working
within 30 s (the API's client cache).
Prints {"client_id", "enabled": false, "disabled_at"}.`,
    positionals: 1,
    async run(input, { models }) {
      const client = await disableClient(models, positional(input, 'the client id'));
      return { client_id: client._id, enabled: client.enabled, disabled_at: client.disabled_at?.toISOString() ?? null };
    },
  },
  {
    name: 'client enable',
    synopsis: 'ID',
    description: `Enables a disabled OAuth client again (within 30 s on every API process).
Prints {"client_id", "enabled": true, "disabled_at": null}.`,
    positionals: 1,
    async run(input, { models }) {
      const client = await enableClient(models, positional(input, 'the client id'));
      return { client_id: client._id, enabled: client.enabled, disabled_at: null };
    },
  },
];
