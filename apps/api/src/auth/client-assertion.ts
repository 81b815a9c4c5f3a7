import { decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose';
import { collectionOf, isDuplicateKeyError, type Models } from '@connect/shared';
import type { ActiveClient, ClientDirectory } from './client-directory.ts';
import type { ClientKeys } from './client-keys.ts';

/** RS256 must work (the real service requires it); the others may. `none` and HMAC never. */
export const ASSERTION_ALGORITHMS = ['RS256', 'PS256', 'ES256', 'EdDSA'];
const MAX_LIFETIME_S = 300;
const SKEW_S = 30;

/**
 * Why an assertion was refused, for the logs only: the client is told nothing
 * more than `invalid_client` (docs/contract.md: the description never helps an attacker).
 */
export class AssertionRejected extends Error {
  constructor(readonly reason: string) {
    super(reason);
  }
}

export interface AssertionCheckDeps {
  models: Models;
  clients: ClientDirectory;
  keys: ClientKeys;
  /** Accepted audiences: the token endpoint URL and the issuer. */
  audiences: string[];
}

/**
 * RFC 7523 client authentication as docs/contract.md states it: iss = sub = a known,
 * enabled client; aud the token URL or the issuer; exp in the future and at most
 * 5 minutes after iat; iat not in the future (30 s skew); jti never accepted twice
 * before its exp; a signature by the client's key.
 */
export async function verifyClientAssertion(
  deps: AssertionCheckDeps,
  assertion: string,
  formClientId: string | undefined,
): Promise<ActiveClient> {
  let iss: unknown;
  try {
    const header = decodeProtectedHeader(assertion);
    if (typeof header.alg !== 'string' || !ASSERTION_ALGORITHMS.includes(header.alg)) throw new AssertionRejected(`algorithm ${String(header.alg)}`);
    iss = decodeJwt(assertion).iss;
  } catch (err) {
    throw err instanceof AssertionRejected ? err : new AssertionRejected('not a JWT');
  }
  if (typeof iss !== 'string' || iss.length === 0 || iss.length > 200) throw new AssertionRejected('no iss');
  if (formClientId !== undefined && formClientId !== iss) throw new AssertionRejected('client_id differs from iss');

  const active = await deps.clients.fresh(iss);
  if (!active) throw new AssertionRejected('unknown or disabled client');

  let payload;
  try {
    ({ payload } = await jwtVerify(assertion, deps.keys.keyFor(active.client) as Parameters<typeof jwtVerify>[1], {
      algorithms: ASSERTION_ALGORITHMS,
      issuer: iss,
      subject: iss,
      audience: deps.audiences,
      clockTolerance: SKEW_S,
      requiredClaims: ['exp', 'iat', 'jti'],
    }));
  } catch (err) {
    throw new AssertionRejected(`verification: ${(err as { code?: string }).code ?? (err as Error).message}`);
  }
  const now = Math.floor(Date.now() / 1000);
  const { exp, iat, jti } = payload as { exp: number; iat: number; jti: unknown };
  if (typeof jti !== 'string' || jti.length === 0 || jti.length > 256) throw new AssertionRejected('bad jti');
  if (iat > now + SKEW_S) throw new AssertionRejected('iat in the future');
  if (exp - iat > MAX_LIFETIME_S) throw new AssertionRejected('lifetime over 5 minutes');
  if (exp <= now - SKEW_S) throw new AssertionRejected('expired');

  // Single use: the first insert of (client, jti) wins, on every instance.
  try {
    await collectionOf(deps.models.UsedAssertion).insertOne({
      _id: `${iss}:${jti}`,
      expires_at: new Date((exp + SKEW_S) * 1000),
    });
  } catch (err) {
    if (isDuplicateKeyError(err)) throw new AssertionRejected('replayed jti');
    throw err;
  }
  return active;
}
