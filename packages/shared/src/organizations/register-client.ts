import { randomUUID } from 'node:crypto';
import { NotFoundError, ValidationError } from '../domain-errors.ts';
import { collectionsOf, type Models, type OAuthClientDoc } from '../models/models.ts';
import { requireOrganization } from './register-organization.ts';
import { clientPublicKeyProblem, jwksUrlProblem } from '../input-rules.ts';

export { clientPublicKeyProblem, jwksUrlProblem };

export interface RegisterClientCommand {
  organizationId: string;
  publicKeyPem?: string;
  jwksUrl?: string;
}

/**
 * An OAuth client of an organization, authenticated by JWT assertions signed with
 * its private key: either a static public key (PEM) or a JWKS URL, which allows
 * key rotation without telling us (docs/contract.md, POST {base}/oauth/token).
 */
export async function registerClient(models: Models, cmd: RegisterClientCommand): Promise<OAuthClientDoc> {
  if (Boolean(cmd.publicKeyPem) === Boolean(cmd.jwksUrl)) {
    throw new ValidationError([{ path: 'key', message: 'give exactly one of a public key (PEM) or a JWKS URL' }]);
  }
  const keyProblem = cmd.publicKeyPem ? clientPublicKeyProblem(cmd.publicKeyPem) : undefined;
  if (keyProblem) throw new ValidationError([{ path: 'public_key', message: keyProblem }]);
  const urlProblem = cmd.jwksUrl ? jwksUrlProblem(cmd.jwksUrl) : undefined;
  if (urlProblem) throw new ValidationError([{ path: 'jwks_url', message: urlProblem }]);
  await requireOrganization(models, cmd.organizationId);
  const { oauthClients } = collectionsOf(models);
  const client: OAuthClientDoc = {
    _id: randomUUID(),
    organization_id: cmd.organizationId,
    public_key_pem: cmd.publicKeyPem ?? null,
    jwks_url: cmd.jwksUrl ?? null,
    enabled: true,
    created_at: new Date(),
    disabled_at: null,
  };
  await oauthClients.insertOne(client);
  return client;
}

/** Tokens already issued to the client stop working within the API's client cache lifetime (≤ 60 s). Disabling it again changes nothing (`already_disabled`). */
export async function disableClient(models: Models, clientId: string): Promise<OAuthClientDoc & { already_disabled?: true }> {
  const { oauthClients } = collectionsOf(models);
  // Only an enabled client is changed, so disabled_at keeps the time it was first disabled.
  const disabled = await oauthClients.findOneAndUpdate({ _id: clientId, enabled: true }, { $set: { enabled: false, disabled_at: new Date() } }, { returnDocument: 'after' });
  if (disabled) return disabled;
  const client = await oauthClients.findOne({ _id: clientId });
  if (!client) throw new NotFoundError(`No OAuth client ${clientId}.`);
  return { ...client, already_disabled: true };
}

/**
 * Undoes `disableClient`: its assertions get tokens again, and its unexpired tokens work again (the API
 * checks the client on every request, cached ≤ 30 s). Enabling an enabled client changes nothing (`already_enabled`).
 */
export async function enableClient(models: Models, clientId: string): Promise<OAuthClientDoc & { already_enabled?: true }> {
  const { oauthClients } = collectionsOf(models);
  const enabled = await oauthClients.findOneAndUpdate({ _id: clientId, enabled: false }, { $set: { enabled: true, disabled_at: null } }, { returnDocument: 'after' });
  if (enabled) return enabled;
  const client = await oauthClients.findOne({ _id: clientId });
  if (!client) throw new NotFoundError(`No OAuth client ${clientId}.`);
  return { ...client, already_enabled: true };
}
