import { randomUUID } from 'node:crypto';
import { jwtVerify, SignJWT } from 'jose';
import { LRUCache } from 'lru-cache';
import type { ServiceSigningKey } from './service-signing-key.ts';

export interface AccessTokenClaims {
  clientId: string;
  organizationId: string;
  /** When the token was issued (`iat`, seconds). */
  issuedAt: number;
}

/**
 * Access tokens: JWTs signed with the service key, issuer and audience the
 * public base URL + base path, carrying the client and organization ids.
 */
export class AccessTokens {
  constructor(
    readonly key: ServiceSigningKey,
    private readonly issuer: string,
    readonly ttlSeconds: number,
  ) {}

  async issue(claims: Omit<AccessTokenClaims, 'issuedAt'>): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({ org_id: claims.organizationId, client_id: claims.clientId })
      .setProtectedHeader({ alg: this.key.alg, kid: this.key.kid, typ: 'at+jwt' })
      .setIssuer(this.issuer)
      .setAudience(this.issuer)
      .setSubject(claims.clientId)
      .setIssuedAt(now)
      .setExpirationTime(now + this.ttlSeconds)
      .setJti(randomUUID())
      .sign(this.key.privateKey);
  }

  /**
   * Tokens already verified, until they expire. A client keeps sending the same
   * token for its lifetime, and the signature check was the largest single cost of
   * a request in the benchmark's profile. Disabling a client does not depend on
   * this cache: the bearer path checks the client separately. Each entry lives
   * until its token's exp; at most 10,000, the least recently used out first.
   */
  private readonly verified = new LRUCache<string, AccessTokenClaims>({ max: 10_000 });

  /** Throws on anything but a token this service signed, unexpired, for this issuer. */
  async verify(token: string): Promise<AccessTokenClaims> {
    return this.verified.get(token) ?? this.verifySignature(token);
  }

  private async verifySignature(token: string): Promise<AccessTokenClaims> {
    const { payload } = await jwtVerify(token, this.key.publicKey, {
      algorithms: [this.key.alg],
      issuer: this.issuer,
      audience: this.issuer,
      typ: 'at+jwt',
      requiredClaims: ['exp', 'iat', 'sub'],
    });
    if (typeof payload.org_id !== 'string' || typeof payload.client_id !== 'string' || payload.client_id !== payload.sub) {
      throw new Error('access token lacks its claims');
    }
    const claims = { clientId: payload.client_id, organizationId: payload.org_id, issuedAt: payload.iat ?? 0 };
    const ttl = payload.exp! * 1000 - Date.now();
    if (ttl > 0) this.verified.set(token, claims, { ttl });
    return claims;
  }
}
