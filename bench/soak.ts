/**
 * `pnpm bench --soak MINUTES [--every SECONDS] [--outage SECONDS] [--rate PER_SECOND]`:
 * the service under mixed traffic for a long time (issue 14: running it for months),
 * to see what grows. One API, one worker, FerretDB (or MONGO_URL) and a redis-server of
 * the soak's own (or REDIS_URL), so Redis's memory is the soak's alone. Two downstream
 * targets: "steady" (always 204) and "flaky" (503 for 20 % of requests, and down,
 * connection refused, for a minute a third of the way in).
 *
 * Traffic: `rate` requests a second of POST /users, about 20 % creates, 50 % settings
 * changes and 30 % no-ops over the users created so far. Every `every` seconds (a
 * minute by default) one line of JSON on stderr: RSS of the API and the worker, Redis
 * used_memory, documents per collection, delivery lag (callback received − event
 * occurred_at) p50/p99 per target over the interval, requests and answers. At the end:
 * the table of start and end values on stdout and in bench/results/soak.{md,json}.
 *
 * Retention and purge are shortened so they run during the soak: DELIVERY_RETENTION_DAYS
 * (one interval, as a fraction of a day) and WORKER_PURGE_INTERVAL_MS (half an
 * interval) are passed to both processes. Whether the service honours them shows in the
 * deliveries count staying bounded; if a process refuses them at start (a stricter
 * parser), the soak runs without them and says so.
 */
import { cpus } from 'node:os';
import { createServer, type Server } from 'node:http';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MongoClient } from 'mongodb';
import { Redis } from 'ioredis';
import { fetchAccessToken, registerBenchClient } from './bench-auth.ts';
import { BENCH_DIR } from './bench-child.ts';
import { LOCALE_A, LOCALE_B, upsertBody } from './bench-users.ts';
import { commitMeasured } from './report.ts';
import { inFlightFor, pacedLoop, percentile } from './round-stats.ts';
import { databaseUrl, deleteQueueKeys, newRunId, startApi, startDatastores, startWorkerProcess, type ServiceEnv, type ServiceProcess } from './start-stack.ts';

export interface SoakOptions {
  minutes: number;
  /** Seconds between two reports (60: every minute). */
  everySec: number;
  /** Seconds the flaky target is down. */
  outageSec: number;
  /** POST /users per second. */
  rate: number;
  /** `--smoke` as well: a check that the soak still runs (CI); nothing written to bench/results. */
  smoke: boolean;
}

export class UsageError extends Error {}

function numberAfter(argv: string[], flag: string, fallback: number | undefined, min: number): number {
  const at = argv.indexOf(flag);
  if (at < 0) {
    if (fallback === undefined) throw new UsageError(`${flag} is required`);
    return fallback;
  }
  const v = Number(argv[at + 1]);
  if (!Number.isFinite(v) || v < min) throw new UsageError(`${flag} needs a number of at least ${min}, got "${argv[at + 1] ?? ''}"`);
  return v;
}

export function soakOptionsFromArgv(argv: string[]): SoakOptions {
  return {
    minutes: numberAfter(argv, '--soak', undefined, 0.1),
    everySec: numberAfter(argv, '--every', 60, 2),
    outageSec: numberAfter(argv, '--outage', 60, 1),
    rate: numberAfter(argv, '--rate', 20, 1),
    smoke: argv.includes('--smoke'),
  };
}

interface SoakReceiver {
  name: string;
  url: string;
  /** Lags (ms) of callbacks accepted since the last take. */
  takeLags: () => number[];
  counts: () => { accepted: number; refused: number };
  down: () => Promise<void>;
  up: () => Promise<void>;
  close: () => Promise<void>;
}

async function startSoakReceiver(name: string, failRate: number): Promise<SoakReceiver> {
  let lags: number[] = [];
  let accepted = 0;
  let refused = 0;
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (Math.random() < failRate) {
        refused++;
        res.writeHead(503).end();
        return;
      }
      accepted++;
      try {
        const body = JSON.parse(Buffer.concat(chunks).toString()) as { occurred_at?: string };
        if (body.occurred_at) lags.push(Date.now() - Date.parse(body.occurred_at));
      } catch {
        /* not a callback */
      }
      res.writeHead(204).end();
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  return {
    name,
    url: `http://127.0.0.1:${port}/callbacks`,
    takeLags: () => {
      const out = lags;
      lags = [];
      return out;
    },
    counts: () => ({ accepted, refused }),
    // Down means connection refused: the listener closes and every open connection with it.
    down: async () => {
      const closed = new Promise<void>((r) => server.close(() => r()));
      server.closeAllConnections();
      await closed;
    },
    up: () => new Promise<void>((r) => server.listen(port, '127.0.0.1', r)),
    close: async () => {
      if (!server.listening) return;
      const closed = new Promise<void>((r) => server.close(() => r()));
      server.closeAllConnections();
      await closed;
    },
  };
}

interface Sample {
  atSec: number;
  apiRssMiB: number;
  workerRssMiB: number;
  redisUsedMiB: number;
  documents: Record<string, number>;
  lag: Record<string, { p50: number; p99: number; n: number }>;
  requests: { sent: number; answered: number; non2xx: number };
  flakyDown: boolean;
}

const mib = (bytes: number) => bytes / (1024 * 1024);

export async function runSoak(o: SoakOptions, log: (msg: string) => void): Promise<string> {
  const commit = commitMeasured();
  const runId = newRunId();
  const stores = await startDatastores(runId, { privateRedis: true });
  const mongoUrl = databaseUrl(stores.mongoServerUrl, stores.kind === 'mongo-url' ? `bench_soak_${runId.replace(/-/g, '_')}` : 'bench_soak');
  const receivers = { steady: await startSoakReceiver('steady', 0), flaky: await startSoakReceiver('flaky', 0.2) };
  const started: ServiceProcess[] = [];
  const notes: string[] = [];
  const mongo = await new MongoClient(mongoUrl).connect();
  const redis = new Redis(stores.redisUrl, { maxRetriesPerRequest: 3 });
  const queuePrefix = `soak-${runId}`;
  let cleaning: Promise<void> | undefined;
  /** Once, whoever asks first: the end of the soak or Ctrl-C (the processes and data go either way). */
  const cleanUp = (): Promise<void> =>
    (cleaning ??= (async () => {
      await Promise.allSettled(started.map((p) => p.stop()));
      await Promise.allSettled(Object.values(receivers).map((r) => r.close()));
      if (stores.kind === 'mongo-url') await mongo.db().dropDatabase().catch(() => undefined);
      // A shared Redis (REDIS_URL) keeps nothing of the soak's.
      redis.disconnect();
      if (process.env.REDIS_URL) await deleteQueueKeys(stores.redisUrl, [queuePrefix]);
      await mongo.close().catch(() => undefined);
      await stores.stop();
    })());
  const onSignal = () => {
    log('soak interrupted: cleaning up');
    void cleanUp().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const retention = {
      // Decimals of a day: one interval (the worker reads fractional days).
      DELIVERY_RETENTION_DAYS: String(Number((o.everySec / 86_400).toPrecision(3))),
      WORKER_PURGE_INTERVAL_MS: String(Math.round((o.everySec * 1000) / 2)),
    };
    const retries = {
      // Short retries and probes, so the flaky target's backlog drains within the soak once it is
      // back (docs/delivery.md: the retry schedule, and the probes of a failing target).
      WORKER_RETRY_SCHEDULE: '1s,2s,5s,10s,10s,10s,10s,10s',
      TARGET_PROBE_INTERVAL: '1s',
      TARGET_PROBE_MAX_INTERVAL: '5s',
    };
    const serviceEnv = (extraEnv: Record<string, string>): ServiceEnv => ({
      mongoUrl,
      redisUrl: stores.redisUrl,
      queuePrefix,
      downstreamTargets: Object.values(receivers).map((r) => ({ name: r.name, url: r.url, secrets: ['soak-secret-0123456789'] })),
      extraEnv,
    });
    // A process that refuses a variable at start names it and exits: try without the shortened settings then.
    const tryStart = async (extraEnv: Record<string, string>) => {
      const client = await registerBenchClient(mongoUrl);
      const api = await startApi('api-soak', serviceEnv(extraEnv)).catch((err: Error) => {
        log(`api refused the soak settings: ${err.message.slice(-600)}`);
        return undefined;
      });
      if (api) started.push(api);
      const worker = api ? await startWorkerProcess('worker-soak', serviceEnv(extraEnv)) : undefined;
      if (worker) started.push(worker);
      return { api, worker, client };
    };
    let stack = await tryStart({ ...retention, ...retries });
    if (!stack.api || !stack.worker) {
      await Promise.allSettled(started.splice(0).map((p) => p.stop()));
      notes.push(`The API or the worker refused ${Object.keys(retention).join(' / ')} or the retry settings at start; the soak ran with the defaults (no shortened retention).`);
      stack = await tryStart({});
    } else {
      notes.push(
        `Shortened for the soak and passed to the API and the worker: ${Object.entries({ ...retention, ...retries })
          .map(([k, v]) => `${k}=${v}`)
          .join(', ')}. A variable the service does not read is ignored; whether retention ran shows in the deliveries count.`,
      );
    }
    const { api, worker, client } = stack;
    if (!api || !worker) throw new Error('the API or the worker did not start; see above');
    let token = await fetchAccessToken(client, api.tokenUrl);

    // --- Traffic ---
    interface SoakUser {
      i: number;
      localeB: boolean;
      busy: boolean;
    }
    const users: SoakUser[] = [];
    let createdNo = 0;
    const tally = { sent: 0, answered: 0, non2xx: 0 };
    const post = async (body: string): Promise<void> => {
      tally.sent++;
      try {
        const res = await fetch(`${api.baseUrl}/users`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, 'x-nabla-api-version': '2026-03-23' },
          body,
          signal: AbortSignal.timeout(10_000),
        });
        await res.arrayBuffer();
        tally.answered++;
        if (res.status < 200 || res.status >= 300) tally.non2xx++;
      } catch {
        /* counted as sent, not answered */
      }
    };
    const oneRequest = async (): Promise<void> => {
      const r = Math.random();
      const idle = users.filter((u) => !u.busy);
      if (users.length < 50 || r < 0.2 || idle.length === 0) {
        const i = createdNo++;
        await post(upsertBody('soak', i, LOCALE_A));
        users.push({ i, localeB: false, busy: false });
        return;
      }
      // One request per user at a time, so the locale this process believes a user has is the one stored.
      const user = idle[Math.floor(Math.random() * idle.length)]!;
      user.busy = true;
      try {
        if (r < 0.7) user.localeB = !user.localeB;
        await post(upsertBody('soak', user.i, user.localeB ? LOCALE_B : LOCALE_A));
      } finally {
        user.busy = false;
      }
    };

    // --- Sampling ---
    const t0 = performance.now();
    let flakyDown = false;
    const documents = async (): Promise<Record<string, number>> => {
      const out: Record<string, number> = {};
      const names = (await mongo.db().listCollections({}, { nameOnly: true }).toArray()).map((c) => c.name).sort();
      for (const name of names) out[name] = await mongo.db().collection(name).estimatedDocumentCount();
      return out;
    };
    const redisUsed = async () => {
      const info = await redis.info('memory');
      return mib(Number(/used_memory:(\d+)/.exec(info)?.[1] ?? NaN));
    };
    const sample = async (): Promise<Sample> => {
      const lag: Sample['lag'] = {};
      for (const r of Object.values(receivers)) {
        const l = r.takeLags().sort((a, b) => a - b);
        lag[r.name] = { p50: percentile(l, 50), p99: percentile(l, 99), n: l.length };
      }
      const s: Sample = {
        atSec: Math.round((performance.now() - t0) / 1000),
        apiRssMiB: api.rssMiB(),
        workerRssMiB: worker.rssMiB(),
        redisUsedMiB: await redisUsed(),
        documents: await documents(),
        lag,
        requests: { ...tally },
        flakyDown,
      };
      tally.sent = tally.answered = tally.non2xx = 0;
      process.stderr.write(`${JSON.stringify({ soak: s })}\n`);
      return s;
    };

    const samples: Sample[] = [await sample()];
    const durationMs = o.minutes * 60_000;
    const deadline = performance.now() + durationMs;
    log(`soak: ${o.minutes} min at ${o.rate} requests/s, a report every ${o.everySec} s; flaky target down for ${o.outageSec} s from ${Math.round(durationMs / 3000)} s`);
    const timers: NodeJS.Timeout[] = [];
    const every = setInterval(() => void sample().then((s) => samples.push(s)), o.everySec * 1000);
    timers.push(
      setTimeout(() => {
        flakyDown = true;
        log('soak: flaky target down');
        void receivers.flaky.down();
      }, durationMs / 3),
      setTimeout(
        () => {
          flakyDown = false;
          log('soak: flaky target back');
          void receivers.flaky.up();
        },
        durationMs / 3 + o.outageSec * 1000,
      ),
      // Tokens last an hour by default: a long soak takes a new one every 20 minutes.
      setInterval(() => void fetchAccessToken(client, api.tokenUrl).then((t) => (token = t)).catch(() => undefined), 20 * 60_000),
    );
    await pacedLoop(o.rate, inFlightFor(o.rate), deadline, oneRequest);
    clearInterval(every);
    for (const t of timers) clearTimeout(t);
    if (flakyDown) await receivers.flaky.up();
    samples.push(await sample());

    // --- The figures: start and end ---
    const first = samples[0]!;
    const last = samples[samples.length - 1]!;
    const f = (v: number, d = 1) => (Number.isFinite(v) ? v.toFixed(d) : '-');
    const lagOf = (s: Sample, t: string) => (s.lag[t] && s.lag[t].n > 0 ? `${f(s.lag[t].p50, 0)} / ${f(s.lag[t].p99, 0)} (${s.lag[t].n})` : '-');
    // The first interval with traffic, for the lag at the start.
    const firstBusy = samples.find((s) => s.atSec > 0) ?? last;
    const collections = [...new Set([...Object.keys(first.documents), ...Object.keys(last.documents)])].sort();
    const md = [
      `# Soak (${o.minutes} min)`,
      '',
      `Commit ${commit.sha}${commit.dirty ? ' **with uncommitted changes**' : ''} · ${new Date().toISOString()} · ${cpus().length} CPUs · Node ${process.version} · ${stores.kind === 'mongo-url' ? 'MONGO_URL' : 'FerretDB on PostgreSQL'} · ${o.rate} POST /users a second (about 20 % creates, 50 % changes, 30 % no-ops) · targets "steady" and "flaky" (20 % 503, down ${o.outageSec} s from a third of the way in)`,
      '',
      ...notes.map((n) => `- ${n}`),
      '',
      '## Start and end',
      '',
      '| figure | start | end |',
      '|---|---|---|',
      `| API RSS (MiB) | ${f(first.apiRssMiB)} | ${f(last.apiRssMiB)} |`,
      `| worker RSS (MiB) | ${f(first.workerRssMiB)} | ${f(last.workerRssMiB)} |`,
      `| Redis used_memory (MiB) | ${f(first.redisUsedMiB)} | ${f(last.redisUsedMiB)} |`,
      ...collections.map((c) => `| documents: ${c} | ${first.documents[c] ?? 0} | ${last.documents[c] ?? 0} |`),
      `| delivery lag p50 / p99 ms (callbacks), steady: first and last interval | ${lagOf(firstBusy, 'steady')} | ${lagOf(last, 'steady')} |`,
      `| delivery lag p50 / p99 ms (callbacks), flaky: first and last interval | ${lagOf(firstBusy, 'flaky')} | ${lagOf(last, 'flaky')} |`,
      '',
      '## Every interval',
      '',
      `| s | API RSS | worker RSS | Redis MiB | ${collections.join(' | ')} | lag steady p50 / p99 (n) | lag flaky p50 / p99 (n) | sent | answered | non-2xx | flaky |`,
      `|${'---|'.repeat(10 + collections.length)}`,
      ...samples.map(
        (s) =>
          `| ${s.atSec} | ${f(s.apiRssMiB)} | ${f(s.workerRssMiB)} | ${f(s.redisUsedMiB)} | ${collections.map((c) => s.documents[c] ?? 0).join(' | ')} | ${lagOf(s, 'steady')} | ${lagOf(s, 'flaky')} | ${s.requests.sent} | ${s.requests.answered} | ${s.requests.non2xx} | ${s.flakyDown ? 'down' : 'up'} |`,
      ),
      '',
      `Callbacks: steady accepted ${receivers.steady.counts().accepted}; flaky accepted ${receivers.flaky.counts().accepted}, answered 503 to ${receivers.flaky.counts().refused}.`,
      '',
    ].join('\n');
    if (!o.smoke) {
      const dir = join(BENCH_DIR, 'results');
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'soak.md'), md);
      writeFileSync(join(dir, 'soak.json'), `${JSON.stringify({ commit, options: o, notes, samples }, null, 2)}\n`);
    }
    return md;
  } finally {
    await cleanUp();
  }
}

/** The soak as `pnpm bench --soak ...` runs it: the table on stdout, a usage error as one JSON document. */
export async function runSoakCli(argv: string[], log: (msg: string) => void): Promise<number> {
  let options: SoakOptions;
  try {
    options = soakOptionsFromArgv(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stdout.write(`${JSON.stringify({ error: { kind: 'usage', message: `${err.message} (pnpm bench --soak MINUTES [--every SECONDS] [--outage SECONDS] [--rate PER_SECOND])` } })}\n`);
    return 2;
  }
  process.stdout.write(`${await runSoak(options, log)}\n`);
  return 0;
}
