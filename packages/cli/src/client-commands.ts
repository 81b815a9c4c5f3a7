import { readFileSync } from 'node:fs';
import type { OAuthClientDoc } from '@connect/shared';
import { clientPublicKeyProblem, jwksUrlProblem, urlWithoutSecrets } from '@connect/shared/input-rules';
import { CliError, defineCommand, optional, positional, type Command } from './command.ts';

function clientView(client: OAuthClientDoc) {
  return {
    client_id: client._id,
    organization_id: client.organization_id,
    // Registration refuses user:password@ in a JWKS URL; one stored before that is shown without it.
    // Without credentials, query or fragment: a JWKS URL can carry a token there.
    key: client.jwks_url ? { jwks_url: urlWithoutSecrets(client.jwks_url) } : { public_key: 'pem' },
    enabled: client.enabled,
    created_at: client.created_at.toISOString(),
    disabled_at: client.disabled_at?.toISOString() ?? null,
  };
}

/** `-` is stdin, so a key can be piped into a container (`docker compose run -T ... < key.pem`). */
function readKeyFile(file: string): string {
  let pem: string;
  try {
    pem = readFileSync(file === '-' ? 0 : file, 'utf8');
  } catch (err) {
    throw new CliError('usage', `cannot read --public-key-file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  // The same check as registerClient's, made here so that a bad file is a usage error before any setting is read.
  const problem = clientPublicKeyProblem(pem);
  if (problem) throw new CliError('usage', `--public-key-file ${file} ${problem}`);
  return pem;
}

const clientIdArgument = (input: Parameters<Command['parse']>[0]) => positional(input, 'the client id');

export const clientCommands: Command[] = [
  defineCommand({
    name: 'client create',
    synopsis: '--org ID (--public-key-file F | --jwks-url U)',
    description: `Registers an OAuth client of an organization. Its assertions are verified with
the PEM public key in F (- reads it from stdin; a private key is refused: the EHR
keeps it) or with the keys published at the JWKS URL U (the EHR rotates them on its
own; https, or http on localhost, 127.0.0.1 or [::1] only; no user:password@).
token_url is the audience its assertions name: PUBLIC_BASE_URL + BASE_PATH + /oauth/token.
Prints {"client_id", "organization_id", "key", "enabled", "token_url", "created_at", "disabled_at"}.`,
    options: { org: { type: 'string' }, 'public-key-file': { type: 'string' }, 'jwks-url': { type: 'string' } },
    parse(input) {
      const org = optional(input, 'org');
      if (!org) throw new CliError('usage', '--org is required');
      const file = optional(input, 'public-key-file');
      const jwksUrl = optional(input, 'jwks-url');
      if (Boolean(file) === Boolean(jwksUrl)) throw new CliError('usage', 'give exactly one of --public-key-file F or --jwks-url U');
      const urlProblem = jwksUrl ? jwksUrlProblem(jwksUrl) : undefined;
      // The URL is not repeated: it may hold a credential.
      if (urlProblem) throw new CliError('usage', `--jwks-url ${urlProblem}`);
      return { organizationId: org, publicKeyPem: file ? readKeyFile(file) : undefined, jwksUrl };
    },
    async run(args, { models, config }) {
      const { registerClient } = await import('@connect/shared');
      const client = await registerClient(models, args);
      const { disabled_at, ...view } = clientView(client);
      return { ...view, token_url: config.tokenEndpointUrl, disabled_at };
    },
  }),
  defineCommand({
    name: 'client list',
    synopsis: '[--org ID]',
    description: `Lists OAuth clients (of one organization with --org), oldest first. Never prints keys.
Prints {"clients": [{"client_id", "organization_id", "key", "enabled", "created_at", "disabled_at"}]}.`,
    options: { org: { type: 'string' } },
    parse: (input) => optional(input, 'org'),
    async run(org, { models }) {
      const { collectionsOf, requireOrganization } = await import('@connect/shared');
      if (org) await requireOrganization(models, org);
      const { oauthClients } = collectionsOf(models);
      const clients = await oauthClients.find(org ? { organization_id: org } : {}).sort({ created_at: 1, _id: 1 }).toArray();
      return { clients: clients.map(clientView) };
    },
  }),
  defineCommand({
    name: 'client disable',
    synopsis: 'ID',
    description: `Disables an OAuth client: it gets no new tokens, and its tokens stop working
within 30 s (the API's client cache). Disabling it again changes nothing
(disabled_at stays the time it was first disabled).
Prints {"client_id", "enabled": false, "disabled_at"}, plus "already_disabled": true when it already was.`,
    positionals: 1,
    parse: clientIdArgument,
    async run(clientId, { models }) {
      const { disableClient } = await import('@connect/shared');
      const client = await disableClient(models, clientId);
      const view = { client_id: client._id, enabled: client.enabled, disabled_at: client.disabled_at?.toISOString() ?? null };
      return client.already_disabled ? { ...view, already_disabled: true } : view;
    },
  }),
  defineCommand({
    name: 'client enable',
    synopsis: 'ID',
    description: `Enables a disabled OAuth client again (within 30 s on every API process).
Prints {"client_id", "enabled": true, "disabled_at": null}, plus "already_enabled": true when it already was.`,
    positionals: 1,
    parse: clientIdArgument,
    async run(clientId, { models }) {
      const { enableClient } = await import('@connect/shared');
      const client = await enableClient(models, clientId);
      const view = { client_id: client._id, enabled: client.enabled, disabled_at: null };
      return client.already_enabled ? { ...view, already_enabled: true } : view;
    },
  }),
];
