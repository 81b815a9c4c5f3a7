/**
 * `pnpm bench [--quick] [--cpu-prof]`: measures the service against its limits,
 * side by side in one run (see issue 5), and writes bench/results/latest.{json,md}.
 *
 * Order: POST /users (API, then the bare driver, then bare Fastify, per
 * concurrency), p99 at half the peak rate, the token endpoint against bare jose,
 * end to end through the worker, memory after a second identical run, growth.
 */
import { cpus } from 'node:os';
import { MongoClient } from 'mongodb';
import { Redis } from 'ioredis';
import { fetchAccessToken, registerBenchClient, signAssertion, type BenchClient } from './bench-auth.ts';
import { runBenchChild, spawnTs, BENCH_DIR } from './bench-child.ts';
import { seedUsers } from './bench-users.ts';
import type { DriverSpec } from './driver-baseline.ts';
import { runEndToEnd, startReceiver } from './end-to-end.ts';
import type { LoadResult, LoadSpec } from './load-users.ts';
import { writeReport, type Memory, type Ratio, type Row } from './report.ts';
import { summarise, type RoundStats, type Summary } from './round-stats.ts';
import { databaseUrl, newRunId, startApi, startDatastores, startWorkerProcess, type ApiProcess, type ServiceProcess } from './start-stack.ts';
import type { TokenBaselineSpec } from './token-baseline.ts';

const quick = process.argv.includes('--quick');
const cpuProfile = process.argv.includes('--cpu-prof');
const plan = quick
  ? { concurrencies: [32], roundSec: 1.5, warmupSec: 0.5, rounds: 3, tokensPerRound: 300, e2eRates: [10, 100], e2eSec: 2, growth: [2_000, 20_000], updateSet: 500 }
  : { concurrencies: [8, 32, 128], roundSec: 3, warmupSec: 1, rounds: 3, tokensPerRound: 1_000, e2eRates: [10, 100, 300], e2eSec: 3, growth: [10_000, 200_000], updateSet: 1_000 };
const HEADLINE = 32;
/** Growth is about the cost of one update, not queueing: a lower concurrency keeps rounds from being all queue. */
const GROWTH_CONCURRENCY = 8;
const OPS = ['create', 'update', 'noop'] as const;
type Op = (typeof OPS)[number];

const log = (msg: string) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
const runId = newRunId();
const rows: Row[] = [];
const notes: string[] = [];
const add = (group: string, scenario: string, concurrency: number | string, rounds: RoundStats[]): Summary => {
  const summary = summarise(rounds);
  rows.push({ group, scenario, concurrency, summary });
  log(`${group} ${scenario} c=${concurrency}: ${summary.rps.median.toFixed(0)} req/s, p50 ${summary.p50.median.toFixed(1)} ms, p99 ${summary.p99.median.toFixed(1)} ms`);
  return summary;
};

const stores = await startDatastores(runId);
const dbName = (part: string) => (stores.kind === 'mongo-url' ? `bench_${part}_${runId.replace(/-/g, '_')}` : `bench_${part}`);
const apiDb = databaseUrl(stores.mongoServerUrl, dbName('api'));
const e2eDb = databaseUrl(stores.mongoServerUrl, dbName('e2e'));
const mongo = await new MongoClient(apiDb).connect();
const buildInfo = await mongo.db().admin().command({ buildInfo: 1 });
const database = buildInfo.ferretdbVersion ? `FerretDB ${buildInfo.ferretdbVersion} (MongoDB ${buildInfo.version} wire), PostgreSQL backend` : `MongoDB ${buildInfo.version}`;
log(`database: ${database}; redis: ${stores.redisUrl}`);

const prefixes = [`bench-${runId}-load`, `bench-${runId}-e2e`, `bench-${runId}-growth`];
const started: ServiceProcess[] = [];
let receiverClose: (() => Promise<void>) | undefined;

async function cleanUp(): Promise<void> {
  await Promise.allSettled(started.map((p) => p.stop()));
  await receiverClose?.();
  const redis = new Redis(stores.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    for (const prefix of prefixes) {
      let cursor = '0';
      do {
        const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
        cursor = next;
        if (keys.length) await redis.del(...keys);
      } while (cursor !== '0');
    }
  } catch {
    /* nothing to clean */
  } finally {
    redis.disconnect();
  }
  if (stores.kind === 'mongo-url') for (const url of [apiDb, e2eDb, databaseUrl(stores.mongoServerUrl, dbName('growth'))]) await mongo.db(new URL(url).pathname.slice(1)).dropDatabase().catch(() => undefined);
  await mongo.close();
  await stores.stop();
}

// Ctrl-C or SIGTERM still stops FerretDB, the services and their data.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    log(`${signal}: cleaning up`);
    void cleanUp().finally(() => process.exit(130));
  });
}

try {
  // --- The API under load (no worker attached to its queue: its CPU is the API's alone) ---
  const api: ApiProcess = await startApi('api', { mongoUrl: apiDb, redisUrl: stores.redisUrl, queuePrefix: prefixes[0]!, cpuProfile });
  started.push(api);
  const client: BenchClient = await registerBenchClient(apiDb);
  const token = await fetchAccessToken(client, api.tokenUrl);
  const users = mongo.db().collection('provider_users');
  const authHeaders = { authorization: `Bearer ${token}`, 'x-nabla-api-version': '2026-03-23' };
  let setNo = 0;
  /** A fresh set of stored users (locale A) for update/no-op runs, so every update run knows each user's state. */
  const freshSet = async (label: string, count = plan.updateSet): Promise<string> => {
    const prefix = `${label}-${setNo++}`;
    await seedUsers(users, client.organizationId, prefix, 0, count);
    return prefix;
  };
  const apiLoad = async (op: Op, c: number, extra: Partial<LoadSpec> = {}): Promise<RoundStats[]> => {
    const spec: LoadSpec = {
      kind: op,
      url: `${api.baseUrl}/users`,
      connections: c,
      durationSec: plan.roundSec,
      rounds: plan.rounds,
      warmupSec: plan.warmupSec,
      headers: authHeaders,
      idPrefix: op === 'create' ? `create-${setNo++}` : await freshSet(op),
      userCount: plan.updateSet,
      ...extra,
    };
    const result = await runBenchChild<LoadResult>('load-users', spec);
    const odd = Object.entries(result.statuses).filter(([status]) => !status.startsWith('2'));
    if (odd.length) log(`${op} c=${c}: non-2xx answers ${JSON.stringify(Object.fromEntries(odd))}`);
    return result.rounds;
  };
  /** Updates with `target` users stored in the API's collection (filler plus a fresh update set). */
  const driverLoad = async (op: Op, c: number, extra: Partial<DriverSpec> = {}): Promise<RoundStats[]> =>
    (
      await runBenchChild<{ rounds: RoundStats[] }>('driver-baseline', {
        // The API's own collection (its indexes, its size), under an organization of the driver's own:
        // on FerretDB every lookup costs with the collection's size, so only the same collection compares.
        mongoUrl: apiDb,
        op,
        concurrency: c,
        durationSec: plan.roundSec,
        rounds: plan.rounds,
        warmupSec: plan.warmupSec,
        userCount: plan.updateSet,
        ...extra,
      } satisfies DriverSpec)
    ).rounds;


  const bare = spawnTs(`${BENCH_DIR}/bare-fastify.ts`, []);
  const barePort = await new Promise<number>((resolve, reject) => {
    let out = '';
    bare.stdout!.on('data', (d) => {
      out += d;
      const m = /"port":(\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    bare.once('exit', (code) => reject(new Error(`bare fastify exited ${code}`)));
  });
  started.push({ name: 'bare-fastify', process: bare, rssMiB: () => NaN, stderr: () => '', stop: async () => void bare.kill('SIGTERM') });

  const api_: Record<string, Summary> = {};
  const drv: Record<string, Summary> = {};
  const bareSummaries: Record<number, Summary> = {};
  const usersSuite = async (group: string, rounds: number) => {
    const out: Record<string, Summary> = {};
    for (const c of plan.concurrencies) for (const op of OPS) out[`${op}@${c}`] = add(group, `POST /users ${op}`, c, await apiLoad(op, c, { rounds }));
    return out;
  };
  for (const c of plan.concurrencies) {
    for (const op of OPS) {
      api_[`${op}@${c}`] = add('api', `POST /users ${op}`, c, await apiLoad(op, c));
      drv[`${op}@${c}`] = add('driver', op === 'create' ? 'insertOne' : `updateOne upsert (${op})`, c, await driverLoad(op, c));
    }
    bareSummaries[c] = add(
      'bare fastify',
      'POST fixed JSON',
      c,
      (
        await runBenchChild<LoadResult>('load-users', {
          kind: 'fixed',
          url: `http://127.0.0.1:${barePort}/users`,
          connections: c,
          durationSec: plan.roundSec,
          rounds: plan.rounds,
          warmupSec: plan.warmupSec,
          fixedBody: '{"provider_email":"jane.doe@example.com","external_provider_id":"ehr-42","settings":{"speech_locale":"ENGLISH_US"}}',
        } satisfies LoadSpec)
      ).rounds,
    );
  }

  // --- p99 at half the API's peak update rate, API and driver at the same offered rate ---
  const halfRate = Math.max(10, Math.round(api_[`update@${HEADLINE}`]!.rps.median / 2));
  const apiHalf = add('api', `POST /users update @ ${halfRate}/s offered`, HEADLINE, await apiLoad('update', HEADLINE, { overallRate: halfRate }));
  const drvHalf = add('driver', `updateOne upsert @ ${halfRate}/s offered`, HEADLINE, await driverLoad('update', HEADLINE, { rate: halfRate }));

  // --- Token endpoint against the bare jose loop ---
  const tokenApi = add(
    'api',
    'POST /oauth/token',
    HEADLINE,
    (
      await runBenchChild<LoadResult>('load-users', {
        kind: 'token',
        url: api.tokenUrl,
        connections: HEADLINE,
        durationSec: plan.roundSec,
        rounds: plan.rounds,
        warmupSec: plan.warmupSec,
        token: { clientId: client.clientId, privateKeyPem: client.privateKeyPem, audience: api.tokenUrl, warmup: plan.tokensPerRound / 2, minPerRound: plan.tokensPerRound, maxPerRound: 10 * plan.tokensPerRound },
      } satisfies LoadSpec)
    ).rounds,
  );
  const assertions = await Promise.all(Array.from({ length: 50 }, () => signAssertion(client, api.tokenUrl)));
  const tokenBare = add(
    'bare jose',
    'verify RS256 assertion + sign EdDSA token',
    HEADLINE,
    (
      await runBenchChild<{ rounds: RoundStats[] }>('token-baseline', {
        assertions,
        publicKeyPem: client.publicKeyPem,
        audience: api.tokenUrl,
        concurrency: HEADLINE,
        durationSec: plan.roundSec,
        rounds: plan.rounds,
        warmupSec: plan.warmupSec,
      } satisfies TokenBaselineSpec)
    ).rounds,
  );

  // --- End to end: a second API and the worker on a database and queue of their own ---
  const receiver = await startReceiver();
  receiverClose = receiver.close;
  const e2eEnv = {
    mongoUrl: e2eDb,
    redisUrl: stores.redisUrl,
    queuePrefix: prefixes[1]!,
    downstreamTargets: [{ name: 'bench', url: receiver.url, secrets: ['bench-secret-0123456789'] }],
    cpuProfile,
  };
  const [e2eApi, worker] = await Promise.all([startApi('api-e2e', e2eEnv), startWorkerProcess('worker', e2eEnv)]);
  started.push(e2eApi);
  if (worker) started.push(worker);
  const e2eSummaries: Record<number, Summary> = {};
  let e2eToken = '';
  let e2eRun = 0;
  const endToEnd = async (group: string) => {
    for (const rate of plan.e2eRates) {
      e2eSummaries[rate] = add(
        group,
        `answer → callback received @ ${rate}/s (req/s = delivered/s)`,
        16,
        // At least 100 events per round, so a median is over 100 events even at a low rate.
        await runEndToEnd(receiver, { baseUrl: e2eApi.baseUrl, token: e2eToken, rate, durationSec: Math.max(plan.e2eSec, Math.ceil(100 / rate)), rounds: plan.rounds, idPrefix: `e2e${e2eRun++}-${rate}`, drainTimeoutMs: 15_000 }),
      );
    }
  };
  let workerWorks = false;
  if (worker) {
    const e2eClient = await registerBenchClient(e2eDb);
    e2eToken = await fetchAccessToken(e2eClient, e2eApi.tokenUrl);
    const probe = await runEndToEnd(receiver, { baseUrl: e2eApi.baseUrl, token: e2eToken, rate: 5, durationSec: 1, rounds: 1, idPrefix: 'probe', drainTimeoutMs: 20_000 });
    workerWorks = probe[0]!.requests > 0 && probe[0]!.errors === 0;
    if (workerWorks) await endToEnd('end-to-end');
    else notes.push(`End to end skipped: the worker started but delivered ${probe[0]!.requests - probe[0]!.errors}/${probe[0]!.requests} probe events within 20 s.`);
  } else notes.push('End to end skipped: the worker did not start.');

  // --- Memory: RSS after the run, then after a second identical run of the API users suite and end to end ---
  const rss1 = { api: api.rssMiB(), worker: worker?.rssMiB() ?? NaN };
  // The quick run repeats the users suite with one round each and leaves end to end out, to stay short.
  await usersSuite('api (run 2)', quick ? 1 : plan.rounds);
  if (workerWorks && !quick) await endToEnd('end-to-end (run 2)');
  const rss2 = { api: api.rssMiB(), worker: worker?.rssMiB() ?? NaN };
  const memory: Memory[] = [{ process: 'api', afterFirstMiB: rss1.api, afterSecondMiB: rss2.api, growthPct: (rss2.api / rss1.api - 1) * 100 }];
  if (worker) memory.push({ process: 'worker', afterFirstMiB: rss1.worker, afterSecondMiB: rss2.worker, growthPct: (rss2.worker / rss1.worker - 1) * 100 });

  // --- Growth: a third API on a database of its own, so the other figures keep a small collection ---
  const growthDb = databaseUrl(stores.mongoServerUrl, dbName('growth'));
  const growthApi = await startApi('api-growth', { mongoUrl: growthDb, redisUrl: stores.redisUrl, queuePrefix: prefixes[2]!, cpuProfile });
  started.push(growthApi);
  const growthClient = await registerBenchClient(growthDb);
  const growthToken = await fetchAccessToken(growthClient, growthApi.tokenUrl);
  const growthMongo = await new MongoClient(growthDb).connect();
  const growthUsers = growthMongo.db().collection('provider_users');
  const growthDriver: Summary[] = [];
  const growth: Summary[] = [];
  for (const target of plan.growth) {
    const t0 = Date.now();
    const have = await growthUsers.countDocuments({});
    await seedUsers(growthUsers, growthClient.organizationId, `fill-${target}`, 0, Math.max(0, target - plan.updateSet - have));
    const updateSet = `grow-${target}`;
    await seedUsers(growthUsers, growthClient.organizationId, updateSet, 0, plan.updateSet);
    const stored = await growthUsers.countDocuments({});
    log(`seeded to ${stored} users in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    const result = await runBenchChild<LoadResult>('load-users', {
      kind: 'update',
      url: `${growthApi.baseUrl}/users`,
      connections: GROWTH_CONCURRENCY,
      durationSec: plan.roundSec,
      rounds: plan.rounds,
      warmupSec: plan.warmupSec,
      headers: { authorization: `Bearer ${growthToken}`, 'x-nabla-api-version': '2026-03-23' },
      idPrefix: updateSet,
      userCount: plan.updateSet,
    } satisfies LoadSpec);
    growth.push(add('growth', `POST /users update, ${stored} users stored`, GROWTH_CONCURRENCY, result.rounds));
    growthDriver.push(
      add('growth', `driver updateOne upsert, ${stored} users stored`, GROWTH_CONCURRENCY, await driverLoad('update', GROWTH_CONCURRENCY, { mongoUrl: growthDb })),
    );
  }
  await growthMongo.close();

  // --- Ratios ---
  const ratios: Ratio[] = [];
  const ratio = (name: string, value: number, target?: string, met?: (v: number) => boolean) =>
    ratios.push({ name, value, ...(target ? { target, met: met!(value) } : {}) });
  for (const c of plan.concurrencies) {
    for (const op of OPS) {
      const a = api_[`${op}@${c}`]!;
      const d = drv[`${op}@${c}`]!;
      const isTarget = c === HEADLINE && op !== 'create';
      const min = op === 'noop' ? 0.8 : 0.5;
      ratio(`${op} c=${c}: API / driver throughput`, a.rps.median / d.rps.median, isTarget ? `>= ${min}` : undefined, (v) => v >= min);
      ratio(`${op} c=${c}: API / driver p99`, a.p99.median / d.p99.median);
      ratio(`${op} c=${c}: API / bare Fastify throughput`, a.rps.median / bareSummaries[c]!.rps.median);
    }
  }
  ratio(`update p99 at ${halfRate}/s (half the API peak): API / driver`, apiHalf.p99.median / drvHalf.p99.median, '<= 3', (v) => v <= 3);
  ratio('token endpoint / bare jose loop', tokenApi.rps.median / tokenBare.rps.median, '>= 0.7', (v) => v >= 0.7);
  if (workerWorks) {
    ratio('end to end p99 at 100 events/s (ms)', e2eSummaries[100]!.p99.median, '< 150', (v) => v < 150);
    if (e2eSummaries[300]) ratio('end to end p99 at 300 events/s (ms)', e2eSummaries[300]!.p99.median);
    if (e2eSummaries[10]) ratio('end to end p50 at 10 events/s, over 100 events a round (ms)', e2eSummaries[10]!.p50.median);
  }
  ratio(`growth: update p50 at ${plan.growth[1]} / at ${plan.growth[0]} users`, growth[1]!.p50.median / growth[0]!.p50.median, '<= 1.25', (v) => v <= 1.25);
  ratio(`growth: driver upsert p50 at ${plan.growth[1]} / at ${plan.growth[0]} users`, growthDriver[1]!.p50.median / growthDriver[0]!.p50.median);
  ratio(`growth: update p99 at ${plan.growth[1]} / at ${plan.growth[0]} users`, growth[1]!.p99.median / growth[0]!.p99.median);

  notes.push(
    'Driver baseline: one process, N concurrent workers, one round trip per operation (insertOne; updateOne with upsert for updates and no-ops), on the API\'s own collection (same indexes, same size at that moment) under an organization of its own.',
    'The API measured for throughput has no worker consuming its queue; end to end runs a second API and the worker on a database and queue prefix of their own.',
    'Token rounds run a fixed number of pre-signed assertions (each jti is single use), signed before each round and sized from the fastest rate seen so far to last about a round or more.',
    `Memory: RSS after the first pass, then after repeating the API users suite${quick ? ' (one round each)' : ''}${workerWorks && !quick ? ' and the end-to-end rounds' : ''}.`,
    `Growth: a third API process on a database of its own, updates at concurrency ${GROWTH_CONCURRENCY} with ${plan.growth.join(' then ')} users stored; the driver's upsert on the same collection beside each.`,
    'Rate limits stay enabled at 10,000,000 per minute (per client, per token IP): their Redis round trip is counted, their 429s are not.',
    `Load generator: autocannon 9 in a child process; bare Fastify, driver and jose baselines each in a process of their own. Machine shared with other work: compare within a run.`,
  );
  const md = writeReport({
    meta: {
      date: new Date().toISOString(),
      mode: quick ? 'quick' : 'full',
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model ?? 'unknown',
      node: process.version,
      database,
      roundSeconds: plan.roundSec,
      rounds: plan.rounds,
      notes,
    },
    rows,
    ratios,
    memory,
  });
  process.stdout.write(`${md}\n`);
} finally {
  await cleanUp();
}
process.exit(0);
