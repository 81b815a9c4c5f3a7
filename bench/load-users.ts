/**
 * The load generator, run as a child process so it never shares an event loop
 * with what it measures: autocannon against POST /users (creates, settings
 * changes, no-ops), POST /oauth/token, or a fixed route, for a number of rounds;
 * at an offered rate, a paced open loop of its own over node:http.
 */
import { createPrivateKey, randomUUID } from 'node:crypto';
import { Agent, request } from 'node:http';
import autocannon from 'autocannon';
import { SignJWT } from 'jose';
import { childMain, isMain } from './bench-child.ts';
import { LOCALE_A, LOCALE_B, upsertBody } from './bench-users.ts';
import { inFlightFor, pacedLoop, pacedStats, type RoundStats } from './round-stats.ts';

export type LoadKind = 'create' | 'update' | 'noop' | 'token' | 'fixed';

export interface LoadSpec {
  kind: LoadKind;
  url: string;
  connections: number;
  durationSec: number;
  rounds: number;
  /** An unmeasured round first (JIT, pools, caches); 0: none. */
  warmupSec: number;
  /** A fixed number of requests per round instead of `durationSec` (tokens size their own rounds). */
  amount?: number;
  headers?: Record<string, string>;
  /** create: unique ids `${idPrefix}-r${round}-${n}`; update/noop: the pre-created set `${idPrefix}-${0..userCount-1}`, cycled in order across runs. */
  idPrefix?: string;
  userCount?: number;
  /** Open loop: one request every 1/overallRate s (at most inFlightFor(rate) in flight, `connections` ignored) instead of closed-loop as fast as possible. */
  overallRate?: number;
  /** Record when each answer arrived, by external_provider_id (end-to-end latency). */
  recordAnswers?: boolean;
  /**
   * Each assertion is single use, so token rounds are a fixed count, signed before the
   * timed part: the warm-up is `warmup` tokens, then each round gets enough tokens to
   * last about 1.25 `durationSec` at the fastest rate seen so far (within min..maxPerRound).
   */
  token?: { clientId: string; privateKeyPem: string; audience: string; warmup: number; minPerRound: number; maxPerRound: number };
  fixedBody?: string;
}

export interface LoadResult {
  rounds: RoundStats[];
  answers?: Record<string, number>;
  statuses: Record<string, number>;
  /** Requests answered in the warm-up round (for CPU per request over the whole run). */
  warmupRequests?: number;
}

const nowMs = () => performance.timeOrigin + performance.now();

/** Signs `count` assertions, 64 at a time (jose signs through WebCrypto, on libuv's threads). */
async function signAssertions(t: NonNullable<LoadSpec['token']>, count: number): Promise<string[]> {
  const key = createPrivateKey(t.privateKeyPem);
  const now = Math.floor(Date.now() / 1000);
  const signOne = () =>
    new SignJWT({ jti: randomUUID() })
      .setProtectedHeader({ alg: 'RS256', typ: 'JWT' })
      .setIssuer(t.clientId)
      .setSubject(t.clientId)
      .setAudience(t.audience)
      .setIssuedAt(now)
      .setExpirationTime(now + 290)
      .sign(key);
  const out: string[] = [];
  while (out.length < count) out.push(...(await Promise.all(Array.from({ length: Math.min(64, count - out.length) }, signOne))));
  return out;
}

/**
 * What this process knows of each update set, kept across runs: the locale each user
 * has now (false: LOCALE_A, as seeded) and where the next run starts. A set is cycled
 * in order, one user after another, so with a set larger than the API's cache of
 * recent users every request meets a user the API touched longest ago (never cached);
 * and one set serves every update and no-op run, whatever ran before.
 */
const sets = new Map<string, { locales: boolean[]; cursor: number }>();
function setState(prefix: string, userCount: number): { locales: boolean[]; cursor: number } {
  let state = sets.get(prefix);
  if (!state || state.locales.length !== userCount) {
    state = { locales: new Array<boolean>(userCount).fill(false), cursor: 0 };
    sets.set(prefix, state);
  }
  return state;
}

export async function runLoad(spec: LoadSpec): Promise<LoadResult> {
  const statuses: Record<string, number> = {};
  const answers: Record<string, number> = {};
  // Every update flips its user's locale, so every update changes settings; a no-op sends the locale the user has.
  const set = spec.kind === 'update' || spec.kind === 'noop' ? setState(spec.idPrefix!, spec.userCount!) : { locales: [], cursor: 0 };
  const { locales } = set;
  let created = 0;
  const headers = { 'content-type': 'application/json', ...spec.headers };

  const body = (round: number, assertions: string[]): string => {
    switch (spec.kind) {
      case 'create':
        return upsertBody(`${spec.idPrefix}-r${round}`, created++, LOCALE_A);
      case 'update': {
        const i = set.cursor++ % spec.userCount!;
        locales[i] = !locales[i];
        return upsertBody(spec.idPrefix!, i, locales[i] ? LOCALE_B : LOCALE_A);
      }
      case 'noop': {
        const i = set.cursor++ % spec.userCount!;
        return upsertBody(spec.idPrefix!, i, locales[i] ? LOCALE_B : LOCALE_A);
      }
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
  const onAnswer = (status: number, resBody: string) => {
    statuses[status] = (statuses[status] ?? 0) + 1;
    if (spec.recordAnswers && status < 300) {
      answers[(JSON.parse(resBody) as { external_provider_id: string }).external_provider_id] = nowMs();
    }
  };

  /**
   * One autocannon run, as fast as the server answers. Throughput is our own clock:
   * responses over the time from the first request built to the last response, not
   * autocannon's `duration`, which only ends on a sampling tick (a fixed-count round
   * of 0.6 s used to read as 1.01 s).
   */
  const closedRound = async (round: number, limit: { durationSec: number } | { amount: number }, assertions: string[] = []): Promise<RoundStats> => {
    let first = NaN;
    let last = NaN;
    let responses = 0;
    const options: autocannon.Options = {
      url: spec.url,
      method: 'POST',
      connections: 'amount' in limit ? Math.min(spec.connections, limit.amount) : spec.connections,
      headers,
      // Ticks every 25 ms, so a round ends within 25 ms of its end rather than on the next whole second.
      sampleInt: 25,
      ...('amount' in limit ? { amount: limit.amount } : { duration: limit.durationSec }),
      requests: [
        {
          setupRequest: (req) => {
            if (Number.isNaN(first)) first = performance.now();
            return { ...req, body: body(round, assertions) };
          },
          onResponse: (status, resBody) => {
            last = performance.now();
            responses++;
            onAnswer(status, resBody);
          },
        },
      ],
    };
    const r = await autocannon(options);
    return {
      rps: responses > 0 ? responses / ((last - first) / 1000) : 0,
      p50: r.latency.p50,
      p99: r.latency.p99,
      p999: r.latency.p99_9 ?? (r.latency as unknown as Record<string, number>)['p99.9'] ?? NaN,
      requests: responses,
      errors: r.errors + r.timeouts,
      non2xx: r.non2xx,
    };
  };

  /**
   * An offered rate: one request every 1/rate s, at most inFlightFor(rate) in flight (the
   * driver baseline's open loop, over keep-alive HTTP). autocannon's overallRate is no
   * fixed rate: each connection sends its whole per-second quota back to back at the
   * start of every second. The round reports what it offered (sent/s) and achieved.
   */
  const maxInFlight = spec.overallRate ? inFlightFor(spec.overallRate) : 0;
  const agent = spec.overallRate ? new Agent({ keepAlive: true, maxSockets: maxInFlight }) : undefined;
  const pacedRound = async (round: number, durationSec: number): Promise<RoundStats> => {
    const target = new URL(spec.url);
    const latencies: number[] = [];
    let errors = 0;
    let non2xx = 0;
    const one = () =>
      new Promise<void>((resolve) => {
        const payload = body(round, []);
        const t = performance.now();
        const req = request(
          { agent, host: target.hostname, port: target.port, path: target.pathname, method: 'POST', headers: { ...headers, 'content-length': Buffer.byteLength(payload) } },
          (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c));
            res.on('end', () => {
              latencies.push(performance.now() - t);
              const status = res.statusCode ?? 0;
              if (status < 200 || status >= 300) non2xx++;
              onAnswer(status, Buffer.concat(chunks).toString());
              resolve();
            });
            res.on('error', () => {
              errors++;
              resolve();
            });
          },
        );
        req.setTimeout(10_000, () => req.destroy(new Error('timeout')));
        req.on('error', () => {
          errors++;
          resolve();
        });
        req.end(payload);
      });
    const run = await pacedLoop(spec.overallRate!, maxInFlight, performance.now() + durationSec * 1000, one);
    return pacedStats(run, latencies, errors, non2xx);
  };

  const rounds: RoundStats[] = [];
  try {
    if (spec.kind === 'token') {
      // Each round is sized from the fastest rate seen so far, and its assertions are signed
      // before it starts (the API is idle meanwhile), so the timed part is only requests.
      const t = spec.token!;
      let fastest = (await closedRound(-1, { amount: t.warmup }, await signAssertions(t, t.warmup))).rps;
      for (const k of Object.keys(statuses)) delete statuses[k];
      for (let r = 0; r < spec.rounds; r++) {
        const perRound = Math.max(t.minPerRound, Math.min(t.maxPerRound, Math.ceil(fastest * spec.durationSec * 1.25)));
        const round = await closedRound(r, { amount: perRound }, await signAssertions(t, perRound));
        fastest = Math.max(fastest, round.rps);
        rounds.push(round);
      }
      return { rounds, statuses };
    }
    const oneRound = (round: number, durationSec: number) =>
      spec.overallRate ? pacedRound(round, durationSec) : closedRound(round, spec.amount ? { amount: spec.amount } : { durationSec });
    const warmupRequests = spec.warmupSec > 0 ? (await oneRound(-1, spec.warmupSec)).requests : 0;
    for (const k of Object.keys(statuses)) delete statuses[k];
    for (const k of Object.keys(answers)) delete answers[k];
    for (let r = 0; r < spec.rounds; r++) rounds.push(await oneRound(r, spec.durationSec));
    if (!spec.overallRate && !spec.amount) {
      // autocannon drops the requests in flight when a timed run ends; the server still
      // finishes them. Give it 1.5 times the worst p99 (at most 3 s) before the next
      // scenario, whose first operations would otherwise meet them at the database (on
      // FerretDB, the API's last 50 updates plus the driver's first ones held every
      // PostgreSQL connection, waiting for a second one, for good).
      const settleMs = Math.min(3000, 1.5 * Math.max(0, ...rounds.map((x) => x.p99).filter(Number.isFinite)));
      await new Promise((r) => setTimeout(r, settleMs));
    }
    return { rounds, statuses, warmupRequests, ...(spec.recordAnswers ? { answers } : {}) };
  } finally {
    agent?.destroy();
  }
}

if (isMain(import.meta.url)) await childMain(runLoad);
