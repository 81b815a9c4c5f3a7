import { createPublicKey, randomUUID } from 'node:crypto';
import { NotFoundError, ValidationError } from '../domain-errors.ts';
import { collectionsOf, type Models, type OAuthClientDoc } from '../models/models.ts';
import { requireOrganization } from './register-organization.ts';

export interface RegisterClientCommand {
  organizationId: string;
  publicKeyPem?: string;
  jwksUrl?: string;
}

/** PEM labels of a public key: SPKI (`openssl pkey -pubout`) and PKCS#1 RSA. */
const PUBLIC_KEY_LABELS = new Set(['PUBLIC KEY', 'RSA PUBLIC KEY']);

/**
 * Why `pem` cannot be a client's public key, or undefined when it can. A private
 * key is refused even though its public half could be derived from it: storing
 * it would put the EHR's signing secret in our database.
 */
export function clientPublicKeyProblem(pem: string): string | undefined {
  const labels = [...pem.matchAll(/-----BEGIN ([A-Z0-9 ]+)-----/g)].map((m) => m[1]!);
  if (labels.some((l) => l.includes('PRIVATE KEY'))) {
    return 'is a private key; give the public key instead (the EHR keeps its private key to itself), e.g. `openssl pkey -in private.pem -pubout`';
  }
  if (labels.length === 0) return 'is not a PEM public key; expected text starting with -----BEGIN PUBLIC KEY-----';
  if (labels.length > 1) return `holds ${labels.length} PEM blocks; expected exactly one public key (-----BEGIN PUBLIC KEY-----)`;
  if (!PUBLIC_KEY_LABELS.has(labels[0]!)) return `is a PEM ${labels[0]}, not a public key; expected -----BEGIN PUBLIC KEY-----`;
  let type: string | undefined;
  try {
    type = createPublicKey(pem).asymmetricKeyType;
  } catch {
    return 'is not a valid PEM public key (its content could not be read as one)';
  }
  if (!['rsa', 'rsa-pss', 'ec', 'ed25519'].includes(type ?? '')) return `must be an RSA, EC or Ed25519 public key, got ${type ?? 'an unknown type'}`;
  return undefined;
}

/** Hosts a JWKS may be fetched from over plain http: this machine (tests, local development). */
const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]']);

/**
 * Why `jwksUrl` cannot be a client's JWKS URL, or undefined when it can: https
 * (http only on a loopback host), and no user:password@ (a credential would be
 * stored and shown by every client listing).
 */
export function jwksUrlProblem(jwksUrl: string): string | undefined {
  let url: URL;
  try {
    url = new URL(jwksUrl);
  } catch {
    return 'must be an https URL';
  }
  if (url.protocol === 'http:' && !LOOPBACK_HOSTS.has(url.hostname)) return 'must be an https URL (plain http only for localhost, 127.0.0.1 or [::1])';
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return 'must be an https URL';
  if (url.username || url.password) return 'must not carry credentials (user:password@)';
  return undefined;
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
