/**
 * Authentication for the load: an organization and an OAuth client registered
 * directly through @connect/shared, an RS256 assertion signed as the public sample
 * client does (test/support/harness.ts signAssertion), and a token from the API.
 */
import { createPrivateKey, generateKeyPairSync, randomUUID } from 'node:crypto';
import mongoose from 'mongoose';
import { SignJWT } from 'jose';
import { createModels, emailUniquenessFrom, ensureIndexes, registerClient, registerOrganization } from '@connect/shared';

export interface BenchClient {
  organizationId: string;
  clientId: string;
  privateKeyPem: string;
  publicKeyPem: string;
}

/**
 * `makeIndexes: false` where an API has made them already, in a mode of its own (bench/email-claims.ts);
 * otherwise they are made as this process's EMAIL_UNIQUENESS says, as the API it starts will.
 */
export async function registerBenchClient(mongoUrl: string, options: { name?: string; makeIndexes?: boolean } = {}): Promise<BenchClient> {
  const conn = await mongoose.createConnection(mongoUrl).asPromise();
  try {
    const models = createModels(conn);
    if (options.makeIndexes ?? true) await ensureIndexes(models, undefined, emailUniquenessFrom(process.env));
    const organization = await registerOrganization(models, { name: options.name ?? 'Bench clinic' });
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const publicKeyPem = publicKey.export({ type: 'spki', format: 'pem' }).toString();
    const client = await registerClient(models, { organizationId: organization._id, publicKeyPem });
    return {
      organizationId: organization._id,
      clientId: client._id,
      privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
      publicKeyPem,
    };
  } finally {
    await conn.close();
  }
}

export async function signAssertion(c: BenchClient, audience: string): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ jti: randomUUID() })
    .setProtectedHeader({ alg: 'RS256', typ: 'JWT' })
    .setIssuer(c.clientId)
    .setSubject(c.clientId)
    .setAudience(audience)
    .setIssuedAt(now)
    .setExpirationTime(now + 60)
    .sign(createPrivateKey(c.privateKeyPem));
}

export async function fetchAccessToken(c: BenchClient, tokenUrl: string): Promise<string> {
  const res = await fetch(tokenUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      grant_type: 'client_credentials',
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: await signAssertion(c, tokenUrl),
    }),
  });
  const body = (await res.json()) as { access_token?: string };
  if (res.status !== 200 || !body.access_token) throw new Error(`token request failed: ${res.status} ${JSON.stringify(body)}`);
  return body.access_token;
}
