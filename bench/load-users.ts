/**
 * The load generator, run as a child process so it never shares an event loop
 * with what it measures: autocannon against POST /users (creates, settings
 * changes, no-ops), POST /oauth/token, or a fixed route, for a number of rounds.
 */
import { createPrivateKey, randomUUID } from 'node:crypto';
import autocannon from 'autocannon';
import { SignJWT } from 'jose';
import { childMain, isMain } from './bench-child.ts';
import { LOCALE_A, LOCALE_B, upsertBody } from './bench-users.ts';
import type { RoundStats } from './round-stats.ts';

export type LoadKind = 'create' | 'update' | 'noop' | 'token' | 'fixed';

export interface LoadSpec {
  kind: LoadKind;
  url: string;
  connections: number;
  durationSec: number;
  rounds: number;
  /** An unmeasured round first (JIT, pools, caches). */
  warmupSec: number;
  headers?: Record<string, string>;
  /** create: unique ids `${idPrefix}-r${round}-${n}`; update/noop: the pre-created set `${idPrefix}-${0..userCount-1}`. */
  idPrefix?: string;
  userCount?: number;
  /** Open-loop offered rate (requests/s over all connections) instead of closed-loop as fast as possible. */
  overallRate?: number;
  /** Record when each answer arrived, by external_provider_id (end-to-end latency). */
  recordAnswers?: boolean;
  token?: { clientId: string; privateKeyPem: string; audience: string; perRound: number };
  fixedBody?: string;
}

export interface LoadResult {
  rounds: RoundStats[];
  answers?: Record<string, number>;
  statuses: Record<string, number>;
}

const nowMs = () => performance.timeOrigin + performance.now();

async function signAssertions(t: NonNullable<LoadSpec['token']>, count: number): Promise<string[]> {
  const key = createPrivateKey(t.privateKeyPem);
  const now = Math.floor(Date.now() / 1000);
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    out.push(
      await new SignJWT({ jti: randomUUID() })
        .setProtectedHeader({ alg: 'RS256', typ: 'JWT' })
        .setIssuer(t.clientId)
        .setSubject(t.clientId)
        .setAudience(t.audience)
        .setIssuedAt(now)
        .setExpirationTime(now + 290)
        .sign(key),
    );
  }
  return out;
}

export async function runLoad(spec: LoadSpec): Promise<LoadResult> {
  const statuses: Record<string, number> = {};
  const answers: Record<string, number> = {};
  // Per-user locale of the update set: every update flips it, so every request changes settings.
  const locales = new Array<boolean>(spec.userCount ?? 0).fill(false);
  let cursor = 0;
  let created = 0;

  const oneRound = async (round: number, durationSec: number): Promise<RoundStats> => {
    const assertions = spec.kind === 'token' ? await signAssertions(spec.token!, spec.token!.perRound) : [];
    const headers = { 'content-type': 'application/json', ...spec.headers };
    const body = (): string => {
      switch (spec.kind) {
        case 'create':
          return upsertBody(`${spec.idPrefix}-r${round}`, created++, LOCALE_A);
        case 'update': {
          const i = cursor++ % spec.userCount!;
          locales[i] = !locales[i];
          return upsertBody(spec.idPrefix!, i, locales[i] ? LOCALE_B : LOCALE_A);
        }
        case 'noop':
          return upsertBody(spec.idPrefix!, cursor++ % spec.userCount!, LOCALE_A);
        case 'token':
          return JSON.stringify({
            grant_type: 'client_credentials',
            client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
            client_assertion: assertions.pop(),
          });
        case 'fixed':
          return spec.fixedBody ?? '{}';
      }
    };
    const options: autocannon.Options = {
      url: spec.url,
      method: 'POST',
      connections: spec.connections,
      headers,
      ...(spec.kind === 'token' ? { amount: spec.token!.perRound } : { duration: durationSec }),
      ...(spec.overallRate ? { overallRate: spec.overallRate } : {}),
      requests: [
        {
          setupRequest: (req) => ({ ...req, body: body() }),
          onResponse: (status, resBody) => {
            statuses[status] = (statuses[status] ?? 0) + 1;
            if (spec.recordAnswers && status < 300) {
              answers[(JSON.parse(resBody) as { external_provider_id: string }).external_provider_id] = nowMs();
            }
          },
        },
      ],
    };
    const r = await autocannon(options);
    return {
      rps: r.requests.total / r.duration,
      p50: r.latency.p50,
      p99: r.latency.p99,
      p999: r.latency.p99_9 ?? (r.latency as unknown as Record<string, number>)['p99.9'] ?? NaN,
      requests: r.requests.total,
      errors: r.errors + r.timeouts,
      non2xx: r.non2xx,
    };
  };

  if (spec.warmupSec > 0 && spec.kind !== 'token') await oneRound(-1, spec.warmupSec);
  else if (spec.kind === 'token') await oneRound(-1, 0);
  for (const k of Object.keys(statuses)) delete statuses[k];
  for (const k of Object.keys(answers)) delete answers[k];
  const rounds: RoundStats[] = [];
  for (let r = 0; r < spec.rounds; r++) rounds.push(await oneRound(r, spec.durationSec));
  return { rounds, statuses, ...(spec.recordAnswers ? { answers } : {}) };
}

if (isMain(import.meta.url)) await childMain(runLoad);
