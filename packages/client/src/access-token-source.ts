import { createPrivateKey, randomUUID, type KeyObject } from 'node:crypto';
import { SignJWT } from 'jose';

/** RSA below 2048 bits: jose refuses to sign with it (and to verify), so the server would never accept it. */
const MIN_RSA_BITS = 2048;

/**
 * What the server verifies (apps/api/src/auth/client-assertion.ts: RS256, PS256, ES256, EdDSA), in
 * the words of a key error: the keys that sign those, and what to do with any other.
 */
const ACCEPTED_KEYS = `use an RSA key of ${MIN_RSA_BITS} bits or more, a P-256 EC key or an Ed25519 key instead (openssl genpkey -algorithm ed25519 -out client.key makes one), and register its public key for the client`;
const ACCEPTED_ALGORITHMS = 'the server verifies RS256, PS256, ES256 and EdDSA only';

/**
 * A key no client assertion the server accepts can be signed with. `key` describes it as an
 * object of "holds" ("a P-384 EC key, which signs ES384, ..."), so the constructor's error can
 * say what the value given holds.
 */
export class UnsupportedKeyError extends Error {
  constructor(readonly key: string) {
    super(`no client assertion the server accepts can be signed with ${key}`);
    this.name = 'UnsupportedKeyError';
  }
}

/**
 * The JWS algorithm a private key signs with: RS256 for RSA (what every server accepts), PS256 for
 * RSA-PSS, ES256 for P-256, EdDSA for Ed25519. Any other key throws UnsupportedKeyError, naming
 * the keys that work: a P-384 key would sign ES384, which the server refuses, and every call would
 * fail later as "Client authentication failed".
 */
export function algorithmFor(key: KeyObject): string {
  const type = key.asymmetricKeyType;
  switch (type) {
    case 'rsa':
    case 'rsa-pss': {
      const bits = key.asymmetricKeyDetails?.modulusLength;
      const name = type === 'rsa' ? 'an RSA' : 'an RSA-PSS';
      if (bits !== undefined && bits < MIN_RSA_BITS) throw new UnsupportedKeyError(`${name} key of ${bits} bits, which is too short (${MIN_RSA_BITS} bits at least): ${ACCEPTED_KEYS}`);
      return type === 'rsa' ? 'RS256' : 'PS256';
    }
    case 'ec': {
      const curve = key.asymmetricKeyDetails?.namedCurve;
      if (curve === 'prime256v1') return 'ES256';
      const signs = curve === 'secp384r1' ? 'a P-384 EC key, which signs ES384' : curve === 'secp521r1' ? 'a P-521 EC key, which signs ES512' : `an EC key on curve ${curve}, which no JWS algorithm the server takes uses`;
      throw new UnsupportedKeyError(`${signs} (${ACCEPTED_ALGORITHMS}): ${ACCEPTED_KEYS}`);
    }
    case 'ed25519':
      return 'EdDSA';
    case 'ed448':
      throw new UnsupportedKeyError(`an Ed448 key (the server takes EdDSA with Ed25519 keys only): ${ACCEPTED_KEYS}`);
    case 'x25519':
    case 'x448':
      throw new UnsupportedKeyError(`an ${type === 'x25519' ? 'X25519' : 'X448'} key, which cannot sign (it is for key agreement): ${ACCEPTED_KEYS}`);
    default:
      throw new UnsupportedKeyError(`a key of type ${type} (${ACCEPTED_ALGORITHMS}): ${ACCEPTED_KEYS}`);
  }
}

/** What the client accepts as `privateKey`, in the words every key error starts with. */
export const PRIVATE_KEY_EXPECTED = 'a PEM private key (PKCS#8 or PKCS#1)';

/**
 * `privateKey` is not a key the client can sign with: a public key, a certificate, an
 * encrypted key, not PEM at all, or a key type no JWS algorithm here uses. A programming
 * or configuration error (hence a TypeError), thrown by the ConnectClient constructor.
 * `reason` says what was given instead, as a predicate ("holds a public key, ..."),
 * so a caller can name its own source: "this file holds a public key, ...".
 */
export class InvalidPrivateKeyError extends TypeError {
  constructor(readonly reason: string) {
    super(`privateKey must be ${PRIVATE_KEY_EXPECTED} or a private KeyObject; the value given ${reason}`);
    this.name = 'InvalidPrivateKeyError';
  }
}

/** Why a PEM string that createPrivateKey refused is not a private key, in words (OpenSSL only says "DECODER routines::unsupported"). */
function pemProblem(pem: string, openSslMessage: string): string {
  if (pem.trim() === '') return 'is empty';
  const labels = [...pem.matchAll(/-----BEGIN ([A-Z0-9 ]+)-----/g)].map((m) => m[1]!);
  if (labels.length === 0) return 'is not PEM: there is no "-----BEGIN PRIVATE KEY-----" (or "-----BEGIN RSA PRIVATE KEY-----") line';
  if (labels.some((l) => l.endsWith('PUBLIC KEY'))) return 'holds a public key (the half registered with the server), not the private key';
  if (labels.includes('CERTIFICATE')) return 'holds a certificate, not the private key';
  if (labels.includes('ENCRYPTED PRIVATE KEY') || /Proc-Type:\s*4,ENCRYPTED/.test(pem)) {
    return 'holds a passphrase-protected private key, which the client cannot decrypt: decrypt it first (openssl pkey -in KEY -out PLAIN_KEY)';
  }
  if (labels.includes('OPENSSH PRIVATE KEY')) return 'holds an OpenSSH private key: convert it to PKCS#8 first (ssh-keygen -p -m PKCS8 -f KEY)';
  return `holds a "${labels[0]}" PEM block that is not a readable private key (${openSslMessage})`;
}

export function toPrivateKey(key: string | KeyObject): KeyObject {
  let keyObject: KeyObject;
  if (typeof key === 'string') {
    try {
      keyObject = createPrivateKey(key);
    } catch (err) {
      throw new InvalidPrivateKeyError(pemProblem(key, (err as Error).message));
    }
  } else if (key && typeof key === 'object' && 'type' in key && typeof key.export === 'function') {
    keyObject = key;
  } else {
    throw new InvalidPrivateKeyError(key === undefined || key === null ? 'is missing' : `is a ${typeof key}, neither a PEM string nor a KeyObject`);
  }
  if (keyObject.type === 'public') throw new InvalidPrivateKeyError('is a public KeyObject (the half registered with the server), not the private key');
  if (keyObject.type !== 'private') throw new InvalidPrivateKeyError(`is a ${keyObject.type} KeyObject, not an asymmetric private key`);
  // Refused now rather than at the first token request, where the server's "Client authentication
  // failed" would not say why.
  try {
    algorithmFor(keyObject);
  } catch (err) {
    throw new InvalidPrivateKeyError(err instanceof UnsupportedKeyError ? `holds ${err.key}` : `holds a key no client assertion can be signed with (${(err as Error).message})`);
  }
  return keyObject;
}

export interface AssertionInput {
  clientId: string;
  tokenUrl: string;
  key: KeyObject;
  keyId?: string;
}

/** The client assertion the token endpoint wants: iss = sub = client id, aud = token URL, a fresh jti, 60 s. */
export function signClientAssertion({ clientId, tokenUrl, key, keyId }: AssertionInput, now = Date.now()): Promise<string> {
  const iat = Math.floor(now / 1000);
  return new SignJWT({})
    .setProtectedHeader({ alg: algorithmFor(key), typ: 'JWT', ...(keyId ? { kid: keyId } : {}) })
    .setIssuer(clientId)
    .setSubject(clientId)
    .setAudience(tokenUrl)
    .setJti(randomUUID())
    .setIssuedAt(iat)
    .setExpirationTime(iat + 60)
    .sign(key);
}

export interface IssuedToken {
  accessToken: string;
  expiresInSeconds: number;
}

/**
 * One access token for the whole client: cached until shortly before it expires,
 * and fetched once however many calls ask at the same moment (they all await the
 * same request), so a burst of 100 calls costs one token request, not 100.
 */
export class AccessTokenSource {
  private current: { token: string; refreshAt: number } | undefined;
  private pending: Promise<string> | undefined;

  constructor(
    private readonly issue: () => Promise<IssuedToken>,
    private readonly now: () => number = Date.now,
  ) {}

  get(): Promise<string> {
    if (this.current && this.now() < this.current.refreshAt) return Promise.resolve(this.current.token);
    this.pending ??= this.issue()
      .then(({ accessToken, expiresInSeconds }) => {
        // Refresh a minute early (half the lifetime for short-lived tokens): a call
        // made just before expiry must not reach the server with a dead token.
        const margin = Math.min(60, expiresInSeconds / 2) * 1000;
        this.current = { token: accessToken, refreshAt: this.now() + expiresInSeconds * 1000 - margin };
        return accessToken;
      })
      .finally(() => {
        this.pending = undefined;
      });
    return this.pending;
  }

  /**
   * The server refused `token` (expired early, signing key rotated, revoked). Drop it,
   * but only if it is still the cached one: when 100 calls all get a 401 for the same
   * token, the first drops it and the other 99 reuse the single refresh.
   */
  invalidate(token: string): void {
    if (this.current?.token === token) this.current = undefined;
  }
}
