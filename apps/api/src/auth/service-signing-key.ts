import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { calculateJwkThumbprint, exportJWK } from 'jose';
import { accessTokenAlgOf, collectionsOf, isDuplicateKeyError, type Models } from '@connect/shared';

export interface ServiceSigningKey {
  alg: 'RS256' | 'ES256' | 'EdDSA';
  kid: string;
  privateKey: KeyObject;
  publicKey: KeyObject;
}

const KEY_ID = 'access-token';

/** Configured keys were checked at start (signingKeyProblem); this guards the stored one. */
function algFor(key: KeyObject): ServiceSigningKey['alg'] {
  const alg = accessTokenAlgOf(key);
  if (!alg) throw new Error('TOKEN_SIGNING_KEY: must be an RSA, EC P-256 or Ed25519 private key');
  return alg;
}

async function fromPem(pem: string): Promise<ServiceSigningKey> {
  const privateKey = createPrivateKey(pem);
  const publicKey = createPublicKey(privateKey);
  const kid = await calculateJwkThumbprint(await exportJWK(publicKey));
  return { alg: algFor(privateKey), kid, privateKey, publicKey };
}

/**
 * The key access tokens are signed with (docs/contract.md): TOKEN_SIGNING_KEY when set;
 * otherwise an Ed25519 key generated once and kept in MongoDB so that every API
 * instance signs and verifies with the same one. Concurrent first starts race
 * on one `_id`: the loser reads the winner's key.
 */
export async function loadServiceSigningKey(models: Models, configuredPem: string | undefined): Promise<ServiceSigningKey> {
  if (configuredPem) return fromPem(configuredPem);
  const keys = collectionsOf(models).signingKeys;
  const stored = await keys.findOne({ _id: KEY_ID });
  if (stored) return fromPem(stored.private_key_pem);
  const { privateKey } = generateKeyPairSync('ed25519');
  const pem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const key = await fromPem(pem);
  try {
    await keys.insertOne({ _id: KEY_ID, kid: key.kid, alg: key.alg, private_key_pem: pem, created_at: new Date() });
    return key;
  } catch (err) {
    if (!isDuplicateKeyError(err)) throw err;
    const winner = await keys.findOne({ _id: KEY_ID });
    return fromPem(winner!.private_key_pem);
  }
}
