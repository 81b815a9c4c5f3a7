/**
 * `pnpm bench [--quick] [--cpu-prof]`: measures the service against its limits,
 * side by side in one run (see issue 5), and writes bench/results/latest.{json,md}
 * (and quick.* or full.*).
 *
 * Order: everything starts at once (services, baseline processes, seeded users);
 * then POST /users (API, the bare driver, bare Fastify, per concurrency), p99 at
 * half the peak rate, the token endpoint against bare jose, end to end through the
 * worker, delivery throughput against a bare BullMQ worker, memory after a second
 * run, growth.
 *
 * Budget (issue): quick under 2 minutes, full under 10, on the 2-CPU bench machine.
 * The load generator, the driver and each baseline are one long-lived process
 * each, given one scenario after another, so no scenario pays a process start.
 */
import { cpus } from 'node:os';
import { MongoClient } from 'mongodb';
import { Redis } from 'ioredis';
import { Queue } from 'bullmq';
import { deliveryQueueName, EVENTS_QUEUE } from '@connect/shared';
import { DEFAULT_WORKER_OPTIONS, workerOptionsFromEnv } from '../apps/worker/src/worker-options.ts';
import { fetchAccessToken, registerBenchClient, signAssertion } from './bench-auth.ts';
import { startBenchChild, spawnTs, BENCH_DIR } from './bench-child.ts';
import { seedUsers } from './bench-users.ts';
import type { BullmqBaselineRound, BullmqBaselineSpec } from './bullmq-baseline.ts';
import { driverPrefix, type DriverSpec } from './driver-baseline.ts';
import { runEndToEnd, startReceiver, waitForArrivals } from './end-to-end.ts';
import type { LoadResult, LoadSpec } from './load-users.ts';
import { writeReport, type Memory, type Ratio, type Row } from './report.ts';
import { summarise, type RoundStats, type Summary } from './round-stats.ts';
import { databaseUrl, newRunId, startApi, startDatastores, startWorkerProcess, type ApiProcess, type ServiceProcess } from './start-stack.ts';
import type { TokenBaselineSpec } from './token-baseline.ts';

const quick = process.argv.includes('--quick');
const cpuProfile = process.argv.includes('--cpu-prof');
const plan = quick
  ? {
      concurrencies: [32],
      roundSec: 1,
      warmupSec: 0.3,
      rounds: 3,
      token: { warmup: 150, minPerRound: 200, maxPerRound: 5_000 },
      e2eRates: [100],
      e2eSec: 1,
      growth: [2_000, 20_000],
      updateSet: 500,
      delivery: { ours: 200, bare: 800 },
    }
  : {
      concurrencies: [8, 32, 128],
      roundSec: 1.5,
      warmupSec: 0.5,
      rounds: 3,
      token: { warmup: 300, minPerRound: 500, maxPerRound: 10_000 },
      e2eRates: [10, 100, 300],
      e2eSec: 2,
      growth: [10_000, 200_000],
      updateSet: 500,
      delivery: { ours: 500, bare: 2_000 },
    };
const HEADLINE = 32;
/** Growth is about the cost of one update, not queueing: a lower concurrency keeps rounds from being all queue. */
const GROWTH_CONCURRENCY = 8;
const OPS = ['create', 'update', 'noop'] as const;
type Op = (typeof OPS)[number];
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
const log = (msg: string) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)} +${((performance.now() - runStarted) / 1000).toFixed(0)}s] ${msg}\n`);
const nowMs = () => performance.timeOrigin + performance.now();
const runId = newRunId();
const rows: Row[] = [];
const notes: string[] = [];
const add = (group: string, scenario: string, concurrency: number | string, rounds: RoundStats[]): Summary => {
  const summary = summarise(rounds);
  // Nothing answered in any round: the stack is stuck (FerretDB can be, see driver-baseline.ts); stop here.
  if (!(summary.requests.max > 0)) throw new Error(`${group} ${scenario} c=${concurrency}: no request answered in ${rounds.length} rounds (${JSON.stringify(rounds[0])})`);
  rows.push({ group, scenario, concurrency, summary });
  const latency = Number.isFinite(summary.p50.median) ? `, p50 ${summary.p50.median.toFixed(1)} ms, p99 ${summary.p99.median.toFixed(1)} ms` : '';
  log(`${group} ${scenario} c=${concurrency}: ${summary.rps.median.toFixed(0)} req/s (${summary.rps.min.toFixed(0)}–${summary.rps.max.toFixed(0)})${latency}`);
  return summary;
};

const stores = await startDatastores(runId);
const dbName = (part: string) => (stores.kind === 'mongo-url' ? `bench_${part}_${runId.replace(/-/g, '_')}` : `bench_${part}`);
const apiDb = databaseUrl(stores.mongoServerUrl, dbName('api'));
const e2eDb = databaseUrl(stores.mongoServerUrl, dbName('e2e'));
const growthDb = databaseUrl(stores.mongoServerUrl, dbName('growth'));
const mongo = await new MongoClient(apiDb).connect();
const buildInfo = await mongo.db().admin().command({ buildInfo: 1 });
const database = buildInfo.ferretdbVersion ? `FerretDB ${buildInfo.ferretdbVersion} (MongoDB ${buildInfo.version} wire), PostgreSQL backend` : `MongoDB ${buildInfo.version}`;
log(`database: ${database}; redis: ${stores.redisUrl}`);

const prefixes = { load: `bench-${runId}-load`, e2e: `bench-${runId}-e2e`, growth: `bench-${runId}-growth`, bare: `bench-${runId}-bare` };
const started: ServiceProcess[] = [];
const children = {
  load: startBenchChild('load-users'),
  driver: startBenchChild('driver-baseline'),
  token: startBenchChild('token-baseline'),
  bullmq: startBenchChild('bullmq-baseline'),
};
let receiverClose: (() => Promise<void>) | undefined;
let growthMongo: MongoClient | undefined;

let cleaning: Promise<void> | undefined;
/** Once, whoever asks first (a signal, or the end of the run that the signal interrupted). */
const cleanUp = (): Promise<void> => (cleaning ??= cleanUpOnce());
async function cleanUpOnce(): Promise<void> {
  await Promise.allSettled([...started.map((p) => p.stop()), ...Object.values(children).map((c) => c.close())]);
  await receiverClose?.();
  await growthMongo?.close().catch(() => undefined);
  const redis = new Redis(stores.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    for (const prefix of Object.values(prefixes)) {
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
  if (stores.kind === 'mongo-url') for (const url of [apiDb, e2eDb, growthDb]) await mongo.db(new URL(url).pathname.slice(1)).dropDatabase().catch(() => undefined);
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
    downstreamTargets: [{ name: 'bench', url: receiver.url, secrets: ['bench-secret-0123456789'] }],
    cpuProfile,
  };
  const startBare = async (): Promise<number> => {
    const bare = spawnTs(`${BENCH_DIR}/bare-fastify.ts`, [], {}, [], true);
    started.push({ name: 'bare-fastify', process: bare, rssMiB: () => NaN, stderr: () => '', stop: async () => void bare.kill('SIGTERM') });
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
  const [api, e2eApi, worker, growthApi, barePort, client, e2eClient, growthClient] = await Promise.all([
    timed('api', track(startApi('api', { mongoUrl: apiDb, redisUrl: stores.redisUrl, queuePrefix: prefixes.load, cpuProfile }))),
    timed('api-e2e', track(startApi('api-e2e', e2eEnv))),
    timed('worker', track(startWorkerProcess('worker', e2eEnv))),
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

  // Fresh user sets (locale A) for every update/no-op run, API's and driver's, seeded now in parallel,
  // so every update run knows each user's state; and the growth database up to its first size.
  const apiSets: string[] = [];
  const driverOrgs: string[] = [];
  const setsPerKind = plan.concurrencies.length * 2 + 1 + (quick ? 1 : plan.concurrencies.length * 2);
  for (let i = 0; i < setsPerKind; i++) apiSets.push(`set-${i}`);
  for (let i = 0; i < plan.concurrencies.length * 2 + 1; i++) driverOrgs.push(`driver-${runId}-${i}`);
  const growthSet = (target: number) => ({ api: `grow-${target}`, driverOrg: `driver-grow-${target}` });
  /** Seeds the growth collection to `target` users: filler, then the API's and the driver's update sets. */
  const seedGrowth = async (target: number): Promise<number> => {
    const have = await growthUsers.countDocuments({});
    const { api: apiSet, driverOrg } = growthSet(target);
    await seedUsers(growthUsers, growthClient.organizationId, `fill-${target}`, 0, Math.max(0, target - 2 * plan.updateSet - have));
    await Promise.all([seedUsers(growthUsers, growthClient.organizationId, apiSet, 0, plan.updateSet), seedUsers(growthUsers, driverOrg, driverPrefix(driverOrg), 0, plan.updateSet)]);
    return growthUsers.countDocuments({});
  };
  const loadRun = (spec: LoadSpec) => children.load.run<LoadResult>(spec);
  // While the sets are seeded, a second of load on each API (and through the worker), unmeasured:
  // JIT and pools are warm before their first figure, not only the first scenario of each.
  const warmUp = (kind: 'create' | 'noop', baseUrl: string, t: string, extra: Partial<LoadSpec> = {}): Promise<LoadResult> =>
    loadRun({ kind, url: `${baseUrl}/users`, connections: HEADLINE, durationSec: 1, rounds: 1, warmupSec: 0, headers: bearer(t), idPrefix: `warm-${kind}`, userCount: plan.updateSet, ...extra });
  const seedStarted = performance.now();
  const [, , firstGrowthStored, e2eWarm] = await Promise.all([
    Promise.all(apiSets.map((set) => seedUsers(users, client.organizationId, set, 0, plan.updateSet))),
    Promise.all(driverOrgs.map((org) => seedUsers(users, org, driverPrefix(org), 0, plan.updateSet))),
    seedGrowth(plan.growth[0]!).then(async (stored) => {
      // No-ops on the update set leave it as seeded.
      await warmUp('noop', growthApi.baseUrl, growthToken, { idPrefix: growthSet(plan.growth[0]!).api, connections: GROWTH_CONCURRENCY });
      return stored;
    }),
    // The end-to-end warm-up is also the probe: 50 creates whose callbacks must all arrive.
    warmUp('create', api.baseUrl, token).then(() => warmUp('create', e2eApi.baseUrl, e2eToken, { overallRate: 50, connections: 16, recordAnswers: true })),
  ]);
  log(`started; seeded ${apiSets.length + driverOrgs.length} update sets and ${firstGrowthStored} growth users, warmed the APIs, in ${((performance.now() - seedStarted) / 1000).toFixed(1)} s`);

  let createNo = 0;
  const apiLoad = async (op: Op, c: number, extra: Partial<LoadSpec> = {}): Promise<RoundStats[]> => {
    const spec: LoadSpec = {
      kind: op,
      url: `${api.baseUrl}/users`,
      connections: c,
      durationSec: plan.roundSec,
      rounds: plan.rounds,
      warmupSec: plan.warmupSec,
      headers: bearer(token),
      idPrefix: op === 'create' ? `create-${createNo++}` : apiSets.shift()!,
      userCount: plan.updateSet,
      ...extra,
    };
    const result = await loadRun(spec);
    const odd = Object.entries(result.statuses).filter(([status]) => !status.startsWith('2'));
    if (odd.length) log(`${op} c=${c}: non-2xx answers ${JSON.stringify(Object.fromEntries(odd))}`);
    return result.rounds;
  };
  /** The driver on the API's own collection (its indexes, its size), under an organization of its own:
   * on FerretDB every lookup costs with the collection's size, so only the same collection compares. */
  const driverLoad = async (op: Op, c: number, extra: Partial<DriverSpec> = {}): Promise<RoundStats[]> =>
    (
      await children.driver.run<{ rounds: RoundStats[] }>({
        mongoUrl: apiDb,
        op,
        concurrency: c,
        durationSec: plan.roundSec,
        rounds: plan.rounds,
        warmupSec: plan.warmupSec,
        userCount: plan.updateSet,
        ...extra,
        ...(op === 'create' ? {} : { org: extra.org ?? driverOrgs.shift()! }),
      } satisfies DriverSpec)
    ).rounds;

  // --- POST /users: API, driver, bare Fastify ---
  const api_: Record<string, Summary> = {};
  const drv: Record<string, Summary> = {};
  const bareSummaries: Record<number, Summary> = {};
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
        await loadRun({
          kind: 'fixed',
          url: `http://127.0.0.1:${barePort}/users`,
          connections: c,
          durationSec: plan.roundSec,
          rounds: plan.rounds,
          warmupSec: plan.warmupSec,
          fixedBody: '{"provider_email":"jane.doe@example.com","external_provider_id":"ehr-42","settings":{"speech_locale":"ENGLISH_US"}}',
        })
      ).rounds,
    );
  }

  // --- p99 at half the API's peak update rate, API and driver at the same offered rate ---
  const halfRate = Math.max(10, Math.round(api_[`update@${HEADLINE}`]!.rps.median / 2));
  const apiHalf = add('api', `POST /users update @ ${halfRate}/s offered`, HEADLINE, await apiLoad('update', HEADLINE, { overallRate: halfRate }));
  const drvHalf = add('driver', `updateOne upsert @ ${halfRate}/s offered`, HEADLINE, await driverLoad('update', HEADLINE, { rate: halfRate }));

  // --- Token endpoint against the bare jose loop ---
  const tokenRounds = (
    await loadRun({
      kind: 'token',
      url: api.tokenUrl,
      connections: HEADLINE,
      durationSec: plan.roundSec,
      rounds: plan.rounds,
      warmupSec: 0,
      token: { clientId: client.clientId, privateKeyPem: client.privateKeyPem, audience: api.tokenUrl, ...plan.token },
    })
  ).rounds;
  const tokenApi = add('api', 'POST /oauth/token', HEADLINE, tokenRounds);
  log(`token rounds: ${tokenRounds.map((r) => `${r.requests} in ${(r.requests / r.rps).toFixed(2)} s`).join(', ')}`);
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
        durationSec: plan.roundSec,
        rounds: plan.rounds,
        warmupSec: plan.warmupSec,
      } satisfies TokenBaselineSpec)
    ).rounds,
  );

  // --- End to end: the second API and the worker ---
  const e2eSummaries: Record<number, Summary> = {};
  let e2eRun = 0;
  const endToEnd = async (group: string) => {
    for (const rate of plan.e2eRates) {
      const summary = add(
        group,
        `answer → callback received @ ${rate}/s (req/s = delivered/s)`,
        16,
        // At least 100 events per round, so a median is over 100 events even at a low rate.
        await runEndToEnd(receiver, loadRun, { baseUrl: e2eApi.baseUrl, token: e2eToken, rate, durationSec: Math.max(plan.e2eSec, Math.ceil(100 / rate)), rounds: plan.rounds, idPrefix: `e2e${e2eRun++}-${rate}`, drainTimeoutMs: 15_000 }),
      );
      // The ratios are those of the first pass, like every other ratio (run 2 is for memory).
      e2eSummaries[rate] ??= summary;
    }
  };

  // --- Delivery throughput: our worker's deliveries against a bare BullMQ worker doing the same signed POST ---
  const redis = new Redis(stores.redisUrl, { maxRetriesPerRequest: null });
  const eventsQueue = new Queue(EVENTS_QUEUE, { connection: redis, prefix: prefixes.e2e });
  // One delivery queue per target now; the bench has one target, `bench`.
  const deliveriesQueue = new Queue(deliveryQueueName('bench'), { connection: redis, prefix: prefixes.e2e });
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
  const ourDeliveries = async (n: number): Promise<{ deliveries: RoundStats[]; fanOut: RoundStats[] }> => {
    const deliveries: RoundStats[] = [];
    const fanOut: RoundStats[] = [];
    try {
      for (let r = 0; r < plan.rounds; r++) {
        await Promise.all([eventsQueue.pause(), deliveriesQueue.pause()]);
        const events0 = await queued(eventsQueue);
        const deliveries0 = await queued(deliveriesQueue);
        const result = await loadRun({
          kind: 'create',
          url: `${e2eApi.baseUrl}/users`,
          connections: 64,
          durationSec: 0,
          amount: n,
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
        fanOut.push({ rps: ids.length / ((fanOutDone - fanOutAt) / 1000), ...noLatency, requests: ids.length, errors: fannedOut ? 0 : 1 });
        await deliveriesQueue.resume();
        const { arrived, first, last } = await waitForArrivals(receiver, ids, 60_000);
        deliveries.push({ rps: arrived / ((last - first) / 1000), ...noLatency, requests: arrived, errors: ids.length - arrived });
      }
    } finally {
      await Promise.allSettled([eventsQueue.resume(), deliveriesQueue.resume()]);
    }
    return { deliveries, fanOut };
  };
  const bareDeliveries = async (n: number): Promise<RoundStats[]> => {
    const { rounds } = await children.bullmq.run<{ rounds: BullmqBaselineRound[] }>({
      redisUrl: stores.redisUrl,
      prefix: prefixes.bare,
      receiverUrl: receiver.url,
      secret: 'bench-secret-0123456789',
      concurrency: workerConcurrency,
      jobs: n,
      warmupJobs: 200,
      rounds: plan.rounds,
      idPrefix: 'bare',
      timeoutMs: 60_000,
    } satisfies BullmqBaselineSpec);
    const out: RoundStats[] = [];
    for (const r of rounds) {
      const ids = Array.from({ length: r.jobs }, (_, i) => `${r.idPrefix}-${i}`);
      const { arrived, first, last } = await waitForArrivals(receiver, ids, 5_000);
      out.push({ rps: arrived / ((last - first) / 1000), ...noLatency, requests: arrived, errors: r.jobs - arrived + r.failed });
    }
    return out;
  };
  let ourDelivery: Summary | undefined;
  let bareDelivery: Summary | undefined;
  const deliverySuite = async (group: string): Promise<Summary> => {
    const ours = await ourDeliveries(plan.delivery.ours);
    add(group, `our fan-out: ${plan.delivery.ours} events queued → ${plan.delivery.ours} delivery jobs queued (req/s = events/s)`, fanOutConcurrency, ours.fanOut);
    return add(group, `our worker: ${plan.delivery.ours} delivery jobs queued → callbacks received (req/s = deliveries/s)`, workerConcurrency, ours.deliveries);
  };

  let workerWorks = false;
  if (worker) {
    const probeIds = Object.keys(e2eWarm.answers ?? {});
    const probe = await waitForArrivals(receiver, probeIds, 20_000);
    workerWorks = probeIds.length > 0 && probe.arrived === probeIds.length;
    if (workerWorks) await endToEnd('end-to-end');
    else notes.push(`End to end and our delivery throughput skipped: the worker started but delivered ${probe.arrived}/${probeIds.length} probe events (the warm-up's creates) within 20 s.`);
  } else notes.push('End to end and our delivery throughput skipped: the worker did not start.');

  // --- Memory: RSS after the run, then after a second run (the delivery rounds come after: they are not in either) ---
  const rss1 = { api: api.rssMiB(), worker: worker?.rssMiB() ?? NaN };
  if (quick) {
    // Quick: the second run is one round of updates at the headline concurrency.
    add('api (run 2)', 'POST /users update', HEADLINE, await apiLoad('update', HEADLINE, { rounds: 1 }));
  } else {
    for (const c of plan.concurrencies) for (const op of OPS) add('api (run 2)', `POST /users ${op}`, c, await apiLoad(op, c));
    if (workerWorks) await endToEnd('end-to-end (run 2)');
  }
  const rss2 = { api: api.rssMiB(), worker: worker?.rssMiB() ?? NaN };
  const memory: Memory[] = [{ process: 'api', afterFirstMiB: rss1.api, afterSecondMiB: rss2.api, growthPct: (rss2.api / rss1.api - 1) * 100 }];
  if (worker) memory.push({ process: 'worker', afterFirstMiB: rss1.worker, afterSecondMiB: rss2.worker, growthPct: (rss2.worker / rss1.worker - 1) * 100 });

  if (workerWorks) ourDelivery = await deliverySuite('delivery');
  bareDelivery = add('bare bullmq', `sign HMAC + POST: ${plan.delivery.bare} jobs queued → callbacks received (req/s = deliveries/s)`, workerConcurrency, await bareDeliveries(plan.delivery.bare));
  await Promise.allSettled([eventsQueue.close(), deliveriesQueue.close()]);
  redis.disconnect();

  // --- Growth: the third API, on a database of its own, so the other figures keep a small collection ---
  const growthDriver: Summary[] = [];
  const growth: Summary[] = [];
  for (const [k, target] of plan.growth.entries()) {
    let stored = firstGrowthStored;
    if (k > 0) {
      const t0 = performance.now();
      stored = await seedGrowth(target);
      log(`seeded to ${stored} users in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    }
    // Both sizes measured right after a checkpoint, so neither pays for the other's writes.
    await stores.settle();
    const { api: apiSet, driverOrg } = growthSet(target);
    const result = await loadRun({
      kind: 'update',
      url: `${growthApi.baseUrl}/users`,
      connections: GROWTH_CONCURRENCY,
      durationSec: plan.roundSec,
      rounds: plan.rounds,
      warmupSec: plan.warmupSec,
      headers: bearer(growthToken),
      idPrefix: apiSet,
      userCount: plan.updateSet,
    });
    growth.push(add('growth', `POST /users update, ${stored} users stored`, GROWTH_CONCURRENCY, result.rounds));
    growthDriver.push(add('growth', `driver updateOne upsert, ${stored} users stored`, GROWTH_CONCURRENCY, await driverLoad('update', GROWTH_CONCURRENCY, { mongoUrl: growthDb, org: driverOrg })));
  }

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
  if (ourDelivery) ratio('delivery throughput: ours / bare BullMQ', ourDelivery.rps.median / bareDelivery.rps.median, '>= 0.5', (v) => v >= 0.5);
  ratio(`growth: update p50 at ${plan.growth[1]} / at ${plan.growth[0]} users`, growth[1]!.p50.median / growth[0]!.p50.median, '<= 1.25', (v) => v <= 1.25);
  ratio(`growth: driver upsert p50 at ${plan.growth[1]} / at ${plan.growth[0]} users`, growthDriver[1]!.p50.median / growthDriver[0]!.p50.median);
  ratio(`growth: update p99 at ${plan.growth[1]} / at ${plan.growth[0]} users`, growth[1]!.p99.median / growth[0]!.p99.median);

  const wallSec = (performance.now() - runStarted) / 1000;
  log(`measured in ${wallSec.toFixed(0)} s`);
  notes.push(
    'Driver baseline: one process, N concurrent workers (at most 48 at the database at once; the API\'s pool is 50), one round trip per operation (insertOne; updateOne with upsert for updates and no-ops), on the API\'s own collection (same indexes, same size at that moment) under an organization of its own.',
    'The API measured for throughput has no worker consuming its queue; end to end runs a second API and the worker on a database and queue prefix of their own (started with the rest at the beginning, idle until then). Each API gets an unmeasured second of load at the start, besides each scenario\'s own warm-up.',
    'Throughput (req/s) is responses over first request to last response, timed by the load generator itself (autocannon\'s own duration ends on a 1 s sampling tick).',
    `Token rounds run a fixed number of pre-signed assertions (each jti is single use), signed before each round and sized from the fastest rate seen so far to last about ${plan.roundSec} s or more.`,
    `Delivery, ours: both of the worker's BullMQ queues paused from the bench (Queue.pause); ${plan.delivery.ours} creates POSTed to the e2e API; the events queue resumed (the "fan-out" row: until all ${plan.delivery.ours} delivery jobs are queued); then the deliveries queue resumed: the worker's delivery processor (concurrency ${workerConcurrency}: its database reads and writes, signing, POST) — deliveries/s is the count over first to last callback received. API idle meanwhile.`,
    `Delivery, bare BullMQ: its own process and key prefix, ${plan.delivery.bare} jobs (a callback body each) added to a paused plain queue, resumed; a plain Worker at concurrency ${workerConcurrency} signs each body (hex HMAC-SHA256 of timestamp + body) and POSTs it with fetch to the same receiver; nothing else. Same count over first to last callback received, after a 200-job warm-up.`,
    `Memory: RSS after the first pass (users, tokens, end to end), then after ${quick ? 'one more round of updates at concurrency 32 (quick: the worker has nothing to do in it)' : `repeating the API users suite${workerWorks ? ' and the end-to-end rounds' : ''}`}; the delivery rounds come after both.`,
    `Growth: a third API process on a database of its own, updates at concurrency ${GROWTH_CONCURRENCY} with ${plan.growth.join(' then ')} users stored; the driver's upsert on the same collection beside each.`,
    'Rate limits stay enabled at 10,000,000 per minute (per client, per token IP): their Redis round trip is counted, their 429s are not.',
    'Load generator: autocannon 9 in a child process (offered rates: its own paced loop); bare Fastify, driver, jose and BullMQ baselines each in a process of their own. Machine shared with other work: compare within a run.',
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
process.exit(0);
