/**
 * The token endpoint's limit: a bare loop doing what a token costs in crypto, the
 * same jose verify of an RS256 client assertion (same checks) and the same jose
 * sign of an access token with an Ed25519 key (the service key the API generates
 * when TOKEN_SIGNING_KEY is unset), N at a time, in one process.
 */
import { createPublicKey, generateKeyPairSync, randomUUID } from 'node:crypto';
import { jwtVerify, SignJWT } from 'jose';
import { childMain, isMain } from './bench-child.ts';
import { statsOf, type RoundStats } from './round-stats.ts';

export interface TokenBaselineSpec {
  assertions: string[];
  publicKeyPem: string;
  audience: string;
  concurrency: number;
  durationSec: number;
  rounds: number;
  warmupSec: number;
}

export async function runTokenBaseline(spec: TokenBaselineSpec): Promise<{ rounds: RoundStats[] }> {
  const clientKey = createPublicKey(spec.publicKeyPem);
  const { privateKey } = generateKeyPairSync('ed25519');
  let next = 0;
  const issueOne = async () => {
    const assertion = spec.assertions[next++ % spec.assertions.length]!;
    const { payload } = await jwtVerify(assertion, clientKey, {
      algorithms: ['RS256', 'PS256', 'ES256', 'EdDSA'],
      audience: spec.audience,
      clockTolerance: 30,
      requiredClaims: ['exp', 'iat', 'jti'],
    });
    const now = Math.floor(Date.now() / 1000);
    await new SignJWT({ org_id: 'org', client_id: payload.iss })
      .setProtectedHeader({ alg: 'EdDSA', kid: 'k', typ: 'at+jwt' })
      .setIssuer(spec.audience)
      .setAudience(spec.audience)
      .setSubject(payload.iss!)
      .setIssuedAt(now)
      .setExpirationTime(now + 3600)
      .setJti(randomUUID())
      .sign(privateKey);
  };
  const oneRound = async (seconds: number): Promise<RoundStats> => {
    const latencies: number[] = [];
    let errors = 0;
    const started = performance.now();
    const deadline = started + seconds * 1000;
    await Promise.all(
      Array.from({ length: spec.concurrency }, async () => {
        while (performance.now() < deadline) {
          const t = performance.now();
          try {
            await issueOne();
            latencies.push(performance.now() - t);
          } catch {
            errors++;
          }
        }
      }),
    );
    return statsOf(latencies, (performance.now() - started) / 1000, errors);
  };
  if (spec.warmupSec > 0) await oneRound(spec.warmupSec);
  const rounds: RoundStats[] = [];
  for (let r = 0; r < spec.rounds; r++) rounds.push(await oneRound(spec.durationSec));
  return { rounds };
}

if (isMain(import.meta.url)) await childMain(runTokenBaseline);
