/**
 * `pnpm bench [--quick | --smoke | --soak MINUTES | --email-claims] [--cpu-prof]`: measures the service
 * against its limits, side by side in one run (issues 5 and 15), and writes
 * bench/results/latest.{json,md} (and quick.* or full.*), stamped with the commit measured.
 *
 * Order: everything starts at once (services, baseline processes, seeded users);
 * then POST /users (API, the bare driver, bare Fastify, per concurrency), p99 at
 * half the peak rate, the token endpoint against a bare Fastify route doing the same
 * work, end to end through the worker, memory after a second run, delivery throughput
 * against a bare BullMQ worker (and the same worker doing our database work with the
 * bare driver, for information), the resync of one new target (against the same bare
 * BullMQ figure), the bulk importer against POST /users creates, growth, and the cost
 * of a /metrics scrape.
 *
 * Budget: the full run under 15 minutes on the 2-CPU bench machine, every figure a
 * target rests on from at least 5 rounds of at least 5 s. The load generator, the
 * driver and each baseline are one long-lived process each, given one scenario after
 * another, so no scenario pays a process start.
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { MongoClient, type Collection } from 'mongodb';
import { Redis } from 'ioredis';
import { Queue } from 'bullmq';
import { deliveryQueueName, EVENTS_QUEUE } from '@connect/shared';
import { DEFAULT_WORKER_OPTIONS, workerOptionsFromEnv } from '@connect/worker';
import { fetchAccessToken, registerBenchClient, signAssertion } from './bench-auth.ts';
import { startBenchChild, spawnTs, BENCH_DIR, REPO_ROOT } from './bench-child.ts';
import { seedUsers } from './bench-users.ts';
import type { BullmqBaselineRound, BullmqBaselineSpec } from './bullmq-baseline.ts';
import { driverPrefix, type DriverSpec } from './driver-baseline.ts';
import { runEndToEnd, startReceiver, waitForArrivals } from './end-to-end.ts';
import { runImportRound } from './import-rounds.ts';
import { runResync, seedResyncSet } from './resync.ts';
import { seedDeliveryRows, timeScrapes } from './metrics-scrape.ts';
import type { LoadResult, LoadSpec } from './load-users.ts';
import { commitMeasured, writeReport, type Memory, type Ratio, type Row } from './report.ts';
import { inFlightFor, summarise, type RoundStats, type Spread, type Summary } from './round-stats.ts';
import { cpuByGroup, cpuMsOf, databaseUrl, deleteQueueKeys, IMAGE_NODE_FLAGS, MONGO_POOL_SIZE, newRunId, startApi, startDatastores, startWorkerProcess, type ServiceProcess } from './start-stack.ts';
import type { TokenBaselineSpec } from './token-baseline.ts';

// The soak is a mode of its own: long mixed traffic, nothing compared.
if (process.argv.includes('--soak')) {
  const { runSoakCli } = await import('./soak.ts');
  const started = performance.now();
  const say = (msg: string) => process.stderr.write(`[soak ${new Date().toISOString().slice(11, 19)} +${((performance.now() - started) / 1000).toFixed(0)}s] ${msg}\n`);
  process.exit(await runSoakCli(process.argv.slice(2), say));
}

// What EMAIL_UNIQUENESS=claims costs a create: a comparison of its own (bench/email-claims.ts).
if (process.argv.includes('--email-claims')) {
  const { runEmailClaimsCli } = await import('./email-claims.ts');
  const say = (msg: string) => process.stderr.write(`[email-claims] ${msg}\n`);
  process.exit(await runEmailClaimsCli(process.argv.slice(2), say));
}

const HEADLINE = 32;
/**
 * The API's cache of recent users (apps/api/src/api-deps.ts, RecentUsers(2_000)): an
 * update of a user in it skips its read. Updates and no-ops run over a "cold" set ten
 * times as large, cycled in order, so they never find their user there, as an update
 * from an EHR with many users would not; a small set that fits is measured apart, labelled.
 * From the 29th update of such users in a row the API writes first (one findOneAndUpdate,
 * docs/guarantees.md "One-step writes"), so the cold-set update rows measure that path.
 */
const API_RECENT_USERS = 2_000;
const quick = process.argv.includes('--quick');
const smoke = process.argv.includes('--smoke');
const mode = smoke ? 'smoke' : quick ? 'quick' : 'full';
const cpuProfile = process.argv.includes('--cpu-prof');
interface Timing {
  rounds: number;
  roundSec: number;
  warmupSec: number;
}
/**
 * Every figure a ratio with a target rests on is `target` timing: at least 5 rounds of
 * at least 5 s in the full run (three rounds of 1.5 s gave the same code an update ratio
 * of 0.44 and 0.65 an hour apart). Figures shown for information get `info` timing, so
 * the full run stays under 15 minutes on the 2-CPU bench machine. Quick is a preview;
 * smoke runs every section for a moment with tiny sizes so CI can tell the bench still
 * works (its figures mean nothing and are not written anywhere).
 */
const PLANS = {
  full: {
    target: { rounds: 5, roundSec: 5, warmupSec: 2 } as Timing,
    // Information rows: 3 rounds of 1.5 s after half a second (2 s and 1 s put the full run at 18 min).
    info: { rounds: 3, roundSec: 1.5, warmupSec: 0.5 } as Timing,
    // 32, the headline, only: c=8 and then c=128 (information, past saturation) went to keep the full run under 15 minutes.
    concurrencies: [32],
    token: { warmup: 300, minPerRound: 500, maxPerRound: 20_000 },
    e2eRates: [10, 100, 300],
    coldSet: API_RECENT_USERS * 10,
    cachedSet: 500,
    /** The driver has no cache: in the growth collection its set can be small and the API's cold set the rest. */
    driverGrowthSet: 2_000,
    growth: [API_RECENT_USERS * 10 + 2_000, 200_000],
    // About 140-180 deliveries/s here: 1,000 keeps each of our rounds above 5 s (bare BullMQ's, the same
    // 1,000 by the issue's rule, last under a second at its 1,800/s); 2,500 cost about 75 s more per run.
    delivery: { jobs: 1_000, warmup: 200 },
    // About 90-220 users/s on the 2-CPU machine: 3,000 keeps the section near 20 s (the full run has 15 minutes).
    resync: { users: 3_000 },
    importRows: { min: 500, max: 20_000 },
    scrape: { rows: [1_000, 200_000] },
  },
  quick: {
    target: { rounds: 5, roundSec: 1, warmupSec: 0.5 } as Timing,
    info: { rounds: 3, roundSec: 1, warmupSec: 0.3 } as Timing,
    concurrencies: [32],
    token: { warmup: 150, minPerRound: 200, maxPerRound: 5_000 },
    e2eRates: [100],
    coldSet: API_RECENT_USERS * 10,
    cachedSet: 500,
    driverGrowthSet: 2_000,
    growth: [API_RECENT_USERS * 10 + 2_000, 60_000],
    delivery: { jobs: 500, warmup: 100 },
    resync: { users: 3_000 },
    importRows: { min: 200, max: 10_000 },
    scrape: { rows: [1_000, 20_000] },
  },
  smoke: {
    // One round of a second after half a second's warm-up: shorter rounds, on a busy CI machine,
    // can end before the first answer of a cold process arrives.
    target: { rounds: 1, roundSec: 1, warmupSec: 0.5 } as Timing,
    info: { rounds: 1, roundSec: 1, warmupSec: 0.5 } as Timing,
    concurrencies: [32],
    token: { warmup: 10, minPerRound: 20, maxPerRound: 40 },
    e2eRates: [100],
    coldSet: 300,
    cachedSet: 50,
    driverGrowthSet: 50,
    growth: [350, 1_000],
    delivery: { jobs: 30, warmup: 10 },
    resync: { users: 200 },
    importRows: { min: 64, max: 64 },
    scrape: { rows: [100, 1_000] },
  },
};
const plan = PLANS[mode];
const CACHED_SET = plan.cachedSet;
const DRIVER_GROWTH_SET = plan.driverGrowthSet;
const TARGET = plan.target;
const INFO = plan.info;
/** A LoadSpec's or DriverSpec's timing fields. */
const timing = (t: Timing) => ({ durationSec: t.roundSec, rounds: t.rounds, warmupSec: t.warmupSec, ...smokeAmount });
/**
 * Smoke: the load generator's closed rounds are a fixed number of requests, not a time: a
 * timed round drops the requests still in flight at its end, and on a busy CI machine a
 * cold API answered none of 32 within a second (a false failure). The driver ignores it.
 */
const smokeAmount = smoke ? { amount: 64 } : {};
/** The users figures with a target: updates and no-ops at the headline concurrency. */
const hasTarget = (op: string, c: number) => c === HEADLINE && op !== 'create';
/** The one downstream target of the end-to-end API and worker. */
const E2E_TARGET = 'bench';
/** The target the resync section brings up to date: configured only in the resync worker. */
const RESYNC_TARGET = 'resync-bench';
/** The importer's concurrency, compared with POST /users creates at the same concurrency. */
const IMPORT_CONCURRENCY = HEADLINE;
/** The end-to-end rate with a target (p99 < 100 ms). */
const E2E_TARGET_RATE = 100;
/** Growth is about the cost of one update, not queueing: a lower concurrency keeps rounds from being all queue. */
const GROWTH_CONCURRENCY = 8;
const OPS = ['create', 'update', 'noop'] as const;
type Op = (typeof OPS)[number];
const DRIVER_OP: Record<Op, string> = {
  create: 'insertOne',
  update: 'updateOne conditional on version (cold set)',
  noop: 'findOne (cold set)',
};
/** The worker's delivery concurrency, as the worker process reads it (it inherits this environment). */
const workerConcurrency = (() => {
  try {
    return workerOptionsFromEnv(process.env).concurrency;
  } catch {
    return DEFAULT_WORKER_OPTIONS.concurrency;
  }
})();
const fanOutConcurrency = DEFAULT_WORKER_OPTIONS.fanOutConcurrency;

const runStarted = performance.now();
// Read before anything runs: the code measured is the code checked out when the run began.
const commit = commitMeasured();
const log = (msg: string) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)} +${((performance.now() - runStarted) / 1000).toFixed(0)}s] ${msg}\n`);
const nowMs = () => performance.timeOrigin + performance.now();
const runId = newRunId();
const rows: Row[] = [];
const notes: string[] = [];
/** Every section of the run, in order; smoke fails unless each of them ran. */
const SECTIONS = [
  'users',
  'users (cached set)',
  'p99 at half peak',
  'token endpoint',
  'end to end',
  'memory',
  'delivery (ours)',
  'delivery (bare BullMQ)',
  'delivery (bare BullMQ + same DB work)',
  'resync',
  'import',
  'growth',
  'metrics scrape',
] as const;
const sectionsRun: string[] = [];
const section = (name: (typeof SECTIONS)[number]) => {
  sectionsRun.push(name);
  log(`section done: ${name}`);
};
const add = (group: string, scenario: string, concurrency: number | string, rounds: RoundStats[]): Summary => {
  const summary = summarise(rounds);
  // Nothing answered in any round: the stack is stuck (FerretDB can be, see driver-baseline.ts); stop here.
  if (!(summary.requests.max > 0)) throw new Error(`${group} ${scenario} c=${concurrency}: no request answered in ${rounds.length} rounds (${JSON.stringify(rounds[0])})`);
  rows.push({ group, scenario, concurrency, summary });
  const offered = Number.isFinite(summary.offered.median) ? `offered ${summary.offered.median.toFixed(0)}/s, ` : '';
  const latency = Number.isFinite(summary.p50.median) ? `, p50 ${summary.p50.median.toFixed(1)} ms, p99 ${summary.p99.median.toFixed(1)} ms` : '';
  log(`${group} ${scenario} c=${concurrency}: ${offered}${summary.rps.median.toFixed(0)} req/s (${summary.rps.min.toFixed(0)}–${summary.rps.max.toFixed(0)})${latency}`);
  return summary;
};

/**
 * Our build (tools/ferretdb, its own main module) reports its version as "unknown": FerretDB
 * reads it only when built as its own main module. Then the version tools/ferretdb/go.mod requires.
 */
function ferretDbVersion(reported: string): string {
  if (reported !== 'unknown') return reported;
  const required = /github\.com\/FerretDB\/FerretDB (v[0-9.]+)/.exec(readFileSync(join(REPO_ROOT, 'tools', 'ferretdb', 'go.mod'), 'utf8'))?.[1];
  return required ? `${required} (our build, tools/ferretdb)` : 'of unknown version';
}

const stores = await startDatastores(runId);
const dbName = (part: string) => (stores.kind === 'mongo-url' ? `bench_${part}_${runId.replace(/-/g, '_')}` : `bench_${part}`);
const apiDb = databaseUrl(stores.mongoServerUrl, dbName('api'));
const e2eDb = databaseUrl(stores.mongoServerUrl, dbName('e2e'));
const growthDb = databaseUrl(stores.mongoServerUrl, dbName('growth'));
const resyncDb = databaseUrl(stores.mongoServerUrl, dbName('resync'));
/** The bare BullMQ worker's database when it does our processor's database work (bullmq-baseline.ts). */
const bareDb = databaseUrl(stores.mongoServerUrl, dbName('baredb'));
const mongo = await new MongoClient(apiDb).connect();
const buildInfo = await mongo.db().admin().command({ buildInfo: 1 });
const database = buildInfo.ferretdbVersion ? `FerretDB ${ferretDbVersion(String(buildInfo.ferretdbVersion))} (MongoDB ${buildInfo.version} wire), PostgreSQL backend` : `MongoDB ${buildInfo.version}`;
log(`database: ${database}; redis: ${stores.redisUrl}`);

const prefixes = { load: `bench-${runId}-load`, e2e: `bench-${runId}-e2e`, growth: `bench-${runId}-growth`, bare: `bench-${runId}-bare`, bareDb: `bench-${runId}-baredb`, resync: `bench-${runId}-resync` };
const started: ServiceProcess[] = [];
const children = {
  load: startBenchChild('load-users'),
  driver: startBenchChild('driver-baseline'),
  token: startBenchChild('token-baseline'),
  bullmq: startBenchChild('bullmq-baseline'),
};
let receiverClose: (() => Promise<void>) | undefined;
let resyncReceiverClose: (() => Promise<void>) | undefined;
let growthMongo: MongoClient | undefined;
let resyncMongo: MongoClient | undefined;
/** The import section's files (users and the client's key): a temporary directory, never the tree. */
const importDir = await mkdtemp(join(tmpdir(), 'bench-import-'));

/** The seeders add up what the server acknowledged instead of counting (a count reads every document on FerretDB): the smoke run checks that sum. */
async function expectStored(what: string, collection: Collection, expected: number): Promise<void> {
  const stored = await collection.countDocuments({});
  if (stored !== expected) throw new Error(`${what}: the seeding counted ${expected}, the collection holds ${stored}`);
}

let cleaning: Promise<void> | undefined;
/** Once, whoever asks first (a signal, or the end of the run that the signal interrupted). */
const cleanUp = (): Promise<void> => (cleaning ??= cleanUpOnce());
async function cleanUpOnce(): Promise<void> {
  await Promise.allSettled([...started.map((p) => p.stop()), ...Object.values(children).map((c) => c.close())]);
  await receiverClose?.();
  await resyncReceiverClose?.();
  await growthMongo?.close().catch(() => undefined);
  await resyncMongo?.close().catch(() => undefined);
  await rm(importDir, { recursive: true, force: true });
  await deleteQueueKeys(stores.redisUrl, Object.values(prefixes));
  if (stores.kind === 'mongo-url') for (const url of [apiDb, e2eDb, growthDb, resyncDb, bareDb]) await mongo.db(new URL(url).pathname.slice(1)).dropDatabase().catch(() => undefined);
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
  // --- Start everything at once; nothing is measured until all of it is up and seeded ---
  // The API under load has no worker on its queue (its CPU is its own). End to end runs a
  // second API and the worker on a database and queue of their own; growth a third API.
  // Idle until their turn: an idle API does nothing, an idle worker polls its outbox every few seconds.
  const receiver = await startReceiver();
  receiverClose = receiver.close;
  const e2eEnv = {
    mongoUrl: e2eDb,
    redisUrl: stores.redisUrl,
    queuePrefix: prefixes.e2e,
    downstreamTargets: [{ name: E2E_TARGET, url: receiver.url, secrets: ['bench-secret-0123456789'] }],
    cpuProfile,
  };
  // Resync: a worker of its own on a database of its own, whose one target is new to every user there.
  const resyncReceiver = await startReceiver();
  resyncReceiverClose = resyncReceiver.close;
  const resyncEnv = {
    mongoUrl: resyncDb,
    redisUrl: stores.redisUrl,
    queuePrefix: prefixes.resync,
    downstreamTargets: [{ name: RESYNC_TARGET, url: resyncReceiver.url, secrets: ['bench-secret-0123456789'] }],
    cpuProfile,
  };
  resyncMongo = await new MongoClient(resyncDb).connect();
  const resyncOrg = `resync-${runId}`;
  // The sweep's cursor before the worker starts (see resync.ts); the users themselves are seeded with the others.
  await seedResyncSet(resyncMongo.db(), resyncOrg, 'resync', 0);
  const startBare = async (): Promise<number> => {
    // Its token route reads clients and writes used assertions in the API's database (same collections, same sizes).
    const bare = spawnTs(`${BENCH_DIR}/bare-fastify.ts`, [], { BENCH_MONGO_URL: apiDb }, [], true);
    started.push({ name: 'bare-fastify', process: bare, rssMiB: () => NaN, fullGcHeapMiB: () => [], stderr: () => '', stop: async () => void bare.kill('SIGTERM') });
    return new Promise<number>((resolve, reject) => {
      let out = '';
      bare.stdout!.on('data', (d) => {
        out += d;
        const m = /"port":(\d+)/.exec(out);
        if (m) resolve(Number(m[1]));
      });
      bare.once('exit', (code) => reject(new Error(`bare fastify exited ${code}`)));
    });
  };
  const startT = performance.now();
  const timed = <T>(what: string, p: Promise<T>): Promise<T> =>
    p.then((v) => {
      log(`  ${what} ready after ${((performance.now() - startT) / 1000).toFixed(1)} s`);
      return v;
    });
  const track = <T extends ServiceProcess | undefined>(p: Promise<T>): Promise<T> =>
    p.then((s) => {
      if (s) started.push(s);
      return s;
    });
  const [api, e2eApi, worker, resyncWorker, growthApi, barePort, client, e2eClient, growthClient] = await Promise.all([
    timed('api', track(startApi('api', { mongoUrl: apiDb, redisUrl: stores.redisUrl, queuePrefix: prefixes.load, cpuProfile }))),
    timed('api-e2e', track(startApi('api-e2e', e2eEnv))),
    timed('worker', track(startWorkerProcess('worker', e2eEnv))),
    timed('worker-resync', track(startWorkerProcess('worker-resync', resyncEnv))),
    timed('api-growth', track(startApi('api-growth', { mongoUrl: growthDb, redisUrl: stores.redisUrl, queuePrefix: prefixes.growth, cpuProfile }))),
    timed('bare fastify', startBare()),
    timed('client (api)', registerBenchClient(apiDb)),
    timed('client (e2e)', registerBenchClient(e2eDb)),
    timed('client (growth)', registerBenchClient(growthDb)),
  ]);
  const [token, e2eToken, growthToken] = await Promise.all([
    fetchAccessToken(client, api.tokenUrl),
    fetchAccessToken(e2eClient, e2eApi.tokenUrl),
    fetchAccessToken(growthClient, growthApi.tokenUrl),
  ]);
  const bearer = (t: string) => ({ authorization: `Bearer ${t}`, 'x-nabla-api-version': '2026-03-23' });
  const users = mongo.db().collection('provider_users');
  growthMongo = await new MongoClient(growthDb).connect();
  const growthUsers = growthMongo.db().collection('provider_users');

  // The update sets (locale A, version 1), seeded now in parallel: the API's cold set and
  // cached set, the driver's cold set (an organization of its own in the API's collection);
  // and the growth database up to its first size. Each set serves every update and no-op
  // run of its kind (the load generator and the driver keep each user's state).
  const driverOrg = `driver-${runId}`;
  const growthApiSet = 'grow';
  const growthDriverOrg = `driver-grow-${runId}`;
  /**
   * Seeds the growth collection to `target` users: the API's cold set and the driver's set
   * first, then filler. The collection is new and only this seeds it (the loads on it update
   * existing users), so what the server acknowledged is what it holds: a countDocuments on
   * FerretDB reads every document (about 10 s at 60,000), and three of them took most of
   * the seeding's time.
   */
  let growthCount = 0;
  const seedGrowth = async (target: number): Promise<number> => {
    if (growthCount === 0) {
      const sets = await Promise.all([
        seedUsers(growthUsers, growthClient.organizationId, growthApiSet, 0, plan.coldSet),
        seedUsers(growthUsers, growthDriverOrg, driverPrefix(growthDriverOrg), 0, DRIVER_GROWTH_SET),
      ]);
      growthCount = sets[0] + sets[1];
    }
    const filled = await seedUsers(growthUsers, growthClient.organizationId, `fill-${target}`, 0, Math.max(0, target - growthCount));
    growthCount += filled;
    // The smoke run's sizes are tiny: there a count is cheap, and checks the arithmetic above.
    if (smoke) await expectStored('growth users', growthUsers, growthCount);
    return growthCount;
  };
  const loadRun = (spec: LoadSpec) => children.load.run<LoadResult>(spec);
  // While the sets are seeded, a second of load on each API (and through the worker), unmeasured:
  // JIT and pools are warm before their first figure, not only the first scenario of each.
  const warmUp = (kind: 'create' | 'noop', baseUrl: string, t: string, extra: Partial<LoadSpec> = {}): Promise<LoadResult> =>
    loadRun({ kind, url: `${baseUrl}/users`, connections: HEADLINE, durationSec: 1, rounds: 1, warmupSec: 0, headers: bearer(t), idPrefix: `warm-${kind}`, userCount: plan.coldSet, ...extra });
  const seedStarted = performance.now();
  const [, , firstGrowthStored, e2eWarm] = await Promise.all([
    Promise.all([
      seedUsers(users, client.organizationId, 'cold', 0, plan.coldSet),
      seedUsers(users, client.organizationId, 'cached', 0, CACHED_SET),
      seedResyncSet(resyncMongo.db(), resyncOrg, 'resync', plan.resync.users),
    ]),
    seedUsers(users, driverOrg, driverPrefix(driverOrg), 0, plan.coldSet),
    seedGrowth(plan.growth[0]!).then(async (stored) => {
      // No-ops on the update set leave it as seeded.
      await warmUp('noop', growthApi.baseUrl, growthToken, { idPrefix: growthApiSet, connections: GROWTH_CONCURRENCY });
      return stored;
    }),
    // The end-to-end warm-up is also the probe: 50 creates whose callbacks must all arrive.
    warmUp('create', api.baseUrl, token).then(() => warmUp('create', e2eApi.baseUrl, e2eToken, { overallRate: 50, connections: 16, recordAnswers: true })),
  ]);
  log(`started; seeded ${2 * plan.coldSet + CACHED_SET} users in update sets, ${plan.resync.users} for the resync and ${firstGrowthStored} growth users, warmed the APIs, in ${((performance.now() - seedStarted) / 1000).toFixed(1)} s`);
  // The first figures come after the seeding's checkpoint and autovacuum, as each growth size's do: in
  // both full runs before this, the headline update rounds ran with about 0.7 of a CPU busy in
  // processes no sample caught (most likely autovacuum workers), at half the rate of the same rounds later.
  const settleStarted = performance.now();
  await stores.settle();
  log(`database settled after the seeding in ${((performance.now() - settleStarted) / 1000).toFixed(1)} s`);

  let createNo = 0;
  const apiLoad = async (op: Op, c: number, extra: Partial<LoadSpec> = {}): Promise<RoundStats[]> => {
    const spec: LoadSpec = {
      kind: op,
      url: `${api.baseUrl}/users`,
      connections: c,
      ...timing(hasTarget(op, c) ? TARGET : INFO),
      headers: bearer(token),
      idPrefix: op === 'create' ? `create-${createNo++}` : 'cold',
      userCount: plan.coldSet,
      ...extra,
    };
    const result = await loadRun(spec);
    const odd = Object.entries(result.statuses).filter(([status]) => !status.startsWith('2'));
    if (odd.length) log(`${op} c=${c}: non-2xx answers ${JSON.stringify(Object.fromEntries(odd))}`);
    lastWarmupRequests = result.warmupRequests ?? 0;
    return result.rounds;
  };
  /** The driver on the API's own collection (its indexes, its size), under an organization of its own:
   * on FerretDB every lookup costs with the collection's size, so only the same collection compares. */
  const driverLoad = async (op: DriverSpec['op'], c: number, extra: Partial<DriverSpec> = {}): Promise<RoundStats[]> => {
    const result = await children.driver.run<{ rounds: RoundStats[]; warmupRequests: number }>({
        mongoUrl: apiDb,
        op,
        concurrency: c,
        ...timing(hasTarget(op, c) ? TARGET : INFO),
        userCount: plan.coldSet,
        ...extra,
        ...(op === 'create' ? {} : { org: extra.org ?? driverOrg }),
      } satisfies DriverSpec);
    lastWarmupRequests = result.warmupRequests;
    return result.rounds;
  };
  /** Requests of the last load's or driver run's warm-up round (CPU per request counts the whole run). */
  let lastWarmupRequests = 0;
  /**
   * CPU per operation: the process's CPU time over the whole run (warm-up and rounds) divided
   * by the operations answered in it. Idle time between rounds costs no CPU.
   */
  const cpuPerOp = async (pid: number, run: () => Promise<RoundStats[]>): Promise<{ rounds: RoundStats[]; ms: number; ops: number }> => {
    const before = cpuMsOf(pid);
    const rounds = await run();
    const ops = lastWarmupRequests + rounds.reduce((a, r) => a + r.requests, 0);
    return { rounds, ms: (cpuMsOf(pid) - before) / ops, ops };
  };
  /** Every process of the run by role, and the database's and Redis's processes by command name. */
  const cpuNow = () =>
    cpuByGroup(
      {
        API: api.process.pid,
        'end-to-end API': e2eApi.process.pid,
        worker: worker?.process.pid,
        'resync worker': resyncWorker?.process.pid,
        'load generator': children.load.process.pid,
        driver: children.driver.process.pid,
        'bare BullMQ worker': children.bullmq.process.pid,
      },
      stores.kind === 'ferretdb-started' ? { FerretDB: ['ferretdb'], PostgreSQL: ['postgres'], Redis: ['redis-server'] } : { Redis: ['redis-server'] },
    );
  /**
   * Where a scenario's CPU went, for the note: ms of CPU per operation in each process
   * that used any, and how busy the machine was (issue 15: the profile behind a target
   * that the database holds out of reach). `ops` is counted after the run.
   */
  const cpuSplit = async <T>(label: string, run: () => Promise<T>, ops: (result: T) => number): Promise<T> => {
    const before = cpuNow();
    const t0 = performance.now();
    const result = await run();
    const after = cpuNow();
    const wallMs = performance.now() - t0;
    const n = ops(result);
    const parts = Object.keys(after)
      .filter((k) => k !== 'machine')
      .map((k) => [k, (after[k]! - before[k]!) / n] as const)
      .filter(([, ms]) => Number.isFinite(ms) && ms >= 0.005)
      .sort((a, b) => b[1] - a[1]);
    const machine = (after.machine - before.machine) / n;
    const named = parts.reduce((a, [, ms]) => a + ms, 0);
    const line = `CPU per ${label} (ms, over ${n} operations): ${parts.map(([k, ms]) => `${k} ${ms.toFixed(2)}`).join(', ')}; the named processes ${named.toFixed(2)}, the whole machine ${machine.toFixed(2)} (busy ${(((after.machine - before.machine) / wallMs / cpus().length) * 100).toFixed(0)} % of ${cpus().length} CPUs over the ${(wallMs / 1000).toFixed(1)} s)`;
    cpuNotes.push(line);
    log(line);
    return result;
  };
  const cpuNotes: string[] = [];
  const cpu: { api?: number; driver?: number; driverReadUpdate?: number } = {};
  let readUpdate: Summary | undefined;

  // --- POST /users: API, driver, bare Fastify ---
  const api_: Record<string, Summary> = {};
  const drv: Record<string, Summary> = {};
  const bareSummaries: Record<number, Summary> = {};
  for (const c of plan.concurrencies) {
    for (const op of OPS) {
      if (op === 'update' && c === HEADLINE) {
        // The headline updates also give the CPU each side spends per update.
        const a = await cpuSplit(`POST /users update, cold set, c=${c}, warm-up included`, () => cpuPerOp(api.process.pid!, () => apiLoad(op, c)), (r) => r.ops);
        api_[`${op}@${c}`] = add('api', `POST /users ${op} (cold set)`, c, a.rounds);
        const d = await cpuSplit(`driver conditional updateOne, c=${c}, warm-up included`, () => cpuPerOp(children.driver.process.pid!, () => driverLoad(op, c)), (r) => r.ops);
        drv[`${op}@${c}`] = add('driver', DRIVER_OP[op], c, d.rounds);
        cpu.api = a.ms;
        cpu.driver = d.ms;
        // For information: the read and the write an update of a user the API does not cache costs it.
        const rw = await cpuSplit(`driver findOne + updateOne, c=${c}, warm-up included`, () => cpuPerOp(children.driver.process.pid!, () => driverLoad('read-update', c, timing(INFO))), (r) => r.ops);
        readUpdate = add('driver', 'findOne then updateOne conditional on the version read (cold set): the database work of an API update', c, rw.rounds);
        cpu.driverReadUpdate = rw.ms;
        log(`CPU per update: API ${a.ms.toFixed(2)} ms, driver ${d.ms.toFixed(2)} ms, driver read + update ${rw.ms.toFixed(2)} ms`);
        continue;
      }
      api_[`${op}@${c}`] = add('api', `POST /users ${op}${op === 'create' ? '' : ' (cold set)'}`, c, await apiLoad(op, c));
      drv[`${op}@${c}`] = add('driver', DRIVER_OP[op], c, await driverLoad(op, c));
    }
    if (c === HEADLINE) {
      // The flattering case, apart: a set that fits the API's cache, so updates skip their read.
      add('api', `POST /users update, cached set (${CACHED_SET} users, within the API's ${API_RECENT_USERS} recent users: no read)`, c, await apiLoad('update', c, { idPrefix: 'cached', userCount: CACHED_SET, ...timing(INFO) }));
    }
    bareSummaries[c] = add(
      'bare fastify',
      'POST fixed JSON',
      c,
      (
        await loadRun({
          kind: 'fixed',
          url: `http://127.0.0.1:${barePort}/users`,
          connections: c,
          ...timing(INFO),
          fixedBody: '{"provider_email":"jane.doe@example.com","external_provider_id":"ehr-42","settings":{"speech_locale":"ENGLISH_US"}}',
        })
      ).rounds,
    );
  }

  section('users');
  section('users (cached set)');

  // --- p99 at half the API's peak update rate, API and driver at the same offered rate ---
  const halfRate = Math.max(10, Math.round(api_[`update@${HEADLINE}`]!.rps.median / 2));
  const apiHalf = add('api', `POST /users update @ ${halfRate}/s asked`, `≤ ${inFlightFor(halfRate)}`, await apiLoad('update', HEADLINE, { overallRate: halfRate }));
  const drvHalf = add('driver', `updateOne conditional on version @ ${halfRate}/s asked`, `≤ ${inFlightFor(halfRate)}`, await driverLoad('update', HEADLINE, { rate: halfRate }));
  section('p99 at half peak');

  // --- Token endpoint against a bare Fastify route doing the same necessary work (and bare jose, for information) ---
  const tokenRounds = (
    await loadRun({
      kind: 'token',
      url: api.tokenUrl,
      connections: HEADLINE,
      ...timing(TARGET),
      warmupSec: 0,
      token: { clientId: client.clientId, privateKeyPem: client.privateKeyPem, audience: api.tokenUrl, ...plan.token },
    })
  ).rounds;
  const tokenApi = add('api', 'POST /oauth/token', HEADLINE, tokenRounds);
  log(`token rounds: ${tokenRounds.map((r) => `${r.requests} in ${(r.requests / r.rps).toFixed(2)} s`).join(', ')}`);
  const bareTokenUrl = `http://127.0.0.1:${barePort}/oauth/token`;
  const tokenBareRoute = add(
    'bare fastify',
    'POST /oauth/token: client findOne, verify RS256, jti insertOne, sign EdDSA (bare driver)',
    HEADLINE,
    (
      await loadRun({
        kind: 'token',
        url: bareTokenUrl,
        connections: HEADLINE,
        ...timing(TARGET),
        warmupSec: 0,
        token: { clientId: client.clientId, privateKeyPem: client.privateKeyPem, audience: bareTokenUrl, ...plan.token },
      })
    ).rounds,
  );
  const assertionPool = await Promise.all(Array.from({ length: 50 }, () => signAssertion(client, api.tokenUrl)));
  const tokenBare = add(
    'bare jose',
    'verify RS256 assertion + sign EdDSA token',
    HEADLINE,
    (
      await children.token.run<{ rounds: RoundStats[] }>({
        assertions: assertionPool,
        publicKeyPem: client.publicKeyPem,
        audience: api.tokenUrl,
        concurrency: HEADLINE,
        ...timing(INFO),
      } satisfies TokenBaselineSpec)
    ).rounds,
  );
  section('token endpoint');

  // --- End to end: the second API and the worker ---
  const e2eSummaries: Record<number, Summary> = {};
  let e2eRun = 0;
  const endToEnd = async (group: string, rates: readonly number[] = plan.e2eRates, timingOf?: Timing) => {
    for (const rate of rates) {
      const t = timingOf ?? (rate === E2E_TARGET_RATE ? TARGET : INFO);
      const rounds = () =>
        runEndToEnd(receiver, loadRun, {
          baseUrl: e2eApi.baseUrl,
          token: e2eToken,
          rate,
          // At least 50 events per round, so a median is over 50 events even at a low rate.
          durationSec: Math.max(t.roundSec, Math.ceil(50 / rate)),
          rounds: t.rounds,
          idPrefix: `e2e${e2eRun++}-${rate}`,
          drainTimeoutMs: 15_000,
        });
      const summary = add(
        group,
        `answer → callback received @ ${rate}/s (offered = creates sent/s; req/s = callbacks/s over the delivery window)`,
        `≤ ${inFlightFor(rate)}`,
        // Where the CPU goes, for the rate with a target, in the first pass.
        group === 'end-to-end' && rate === E2E_TARGET_RATE ? await cpuSplit(`end-to-end event @ ${rate}/s (create → callback)`, rounds, (rs) => rs.reduce((a, r) => a + r.requests, 0)) : await rounds(),
      );
      // The ratios are those of the first pass, like every other ratio (run 2 is for memory).
      e2eSummaries[rate] ??= summary;
    }
  };

  // --- Delivery throughput: our worker's deliveries against a bare BullMQ worker doing the same signed POST ---
  const redis = new Redis(stores.redisUrl, { maxRetriesPerRequest: null });
  const eventsQueue = new Queue(EVENTS_QUEUE, { connection: redis, prefix: prefixes.e2e });
  // One queue per target: the bench's one target, "bench".
  const deliveriesQueue = new Queue(deliveryQueueName(E2E_TARGET), { connection: redis, prefix: prefixes.e2e });
  const queued = async (q: Queue) => {
    const counts = await q.getJobCounts('wait', 'paused', 'prioritized');
    return Object.values(counts).reduce((a, b) => a + b, 0);
  };
  const waitUntil = async (cond: () => Promise<boolean>, timeoutMs: number): Promise<boolean> => {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (await cond()) return true;
      await new Promise((r) => setTimeout(r, 10));
    }
    return false;
  };
  const noLatency = { p50: NaN, p99: NaN, p999: NaN, non2xx: 0 };
  let deliveryRun = 0;
  /**
   * Per round: both of the worker's queues paused (BullMQ's global pause, from this process),
   * N creates POSTed to the e2e API as fast as it takes them; once the N events wait, the
   * events queue is resumed (fan-out: N events → N delivery jobs), and once the N delivery
   * jobs wait, the deliveries queue: deliveries/s = N over first to last callback received.
   */
  const ourDeliveries = async (n: number, warmup: number): Promise<{ deliveries: RoundStats[]; fanOut: RoundStats[] }> => {
    const deliveries: RoundStats[] = [];
    const fanOut: RoundStats[] = [];
    try {
      // Round -1 is the warm-up, the same size as the bare BullMQ worker's, and not kept.
      for (let r = -1; r < TARGET.rounds; r++) {
        const jobs = r < 0 ? warmup : n;
        await Promise.all([eventsQueue.pause(), deliveriesQueue.pause()]);
        const events0 = await queued(eventsQueue);
        const deliveries0 = await queued(deliveriesQueue);
        const result = await loadRun({
          kind: 'create',
          url: `${e2eApi.baseUrl}/users`,
          connections: 64,
          durationSec: 0,
          amount: jobs,
          rounds: 1,
          warmupSec: 0,
          headers: bearer(e2eToken),
          idPrefix: `dlv${deliveryRun++}`,
          recordAnswers: true,
        });
        const ids = Object.keys(result.answers ?? {});
        if (!(await waitUntil(async () => (await queued(eventsQueue)) >= events0 + ids.length, 30_000))) log(`delivery: not all ${ids.length} events reached the events queue`);
        const fanOutAt = nowMs();
        await eventsQueue.resume();
        const fannedOut = await waitUntil(async () => (await queued(deliveriesQueue)) >= deliveries0 + ids.length, 60_000);
        const fanOutDone = nowMs();
        if (!fannedOut) log(`delivery: fan-out did not queue all ${ids.length} deliveries in 60 s`);
        await deliveriesQueue.resume();
        const { arrived, first, last } = await waitForArrivals(receiver, ids, 60_000);
        if (r < 0) continue;
        fanOut.push({ rps: ids.length / ((fanOutDone - fanOutAt) / 1000), ...noLatency, requests: ids.length, errors: fannedOut ? 0 : 1 });
        deliveries.push({ rps: arrived / ((last - first) / 1000), ...noLatency, requests: arrived, errors: ids.length - arrived });
      }
    } finally {
      await Promise.allSettled([eventsQueue.resume(), deliveriesQueue.resume()]);
    }
    return { deliveries, fanOut };
  };
  /** The bare BullMQ worker; with `databaseUrl`, doing our processor's database work there too (bullmq-baseline.ts). */
  const bareDeliveries = async (n: number, warmup: number, withDatabase?: { databaseUrl: string }, rounds = TARGET.rounds): Promise<RoundStats[]> => {
    const { rounds: done } = await children.bullmq.run<{ rounds: BullmqBaselineRound[] }>({
      redisUrl: stores.redisUrl,
      prefix: withDatabase ? prefixes.bareDb : prefixes.bare,
      receiverUrl: receiver.url,
      secret: 'bench-secret-0123456789',
      concurrency: workerConcurrency,
      jobs: n,
      warmupJobs: warmup,
      rounds,
      idPrefix: withDatabase ? 'baredb' : 'bare',
      timeoutMs: 60_000,
      ...withDatabase,
    } satisfies BullmqBaselineSpec);
    const out: RoundStats[] = [];
    for (const r of done) {
      const ids = Array.from({ length: r.jobs }, (_, i) => `${r.idPrefix}-${i}`);
      const { arrived, first, last } = await waitForArrivals(receiver, ids, 5_000);
      out.push({ rps: arrived / ((last - first) / 1000), ...noLatency, requests: arrived, errors: r.jobs - arrived + r.failed });
    }
    return out;
  };
  let ourDelivery: Summary | undefined;
  const deliverySuite = async (group: string): Promise<Summary> => {
    const { jobs, warmup } = plan.delivery;
    const ours = await cpuSplit('delivery, ours (creates, fan-out and deliveries of every round, warm-up included)', () => ourDeliveries(jobs, warmup), (r) => warmup + r.deliveries.reduce((a, x) => a + x.requests, 0));
    add(group, `our fan-out: ${jobs} events queued → ${jobs} delivery jobs queued (req/s = events/s)`, fanOutConcurrency, ours.fanOut);
    return add(group, `our worker: ${jobs} delivery jobs queued → callbacks received (req/s = deliveries/s over first to last callback)`, workerConcurrency, ours.deliveries);
  };

  let workerWorks = false;
  if (worker) {
    const probeIds = Object.keys(e2eWarm.answers ?? {});
    const probe = await waitForArrivals(receiver, probeIds, 20_000);
    workerWorks = probeIds.length > 0 && probe.arrived === probeIds.length;
    if (workerWorks) {
      await endToEnd('end-to-end');
      section('end to end');
    }
    else notes.push(`End to end and our delivery throughput skipped: the worker started but delivered ${probe.arrived}/${probeIds.length} probe events (the warm-up's creates) within 20 s.`);
  } else notes.push('End to end and our delivery throughput skipped: the worker did not start.');

  // --- Memory: one block of load four times, the first two unmeasured (the delivery rounds come after: they are in none) ---
  // The figure is each process's highest RSS while a block runs, sampled every 250 ms. A single
  // reading at the end depended on how long the process had idled before it (the load API idles
  // through the end-to-end rounds, and V8 gives memory back when idle: one run read 260 then 310
  // MiB so). The first two blocks are unmeasured: V8 grows the heap back to its working size over
  // two of them after an idle stretch. In a scratch check of one API, 40 s idle after load, then
  // identical blocks: peak RSS 239, 294, 318, 320, 318 MiB, the live heap 49-51 MiB throughout; with
  // one warm-up block, full runs read +16 to +25 % on a flat live heap. A leak check must not count
  // the heap growing back to its working size.
  const memoryTiming: Timing = { ...INFO, rounds: 2 };
  const memoryBlock = async (run: string) => {
    const peak = { api: 0, worker: 0 };
    const sample = () => {
      peak.api = Math.max(peak.api, api.rssMiB());
      if (worker) peak.worker = Math.max(peak.worker, worker.rssMiB());
    };
    const gcsBefore = { api: api.fullGcHeapMiB().length, worker: worker?.fullGcHeapMiB().length ?? 0 };
    const sampler = setInterval(sample, 250);
    try {
      for (const op of OPS) add(`api (${run})`, `POST /users ${op}${op === 'create' ? '' : ' (cold set)'}`, HEADLINE, await apiLoad(op, HEADLINE, timing(memoryTiming)));
      if (workerWorks) await endToEnd(`end-to-end (${run})`, [E2E_TARGET_RATE], memoryTiming);
    } finally {
      clearInterval(sampler);
    }
    sample();
    // The live heap: the smallest heap a full GC left during the block (NaN: no full GC ran in it).
    const liveOf = (p: ServiceProcess | undefined, from: number) => {
      const gcs = p?.fullGcHeapMiB().slice(from) ?? [];
      return { liveMiB: gcs.length ? Math.min(...gcs) : NaN, fullGcs: gcs.length };
    };
    return { api: peak.api, worker: worker ? peak.worker : NaN, apiHeap: liveOf(api, gcsBefore.api), workerHeap: liveOf(worker, gcsBefore.worker) };
  };
  await memoryBlock('memory warm-up 1, unmeasured');
  await memoryBlock('memory warm-up 2, unmeasured');
  const rss1 = await memoryBlock('memory run 1');
  const rss2 = await memoryBlock('memory run 2');
  const memoryOf = (process: string, first: number, second: number, heap1: { liveMiB: number; fullGcs: number }, heap2: { liveMiB: number; fullGcs: number }): Memory => ({
    process,
    afterFirstMiB: first,
    afterSecondMiB: second,
    growthPct: (second / first - 1) * 100,
    liveHeapFirstMiB: heap1.liveMiB,
    liveHeapSecondMiB: heap2.liveMiB,
    fullGcs: [heap1.fullGcs, heap2.fullGcs],
  });
  const memory: Memory[] = [memoryOf('api', rss1.api, rss2.api, rss1.apiHeap, rss2.apiHeap)];
  if (worker) memory.push(memoryOf('worker', rss1.worker, rss2.worker, rss1.workerHeap, rss2.workerHeap));
  section('memory');

  if (workerWorks) {
    ourDelivery = await deliverySuite('delivery');
    section('delivery (ours)');
  }
  const bareDelivery = add(
    'bare bullmq',
    `sign HMAC + POST: ${plan.delivery.jobs} jobs queued → callbacks received (req/s = deliveries/s over first to last callback)`,
    workerConcurrency,
    await cpuSplit('delivery, bare BullMQ (warm-up included)', () => bareDeliveries(plan.delivery.jobs, plan.delivery.warmup), (rs) => plan.delivery.warmup + rs.reduce((a, x) => a + x.requests, 0)),
  );
  section('delivery (bare BullMQ)');
  // The same bare worker, jobs and rounds, also doing our processor's reads and writes with the bare
  // driver on the same server: on FerretDB the database alone may hold the bare rate far above what
  // any worker using it can reach (issue 15: show the bare driver's figure where a target is impossible).
  const bareDbDelivery = add(
    'bare bullmq + same database work (bare driver)',
    `findOne user + findOne SyncState by _id, sign HMAC + POST, then Delivery upsert, SyncState upsert, attempt insert, group-committed (one unordered bulkWrite per collection): ${plan.delivery.jobs} jobs queued → callbacks received (req/s = deliveries/s over first to last callback)`,
    workerConcurrency,
    await cpuSplit('delivery, bare BullMQ + same database work (warm-up included)', () => bareDeliveries(plan.delivery.jobs, plan.delivery.warmup, { databaseUrl: bareDb }, INFO.rounds), (rs) => plan.delivery.warmup + rs.reduce((a, x) => a + x.requests, 0)),
  );
  section('delivery (bare BullMQ + same DB work)');
  await Promise.allSettled([eventsQueue.close(), deliveriesQueue.close()]);
  redis.disconnect();

  // --- Resync of one new target: the CLI walks the seeded users, the resync worker delivers (one timed run) ---
  let resync: Summary | undefined;
  if (resyncWorker) {
    const run = await cpuSplit(`resync user (${plan.resync.users} users)`, () => runResync({
      env: { MONGO_URL: resyncDb, REDIS_URL: stores.redisUrl, QUEUE_PREFIX: prefixes.resync, DOWNSTREAM_TARGETS: JSON.stringify(resyncEnv.downstreamTargets) },
      target: RESYNC_TARGET,
      prefix: 'resync',
      users: plan.resync.users,
      receiver: resyncReceiver,
      timeoutMs: 120_000 + plan.resync.users * 20,
    }), () => plan.resync.users);
    log(`resync: CLI ${JSON.stringify(run.cli)}; first callback after ${run.firstCallbackSec.toFixed(1)} s, CLI done after ${run.cliExitSec.toFixed(1)} s, last callback after ${run.lastCallbackSec.toFixed(1)} s`);
    resync = add(
      'resync',
      `targets resync (CLI) of ${plan.resync.users} users (version 1) to a new target → every callback received (req/s = users/s from the CLI's start to the last callback; first callback after ${run.firstCallbackSec.toFixed(1)} s, CLI done after ${run.cliExitSec.toFixed(1)} s)`,
      workerConcurrency,
      [run.round],
    );
    section('resync');
  } else notes.push('Resync skipped: its worker did not start.');

  // --- Bulk import through the client SDK (the importer), against POST /users creates at the same concurrency ---
  const keyFile = join(importDir, 'client-key.pem');
  await writeFile(keyFile, client.privateKeyPem, { mode: 0o600 });
  // Each round sized to last a round's length or a little more at the fastest rate seen so far:
  // the create rate just measured for the first, then the importer's own.
  // Side by side: each import round right after a round of POST /users creates at the same
  // concurrency, so both meet the database and the machine in the same state (the create row of
  // the users section ran ten minutes earlier, on a smaller database and a machine not yet busy
  // with the delivery and resync sections' after-work).
  let expectedRps = api_[`create@${IMPORT_CONCURRENCY}`]!.rps.median;
  const importRounds: RoundStats[] = [];
  const besideRounds: RoundStats[] = [];
  const importSizes: number[] = [];
  for (let r = 0; r < TARGET.rounds; r++) {
    const [beside] = await apiLoad('create', IMPORT_CONCURRENCY, { rounds: 1, warmupSec: r === 0 ? TARGET.warmupSec : 0 });
    besideRounds.push(beside!);
    if (r === 0 && Number.isFinite(beside!.rps)) expectedRps = beside!.rps;
    const importRows = Math.min(plan.importRows.max, Math.max(plan.importRows.min, Math.ceil(expectedRps * TARGET.roundSec * 1.1)));
    importSizes.push(importRows);
    const { round, result, wallSec } = await runImportRound({
      baseUrl: api.baseUrl,
      clientId: client.clientId,
      privateKeyFile: keyFile,
      dir: importDir,
      prefix: `import-${r}`,
      rows: importRows,
      concurrency: IMPORT_CONCURRENCY,
    });
    log(`import round ${r}: ${JSON.stringify(result)}, process ${wallSec.toFixed(1)} s; creates just before: ${beside!.rps.toFixed(0)}/s`);
    importRounds.push(round);
    if (Number.isFinite(round.rps)) expectedRps = Math.max(expectedRps, round.rps);
  }
  const importSizeLabel = Math.min(...importSizes) === Math.max(...importSizes) ? `${importSizes[0]}` : `${Math.min(...importSizes)}–${Math.max(...importSizes)}`;
  const importedBeside = add('import', 'POST /users create (autocannon), a round right before each import round', IMPORT_CONCURRENCY, besideRounds);
  const imported = add(
    'import',
    `import-users (client SDK) of ${importSizeLabel} new users from NDJSON per round (req/s = rows/s over the importer's own seconds)`,
    IMPORT_CONCURRENCY,
    importRounds,
  );
  section('import');

  // --- Growth: the third API, on a database of its own, so the other figures keep a small collection ---
  const growthDriver: Summary[] = [];
  const growth: Summary[] = [];
  const growthStored: number[] = [];
  for (const [k, target] of plan.growth.entries()) {
    let stored = firstGrowthStored;
    if (k > 0) {
      const t0 = performance.now();
      // Where the seeding's CPU goes (a check that no whole-collection read creeps back in: FerretDB's CPU per user).
      stored = await cpuSplit(`growth seeding (users inserted)`, () => seedGrowth(target), (n) => n - growthStored.at(-1)!);
      log(`seeded to ${stored} users in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    }
    // Both sizes measured right after a checkpoint, so neither pays for the other's writes.
    await stores.settle();
    const result = await loadRun({
      kind: 'update',
      url: `${growthApi.baseUrl}/users`,
      connections: GROWTH_CONCURRENCY,
      ...timing(TARGET),
      headers: bearer(growthToken),
      idPrefix: growthApiSet,
      userCount: plan.coldSet,
    });
    growthStored.push(stored);
    growth.push(add('growth', `POST /users update (cold set of ${plan.coldSet}), ${stored} users stored`, GROWTH_CONCURRENCY, result.rounds));
    growthDriver.push(add('growth', `driver updateOne conditional on version, ${stored} users stored`, GROWTH_CONCURRENCY, await driverLoad('update', GROWTH_CONCURRENCY, { mongoUrl: growthDb, org: growthDriverOrg, userCount: DRIVER_GROWTH_SET, ...timing(INFO) })));
  }

  section('growth');

  // --- The cost of a /metrics scrape of the API with few and with many delivery rows stored (issue 14) ---
  // Rows bulk-inserted into the load API's own database (no worker runs there); scrapes one at a time.
  const deliveryRows = mongo.db().collection('deliveries');
  const scrapes: Summary[] = [];
  const scrapeRows: number[] = [];
  for (const wanted of plan.scrape.rows) {
    const t0 = performance.now();
    const stored = await cpuSplit(`delivery-row seeding (rows stored)`, () => seedDeliveryRows(deliveryRows, client.organizationId, wanted), (n) => n);
    if (smoke) await expectStored('delivery rows', deliveryRows, stored);
    log(`delivery rows: ${stored} stored in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    await stores.settle();
    scrapeRows.push(stored);
    scrapes.push(add('metrics', `GET /metrics of the API, ${stored} delivery rows stored (p50 = median over rounds of each round's median scrape, ms)`, 1, await timeScrapes(`${api.origin}/metrics`, TARGET)));
  }
  section('metrics scrape');

  // --- Ratios: the ratio of medians, and its spread from the rounds (lowest over highest to highest over lowest) ---
  const ratios: Ratio[] = [];
  type Pick = (s: Summary) => Spread;
  const divide = (name: string, num: Summary, den: Summary, pick: Pick, target?: string, met?: (v: number) => boolean) => {
    const a = pick(num);
    const b = pick(den);
    const value = a.median / b.median;
    ratios.push({ name, value, low: a.min / b.max, high: a.max / b.min, ...(target ? { target, met: met!(value) } : {}) });
  };
  const figure = (name: string, s: Spread, target?: string, met?: (v: number) => boolean) =>
    ratios.push({ name, value: s.median, low: s.min, high: s.max, ...(target ? { target, met: met!(s.median) } : {}) });
  const rps: Pick = (s) => s.rps;
  const p50: Pick = (s) => s.p50;
  const p99: Pick = (s) => s.p99;
  for (const c of plan.concurrencies) {
    for (const op of OPS) {
      const a = api_[`${op}@${c}`]!;
      const d = drv[`${op}@${c}`]!;
      const min = op === 'noop' ? 0.8 : 0.6;
      const what = op === 'create' ? op : `${op} (cold set)`;
      divide(`${what} c=${c}: API / driver throughput`, a, d, rps, hasTarget(op, c) ? `>= ${min}` : undefined, (v) => v >= min);
      divide(`${what} c=${c}: API / driver p99`, a, d, p99);
      divide(`${what} c=${c}: API / bare Fastify throughput`, a, bareSummaries[c]!, rps);
    }
  }
  ratios.push({ name: `API CPU per POST /users update, cold set, c=${HEADLINE} (ms)`, value: cpu.api! });
  ratios.push({ name: `driver CPU per conditional updateOne, c=${HEADLINE} (ms)`, value: cpu.driver! });
  ratios.push({ name: 'CPU per update: API / driver', value: cpu.api! / cpu.driver!, target: '<= 3', met: cpu.api! / cpu.driver! <= 3 });
  // Information: the API against the driver doing the same database work (a read, then the conditional write).
  if (readUpdate) divide(`update (cold set) c=${HEADLINE}: API / driver findOne + updateOne throughput`, api_[`update@${HEADLINE}`]!, readUpdate, rps);
  if (cpu.driverReadUpdate) ratios.push({ name: 'CPU per update: API / driver findOne + updateOne', value: cpu.api! / cpu.driverReadUpdate });
  divide(`update p99 at ${halfRate}/s asked (half the API peak): API / driver`, apiHalf, drvHalf, p99, '<= 3', (v) => v <= 3);
  divide('token endpoint / bare Fastify token route doing the same work', tokenApi, tokenBareRoute, rps, '>= 0.7', (v) => v >= 0.7);
  divide('token endpoint / bare jose loop (verify + sign only)', tokenApi, tokenBare, rps);
  if (workerWorks) {
    figure(`end to end p99 at ${E2E_TARGET_RATE} events/s (ms)`, e2eSummaries[E2E_TARGET_RATE]!.p99, '< 100', (v) => v < 100);
    if (e2eSummaries[300]) figure('end to end p99 at 300 events/s (ms)', e2eSummaries[300]!.p99);
    if (e2eSummaries[10]) figure('end to end p50 at 10 events/s (ms)', e2eSummaries[10]!.p50);
  }
  if (ourDelivery) divide('delivery throughput: ours / bare BullMQ', ourDelivery, bareDelivery, rps, '>= 0.5', (v) => v >= 0.5);
  if (ourDelivery) divide('delivery, ours / bare BullMQ + same DB work (bare driver)', ourDelivery, bareDbDelivery, rps);
  divide('delivery, bare BullMQ + same DB work / bare BullMQ (what the database work alone costs)', bareDbDelivery, bareDelivery, rps);
  if (resync) divide('resync to one target: users/s / bare BullMQ deliveries/s', resync, bareDelivery, rps, '>= 0.5', (v) => v >= 0.5);
  if (resync) divide('resync users/s / bare BullMQ + same DB work deliveries/s', resync, bareDbDelivery, rps);
  divide(`bulk import c=${IMPORT_CONCURRENCY}: importer rows/s / POST /users creates/s (rounds side by side)`, imported, importedBeside, rps, '>= 0.8', (v) => v >= 0.8);
  divide(`bulk import c=${IMPORT_CONCURRENCY}: importer rows/s / the users section's creates/s`, imported, api_[`create@${IMPORT_CONCURRENCY}`]!, rps);
  const sizes = `${growthStored[1]} / at ${growthStored[0]} users stored (cold set of ${plan.coldSet})`;
  divide(`growth: update p50 at ${sizes}`, growth[1]!, growth[0]!, p50, '<= 1.25', (v) => v <= 1.25);
  divide(`growth: driver conditional update p50 at ${growthStored[1]} / at ${growthStored[0]} users stored`, growthDriver[1]!, growthDriver[0]!, p50);
  divide(`growth: update p99 at ${sizes}`, growth[1]!, growth[0]!, p99);
  divide(`/metrics scrape time at ${scrapeRows[1]} / at ${scrapeRows[0]} delivery rows`, scrapes[1]!, scrapes[0]!, p50, '<= 1.5', (v) => v <= 1.5);

  const wallSec = (performance.now() - runStarted) / 1000;
  log(`measured in ${wallSec.toFixed(0)} s`);
  notes.push(
    `Driver baseline: one process, N concurrent workers (at most ${MONGO_POOL_SIZE} at the database at once, the pool size of the API and of every baseline), the same class of work as the API: insertOne for a create, one updateOne conditional on the user's version for an update (the API's write; the driver knows the version, so it skips the read the API needs), one findOne for a no-op (the API's read), on the API's own collection (same indexes, same size at that moment) under an organization of its own.`,
    `Updates and no-ops (API and driver) cycle, in order, over a cold set of ${plan.coldSet} users (${plan.coldSet / API_RECENT_USERS} times the API's cache of ${API_RECENT_USERS} recent users${smoke ? '; smoke: not cold, too small' : ''}), so the API never finds its user cached; one row at concurrency ${HEADLINE} uses a set of ${CACHED_SET} that fits the cache, labelled "cached set" (no read before the write).`,
    'The API and the worker log at LOG_LEVEL=info, the level that ships (a line per request, a line per delivery, read and thrown away by the bench as a log collector would).',
    'The API measured for throughput has no worker consuming its queue; end to end runs a second API and the worker on a database and queue prefix of their own (started with the rest at the beginning, idle until then). Each API gets an unmeasured second of load at the start, besides each scenario\'s own warm-up.',
    'Throughput (req/s) is responses over first request to last response, timed by the load generator itself (autocannon\'s own duration ends on a 1 s sampling tick).',
    'Token endpoint baseline: a bare Fastify route (its own process, the bare mongodb driver, the same pool) doing the necessary work and nothing else: one findOne of the client, RS256 verify of the assertion with the same checks (the key object cached per client, as the API does), one insertOne of the jti into used_assertions, an EdDSA token signed; bare jose (verify + sign in a loop, no HTTP, no database) is shown for information.',
    `Token rounds run a fixed number of pre-signed assertions (each jti is single use), signed before each round and sized from the fastest rate seen so far to last about ${TARGET.roundSec} s or more.`,
    `Delivery, ours: after an unmeasured warm-up round of ${plan.delivery.warmup}, per round both of the worker's BullMQ queues paused from the bench (Queue.pause); ${plan.delivery.jobs} creates POSTed to the e2e API; the events queue resumed (the "fan-out" row: until all ${plan.delivery.jobs} delivery jobs are queued); then the deliveries queue resumed: the worker's delivery processor (concurrency ${workerConcurrency}: its database reads and writes, signing, POST) — deliveries/s is the count over first to last callback received. API idle meanwhile.`,
    `Delivery, bare BullMQ: its own process and key prefix, the same ${plan.delivery.jobs} jobs per round (a callback body each) added to a paused plain queue, resumed; a plain Worker at concurrency ${workerConcurrency} signs each body (hex HMAC-SHA256 of timestamp + body) and POSTs it with fetch to the same receiver; nothing else. Same count over first to last callback received, after the same warm-up of ${plan.delivery.warmup} jobs.`,
    `Delivery, bare BullMQ + same database work (bare driver): the same process, worker, concurrency, jobs per round, warm-up and retention as bare BullMQ (its own key prefix), ${INFO.rounds} rounds (information), each job also doing our delivery processor's database work with the bare mongodb driver in a database of its own on the same server (pool ${MONGO_POOL_SIZE}): findOne of the user by _id and of the SyncState row by _id before the POST; after it an upsert of the Delivery row ($set, $setOnInsert, $inc attempts), an upsert of the SyncState row ($set, $setOnInsert, $max delivered_version) and an insert of a DeliveryAttempt, group-committed (one unordered bulkWrite per collection of the jobs finished meanwhile; ours batches the SyncState and attempt writes the same way but writes each Delivery row on its own, which the fan-out inserts at the same time, so this limit is a strict one). Seeded before the warm-up with what ours finds: the users in the stored shape and their pending Delivery rows (the fan-out's), no SyncState row, the same indexes. Shown for information, no target: on FerretDB (each operation SQL over PostgreSQL) the database work alone may keep any worker far below the bare rate, and this row is that limit (issue 15).`,
    `Resync: ${plan.resync.users} users seeded in the stored shape (version 1, created a day ago, the outbox sweep's cursor already past them) in a database of their own, with a worker of its own (delivery concurrency ${workerConcurrency}) whose one target is new to all of them; \`targets resync\` run as the CLI binary (its process start counted; batches of 500, at most 2,000 resync jobs waiting) while the worker delivers to a receiver of its own; users/s = users over the CLI's start to the last user's callback. One timed run of the whole set (a resync is long), so no spread of its own; the ratio divides by the bare BullMQ deliveries/s of this run (its spread is the bare rounds').`,
    `Import: ${TARGET.rounds} rounds, each a new NDJSON file of new users in a temporary directory (sized to last about ${TARGET.roundSec} s or a little more at the fastest rate seen so far: the create rate just measured for the first round, then the importer's), imported by the importer's binary (apps/importer through @connect/client, its heap caps) at --concurrency ${IMPORT_CONCURRENCY} against the load API with the bench's client; rows/s over the importer's own "seconds" (token request included, process start not); each round comes right after a round of POST /users creates at c=${IMPORT_CONCURRENCY} (autocannon, the same length), and the ratio with a target divides by those; the users section's create row, measured earlier on a smaller database, is shown beside it for information.`,
    `Memory: after the first pass, one block of load (the users rows at concurrency ${HEADLINE}${workerWorks ? ` and the end-to-end rounds at ${E2E_TARGET_RATE}/s` : ''}, 2 rounds of ${INFO.roundSec} s each) run four times, the first two unmeasured (after the end-to-end section's idle stretch, V8 takes about two blocks to grow the heap back to its working size); each process's RSS sampled every 250 ms while the block runs, and its highest value compared between the two measured runs (a single reading at the end depended on how long the process had idled before it); the delivery rounds come after both. The API and the worker run with the production image's NODE_OPTIONS (${IMAGE_NODE_FLAGS.join(' ')}: the heap cap of docs/operations.md, Memory; without it V8 on a big machine let the heap reach about 3.5 times the live heap before a full GC, and peak RSS swung 200-320 MiB between identical blocks). Beside it, for information, the live heap: the API and the worker run with --trace-gc --trace-gc-ignore-scavenger (a stdout line per full GC only), and the figure is the smallest heap a full GC left during the run. A leak grows it; peak RSS also grows when V8 lets the heap grow further between GCs, which is not a leak.`,
    `Metrics scrape: ${plan.scrape.rows.join(' then ')} delivery rows (finished and pending, three targets) bulk-inserted into the load API's database after the growth section (settled, autovacuum included, before each size); at each size, GET /metrics one after another for ${TARGET.rounds} rounds of ${TARGET.roundSec} s after ${TARGET.warmupSec} s unmeasured; the figure is the median over rounds of each round's median scrape time.`,
    'CPU per update: the CPU time (/proc/<pid>/stat, user + system) of the API process and of the driver process over their whole headline update run, warm-up included, divided by the updates answered in it; one figure each, no spread.',
    `Growth: a third API process on a database of its own, updates over the same cold set of ${plan.coldSet} users at concurrency ${GROWTH_CONCURRENCY} with about ${plan.growth.join(' then ')} users stored (the issue's 10,000 cannot hold a set ten times the cache beside the driver's); the driver's conditional update on the same collection (a set of ${DRIVER_GROWTH_SET}: it has no cache) beside each.`,
    'Rate limits stay enabled at 10,000,000 per minute (per client, per token IP): their Redis round trip is counted, their 429s are not.',
    'Offered rates: an open loop of their own (one request every 1/rate s, up to max(64, rate/2) in flight, so a slow answer does not hold back the next send); "offered/s" is what was really sent, req/s what was answered, over first send to last answer.',
    'Load generator: autocannon 9 in a child process (offered rates: its own paced loop); bare Fastify, driver, jose and BullMQ baselines each in a process of their own. Machine shared with other work: compare within a run.',
  );
  notes.push(...cpuNotes);
  const md = writeReport({
    meta: {
      date: new Date().toISOString(),
      commit,
      mode,
      sections: sectionsRun,
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model ?? 'unknown',
      node: process.version,
      database,
      target: TARGET,
      info: INFO,
      wallSeconds: Math.round(wallSec),
      notes,
    },
    rows,
    ratios,
    memory,
  });
  process.stdout.write(`${md}\n`);
} finally {
  await cleanUp();
  log(`done in ${((performance.now() - runStarted) / 1000).toFixed(0)} s`);
}
const missing = SECTIONS.filter((s) => !sectionsRun.includes(s));
if (missing.length) {
  log(`sections not run: ${missing.join(', ')}`);
  // Smoke exists to tell that every section still runs: one that did not is a failure.
  if (smoke) process.exit(1);
}
process.exit(0);
