import { createPrivateKey, randomUUID, type KeyObject } from 'node:crypto';
import { SignJWT } from 'jose';

/** The JWS algorithm a private key signs with: RS256 for RSA (what every server accepts), else from the key type. */
export function algorithmFor(key: KeyObject): string {
  switch (key.asymmetricKeyType) {
    case 'rsa':
      return 'RS256';
    case 'rsa-pss':
      return 'PS256';
    case 'ec': {
      const curve = key.asymmetricKeyDetails?.namedCurve;
      if (curve === 'prime256v1') return 'ES256';
      if (curve === 'secp384r1') return 'ES384';
      if (curve === 'secp521r1') return 'ES512';
      throw new Error(`unsupported EC curve ${curve}: use P-256, P-384 or P-521`);
    }
    case 'ed25519':
      return 'EdDSA';
    default:
      throw new Error(`unsupported key type ${key.asymmetricKeyType}: use an RSA, EC or Ed25519 private key`);
  }
}

export function toPrivateKey(key: string | KeyObject): KeyObject {
  const keyObject = typeof key === 'string' ? createPrivateKey(key) : key;
  if (keyObject.type !== 'private') throw new Error('privateKey must be a private key (PEM or KeyObject)');
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
