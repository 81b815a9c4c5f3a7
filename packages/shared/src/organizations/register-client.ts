import { createPublicKey, randomUUID } from 'node:crypto';
import { NotFoundError, ValidationError } from '../domain-errors.ts';
import { collectionsOf, type Models, type OAuthClientDoc } from '../models/models.ts';

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
  if (cmd.publicKeyPem) {
    try {
      const key = createPublicKey(cmd.publicKeyPem);
      if (!['rsa', 'rsa-pss', 'ec', 'ed25519'].includes(key.asymmetricKeyType ?? '')) throw new Error('type');
    } catch {
      throw new ValidationError([{ path: 'public_key', message: 'must be an RSA, EC or Ed25519 public key in PEM form' }]);
    }
  }
  if (cmd.jwksUrl) {
    let url: URL | undefined;
    try {
      url = new URL(cmd.jwksUrl);
    } catch {
      url = undefined;
    }
    if (!url || !['https:', 'http:'].includes(url.protocol)) {
      throw new ValidationError([{ path: 'jwks_url', message: 'must be an http(s) URL' }]);
    }
  }
  const { organizations, oauthClients } = collectionsOf(models);
  const org = await organizations.findOne({ _id: cmd.organizationId }, { projection: { _id: 1 } });
  if (!org) throw new NotFoundError(`No organization ${cmd.organizationId}.`);
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

/** Tokens already issued to the client stop working within the API's client cache lifetime (≤ 60 s). */
export async function disableClient(models: Models, clientId: string): Promise<OAuthClientDoc> {
  const client = await collectionsOf(models).oauthClients.findOneAndUpdate(
    { _id: clientId },
    { $set: { enabled: false, disabled_at: new Date() } },
    { returnDocument: 'after' },
  );
  if (!client) throw new NotFoundError(`No OAuth client ${clientId}.`);
  return client;
}

/** Undoes `disableClient`: its assertions get tokens again, and its unexpired tokens work again (the API checks the client on every request, cached ≤ 30 s). */
export async function enableClient(models: Models, clientId: string): Promise<OAuthClientDoc> {
  const client = await collectionsOf(models).oauthClients.findOneAndUpdate(
    { _id: clientId },
    { $set: { enabled: true, disabled_at: null } },
    { returnDocument: 'after' },
  );
  if (!client) throw new NotFoundError(`No OAuth client ${clientId}.`);
  return client;
}
