import { decodeJwt, decodeProtectedHeader, errors, jwtVerify, type JWTVerifyOptions, type JWTVerifyResult } from 'jose';
import type { KeyObject } from 'node:crypto';
import { collectionsOf, isDuplicateKeyError, scrubText, type Models } from '@connect/shared';
import type { ActiveClient, ClientDirectory } from './client-directory.ts';
import type { ClientKeys, RemoteKeySet } from './client-keys.ts';
import { isStorableText } from '../validator-compiler.ts';

/** RS256 must work (the real service requires it); the others may. `none` and HMAC never. */
export const ASSERTION_ALGORITHMS = ['RS256', 'PS256', 'ES256', 'EdDSA'];
const MAX_LIFETIME_S = 300;
const SKEW_S = 30;
/**
 * How long a used assertion's guard row outlives the assertion (its `expires_at`, when the purge
 * or MongoDB's TTL index deletes it, is exp + 30 s + this). This API refuses an expired assertion
 * by its own clock; the row is deleted by the database's. An API clock more than 30 s behind would
 * take as unexpired an assertion whose row was gone, and it could be used again (a clock audit did
 * it with a worker 5 minutes ahead). An hour covers clocks that far apart (docs/guarantees.md, Clocks).
 */
export const USED_ASSERTION_KEPT_MS = 3600_000;
const EXPIRED = "The assertion has expired (its exp is past by this server's clock): sign a new one for each token request.";

/** What the caller hears when the refusal must not say why: unknown client, disabled, wrong key. */
const UNSAID_REFUSAL = 'Client authentication failed.';

/**
 * Why an assertion was refused. The log always says which check failed. The caller hears it too
 * (`told`) only where that cannot help an attacker (docs/contract.md, token endpoint): a check that
 * does not depend on any client (the algorithm, the JWT's shape, iss's form), or one made after the
 * signature verified with the client's key, so only the key's holder can reach it (a claim, the
 * lifetime, a replayed jti). An unknown or disabled client and a key that does not verify read the
 * same: `UNSAID_REFUSAL`.
 */
export class AssertionRejected extends Error {
  constructor(
    readonly reason: string,
    /** The claim that failed, when one did; for `aud` the log also shows what was expected and received. */
    readonly claim?: string,
    readonly expected?: unknown,
    readonly received?: unknown,
    /** The error_description the caller gets; UNSAID_REFUSAL when absent. */
    readonly told: string = UNSAID_REFUSAL,
  ) {
    super(reason);
  }

  /** What the server log says: never the assertion itself, nor any key. */
  get logFields(): Record<string, unknown> {
    return {
      reason: this.reason,
      ...(this.claim ? { claim: this.claim } : {}),
      ...(this.expected !== undefined ? { expected: this.expected } : {}),
      ...(this.received !== undefined ? { received: this.received } : {}),
    };
  }
}

/**
 * A claim value as the log may show it: short, only strings or arrays of them,
 * and, being text the caller chose, with emails masked, URL credentials and JWTs (an
 * assertion pasted as a claim) removed, and nothing after a `?` or `#` (a query can carry a secret).
 */
function shown(value: unknown): unknown {
  const clip = (v: unknown) => (typeof v === 'string' ? scrubText(v.split(/[?#]/, 1)[0]!).slice(0, 200) : typeof v);
  return Array.isArray(value) ? value.slice(0, 5).map(clip) : clip(value);
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
  // Unverified until jwtVerify below: read only to say, in the log, which claim was wrong.
  let unverified: Record<string, unknown>;
  try {
    const header = decodeProtectedHeader(assertion);
    if (typeof header.alg !== 'string' || !ASSERTION_ALGORITHMS.includes(header.alg)) {
      throw new AssertionRejected('algorithm not accepted', 'alg', ASSERTION_ALGORITHMS, shown(header.alg), `The assertion's alg must be one of ${ASSERTION_ALGORITHMS.join(', ')}.`);
    }
    unverified = decodeJwt(assertion);
    iss = unverified.iss;
  } catch (err) {
    throw err instanceof AssertionRejected ? err : new AssertionRejected('not a JWT', undefined, undefined, undefined, 'client_assertion is not a signed JWT (three base64url parts: header, claims, signature).');
  }
  // Checked before the client is looked up: a claim no client id can hold (a NUL, a lone surrogate)
  // is a bad assertion, not a question for the database (FerretDB fails on a NUL).
  if (typeof iss !== 'string' || iss.length === 0 || iss.length > 200 || !isStorableText(iss)) {
    throw new AssertionRejected('missing or malformed', 'iss', undefined, undefined, "The assertion's iss, the client id, is missing or malformed.");
  }
  if (formClientId !== undefined && formClientId !== iss) throw new AssertionRejected('client_id differs from iss', 'iss', undefined, undefined, "The client id sent beside the assertion (client_id, or Basic credentials) must equal its iss.");

  const active = await deps.clients.fresh(iss);
  if (!active) throw new AssertionRejected('unknown or disabled client', 'iss', undefined, shown(iss));

  let payload;
  try {
    ({ payload } = await verifyWithAnyKey(assertion, deps.keys.keyFor(active.client), {
      algorithms: ASSERTION_ALGORITHMS,
      issuer: iss,
      subject: iss,
      audience: deps.audiences,
      // For nbf; exp is checked again below without it.
      clockTolerance: SKEW_S,
      requiredClaims: ['exp', 'iat', 'jti'],
    }));
  } catch (err) {
    const { code, claim } = err as { code?: string; claim?: string };
    // jose checks the claims only once the signature verified: what follows is said to the caller.
    if (code === 'ERR_JWT_EXPIRED') throw new AssertionRejected('expired', 'exp', undefined, undefined, EXPIRED);
    if (code === 'ERR_JWT_CLAIM_VALIDATION_FAILED' && claim) {
      // The commonest mistake: an audience of 127.0.0.1 where the server is known as localhost.
      if (claim === 'aud') {
        const told = `The assertion's aud must be ${deps.audiences.join(' or ')}: the URL this server knows itself by, whatever name reached it.`;
        throw new AssertionRejected('audience not accepted', 'aud', deps.audiences, shown(unverified.aud), told);
      }
      const message = (err as Error).message;
      const told = /^missing required/.test(message)
        ? `The assertion must carry ${claim}.`
        : claim === 'sub'
          ? "The assertion's sub must equal its iss, the client id."
          : claim === 'nbf' && /timestamp check failed/.test(message)
            ? "The assertion's nbf is more than 30 s in the future by this server's clock (the Date header): set the signing machine's clock right, or leave nbf out."
            : `The assertion's ${claim} was refused: ${message}.`;
      throw new AssertionRejected(message, claim, undefined, claim === 'sub' ? shown(unverified.sub) : undefined, told);
    }
    if (code === 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED') throw new AssertionRejected('signature does not verify with the client key');
    // A JWKS that could not be read is jose's generic error: its message says why (answered 500, too large, timed out).
    throw new AssertionRejected(`verification: ${code === undefined || code === 'ERR_JOSE_GENERIC' ? (err as Error).message : code}`);
  }
  const now = Math.floor(Date.now() / 1000);
  const { exp, iat, jti } = payload as { exp: number; iat: number; jti: unknown };
  // Verified with the client's key: what fails from here on is said to the caller.
  if (typeof jti !== 'string' || jti.length === 0 || jti.length > 256 || !isStorableText(jti)) {
    throw new AssertionRejected('missing or malformed', 'jti', undefined, undefined, "The assertion's jti must be a string of 1 to 256 characters, new for each assertion.");
  }
  if (iat > now + SKEW_S) throw new AssertionRejected('in the future', 'iat', undefined, undefined, "The assertion's iat is in the future by this server's clock (the Date header): set the signing machine's clock right.");
  if (exp - iat > MAX_LIFETIME_S) throw new AssertionRejected('lifetime over 5 minutes', 'exp', undefined, undefined, "The assertion's exp must be at most 5 minutes after its iat.");
  // The skew allowance is for iat (a client clock a little ahead); exp must be in the future.
  if (exp <= now) throw new AssertionRejected('expired', 'exp', undefined, undefined, EXPIRED);

  // Single use: the first insert of (client, jti) wins, on every instance.
  try {
    await collectionsOf(deps.models).usedAssertions.insertOne({
      _id: `${iss}:${jti}`,
      expires_at: new Date((exp + SKEW_S) * 1000 + USED_ASSERTION_KEPT_MS),
    });
  } catch (err) {
    if (isDuplicateKeyError(err)) throw new AssertionRejected('replayed jti', 'jti', undefined, undefined, 'This assertion was used already (its jti): sign a new one, with a new jti, for each token request.');
    throw err;
  }
  return active;
}

/**
 * jwtVerify with a client's key or its JWKS (see verifyWithCachedKeys); when the
 * signature does not verify with the cached set, the set is fetched again once
 * (within the refetch budget, client-keys.ts) and the assertion tried against what it holds now.
 */
async function verifyWithAnyKey(assertion: string, key: KeyObject | RemoteKeySet, options: JWTVerifyOptions): Promise<JWTVerifyResult> {
  try {
    return await verifyWithCachedKeys(assertion, key, options);
  } catch (err) {
    // The set is fetched again by itself only when no cached key matches the header (an unknown kid).
    // An assertion without kid (the public sample client's) matches the cached keys of its type,
    // so one signed by a key the client published since (beside the old one, as the README says)
    // failed as a bad signature until the cache aged out (10 min). Fetch the set again, within
    // the same budget as for an unknown kid, and try once more.
    if (typeof key !== 'function' || (err as { code?: string }).code !== 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' || !(await key.refetch())) throw err;
    return verifyWithCachedKeys(assertion, key, options);
  }
}

/** Keys of a JWKS an assertion without `kid` is tried against (docs/contract.md). */
export const MAX_KEYS_TRIED = 10;

/**
 * jwtVerify with a client's key, or with its JWKS when several of its keys
 * match the assertion's header: an assertion without `kid` (the public sample
 * client sends none) against a JWKS that holds the old and the new key during
 * a rotation. jose then raises ERR_JWKS_MULTIPLE_MATCHING_KEYS, which yields
 * the candidates; the assertion is accepted when one of them verifies it.
 */
async function verifyWithCachedKeys(assertion: string, key: KeyObject | RemoteKeySet, options: JWTVerifyOptions): Promise<JWTVerifyResult> {
  try {
    // Two calls only for the compiler: jwtVerify's overloads take a key or a key-set function, not their union.
    return await (typeof key === 'function' ? jwtVerify(assertion, key, options) : jwtVerify(assertion, key, options));
  } catch (err) {
    if ((err as { code?: string }).code !== 'ERR_JWKS_MULTIPLE_MATCHING_KEYS') throw err;
    let tried = 0;
    for await (const candidate of err as errors.JWKSMultipleMatchingKeys) {
      // Each try is a key import and a signature check: a set of 141 keys made an unsigned
      // assertion cost ~90 ms of CPU. A rotation needs two or three; past the bound, send a kid.
      if (++tried > MAX_KEYS_TRIED) break;
      try {
        return await jwtVerify(assertion, candidate, options);
      } catch (inner) {
        if ((inner as { code?: string }).code !== 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED') throw inner;
      }
    }
    throw new errors.JWSSignatureVerificationFailed();
  }
}
