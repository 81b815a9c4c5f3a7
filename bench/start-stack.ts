/**
 * The system under test, as separate processes: FerretDB on a fresh PostgreSQL
 * database (or the MONGO_URL given), the API (`node --import tsx
 * apps/api/src/main.ts`) and, when it starts, the worker.
 */
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { promisify } from 'node:util';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { Redis } from 'ioredis';
import { freePort, imageNodeOptions, LOCAL_POSTGRES, redisAnswers, startFerretDb, startPrivateRedis, stopChild, waitForPort, type RunningService } from '@connect/local-services';
import { REPO_ROOT, spawnTs } from './bench-child.ts';

export interface Datastores {
  /** Server URL without a database; each part of the bench names its own database. */
  mongoServerUrl: string;
  redisUrl: string;
  kind: 'ferretdb-started' | 'mongo-url';
  /**
   * After a bulk load, before measuring: on the FerretDB started here, a PostgreSQL
   * CHECKPOINT, so the load's dirty pages (hundreds of MB after 190,000 users) are
   * written now rather than by a checkpoint in the middle of the next rounds (one
   * growth round at 200,000 users ran at a fifth of the others' rate). Then it waits (up
   * to a minute) for PostgreSQL's autovacuum workers, which a bulk load of 200,000 rows
   * wakes, to finish: their vacuum and analyze would otherwise share the 2 CPUs with the
   * next rounds. Nothing on a MONGO_URL.
   */
  settle: () => Promise<void>;
  stop: () => Promise<void>;
}

/**
 * The MongoDB connection pool of every process in the bench: the API, the worker and
 * every baseline (driver, bare token route). One number, so that no baseline wins by
 * having more operations at the database at once than the API may (the API's own
 * default is 20 per process, packages/shared/src/models/models.ts). It rides in the
 * URL (`maxPoolSize=`), which the API and worker honour over their default.
 */
export const MONGO_POOL_SIZE = 20;

/** A database's URL on the bench's server, with the bench's pool size. */
export function databaseUrl(serverUrl: string, database: string): string {
  const url = new URL(serverUrl);
  url.pathname = `/${database}`;
  url.searchParams.set('maxPoolSize', String(MONGO_POOL_SIZE));
  return url.toString();
}

/**
 * `privateRedis`: a redis-server of the run's own (unless REDIS_URL is given), so that
 * its INFO memory is this run's alone (the soak); otherwise the local one, shared.
 */
export async function startDatastores(runId: string, options: { privateRedis?: boolean } = {}): Promise<Datastores> {
  const stops: (() => Promise<void>)[] = [];
  let mongoServerUrl: string;
  let kind: Datastores['kind'];
  if (process.env.MONGO_URL) {
    mongoServerUrl = process.env.MONGO_URL;
    kind = 'mongo-url';
  } else {
    const ferret: RunningService = await startFerretDb({ database: `bench_${runId.replace(/-/g, '_')}` });
    stops.push(ferret.stop);
    mongoServerUrl = ferret.url;
    kind = 'ferretdb-started';
  }
  let redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
  if (!process.env.REDIS_URL && (options.privateRedis || !(await redisAnswers(6379)))) {
    const redis = await startPrivateRedis();
    stops.push(redis.stop);
    redisUrl = redis.url;
  }
  const psql = async (sql: string): Promise<string> => {
    const pg = LOCAL_POSTGRES;
    return (await promisify(execFile)('psql', ['-h', pg.host, '-p', String(pg.port), '-U', pg.user, '-d', 'postgres', '-Atqc', sql])).stdout.trim();
  };
  const settle = async () => {
    if (kind !== 'ferretdb-started') return;
    try {
      await psql('CHECKPOINT');
      const started = Date.now();
      // Autovacuum starts a little after the load that woke it: look twice, a second apart, before trusting a 0.
      let idleLooks = 0;
      while (idleLooks < 2 && Date.now() - started < 60_000) {
        const busy = Number(await psql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"));
        idleLooks = busy === 0 ? idleLooks + 1 : 0;
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    } catch (err) {
      process.stderr.write(`settling PostgreSQL failed (measuring anyway): ${(err as Error).message}\n`);
    }
  };
  return { mongoServerUrl, redisUrl, kind, settle, stop: async () => void (await Promise.all(stops.map((s) => s()))) };
}

export interface ServiceProcess {
  name: string;
  process: ChildProcess;
  /** Resident set size in MiB, from /proc/<pid>/status VmRSS. */
  rssMiB: () => number;
  /**
   * The heap each full GC (V8's Mark-Compact) left behind, in MiB, oldest first: the
   * process runs with --trace-gc --trace-gc-ignore-scavenger (one stdout line per full GC,
   * none for the frequent young-generation ones), and this reads the "-> N (M) MB" of
   * each. The smallest of them over a stretch of load is the live heap: what a leak
   * would grow, where peak RSS also follows how far V8 let the heap grow between GCs.
   */
  fullGcHeapMiB: () => readonly number[];
  stderr: () => string;
  stop: () => Promise<void>;
}

/**
 * CPU time (user + system, ms) a process has used so far, from /proc/<pid>/stat
 * (fields 14 and 15, in clock ticks of 10 ms: USER_HZ is 100 on Linux).
 */
export function cpuMsOf(pid: number): number {
  return cpuMsOfStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
}

function cpuMsOfStat(stat: string): number {
  // The command name (field 2) is in parentheses and may hold spaces: count fields after it.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/**
 * CPU time (ms) used so far by every process of each group: the named pids, and every
 * process whose command name is one of `commands` (all PostgreSQL backends, the
 * FerretDB and redis-server processes), plus `machine`, all CPUs' busy time from
 * /proc/stat. The difference of two readings says where a scenario's CPU went.
 */
export function cpuByGroup(pids: Record<string, number | undefined>, commands: Record<string, string[]>): Record<string, number> & { machine: number } {
  const out: Record<string, number> = {};
  for (const [group, pid] of Object.entries(pids)) out[group] = pid === undefined ? NaN : safeCpuMsOf(pid);
  const byCommand = new Map<string, string>();
  for (const [group, names] of Object.entries(commands)) {
    out[group] = 0;
    for (const name of names) byCommand.set(name, group);
  }
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // gone meanwhile
    }
    const group = byCommand.get(stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')));
    if (!group) continue;
    out[group]! += cpuMsOfStat(stat);
  }
  // The first line of /proc/stat: user nice system idle iowait irq softirq steal guest (clock ticks);
  // busy = user + nice + system + irq + softirq (guest time is inside user already).
  const ticks = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const busy = [0, 1, 2, 5, 6].reduce((a, i) => a + (ticks[i] ?? 0), 0);
  return { ...out, machine: busy * 10 };
}

function safeCpuMsOf(pid: number): number {
  try {
    return cpuMsOf(pid);
  } catch {
    return NaN;
  }
}

function rssOf(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/VmRSS:\s+(\d+)\s+kB/.exec(status)?.[1] ?? NaN);
  return kb / 1024;
}

/**
 * The heap a full GC left, from a --trace-gc line (`[pid:isolate]  123 ms: Mark-Compact
 * 180.1 (211.0) -> 70.2 (150.0) MB, ...`: 70.2); undefined for any other line.
 */
export function fullGcHeapOf(line: string): number | undefined {
  const gc = /Mark-Compact(?: \(reduce\))? [\d.]+ \([\d.]+\) -> ([\d.]+) \(/.exec(line);
  return gc ? Number(gc[1]) : undefined;
}

/**
 * The production image's NODE_OPTIONS (Dockerfile) but `--conditions=built`, which the bench
 * does not need (it runs the TypeScript sources with tsx): the heap cap, so that the memory
 * figures are those of the processes that ship (docs/operations.md, Memory).
 */
export const IMAGE_NODE_FLAGS = imageNodeOptions().filter((flag) => !flag.startsWith('--conditions'));

function serviceProcess(name: string, script: string, env: Record<string, string>, cpuProfile: boolean): ServiceProcess {
  // One directory per process: tsx's loader thread writes a profile of its own beside the main thread's.
  const profDir = join(REPO_ROOT, 'bench', 'results', 'profiles', name);
  if (cpuProfile) mkdirSync(profDir, { recursive: true });
  const child = spawnTs(join(REPO_ROOT, script), [], env, [...IMAGE_NODE_FLAGS, '--trace-gc', '--trace-gc-ignore-scavenger', ...(cpuProfile ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`] : [])]);
  let err = '';
  const fullGcs: number[] = [];
  let partial = '';
  child.stderr!.on('data', (d) => (err = (err + d).slice(-20_000)));
  // At LOG_LEVEL info this reads a line per request or delivery, so it keeps the tail cheaply
  // (one trim per 20 KB, not a 20 KB copy per line): the bench shares the CPUs it measures.
  child.stdout!.on('data', (d) => {
    const lines = (partial + d).split('\n');
    partial = lines.pop()!;
    for (const line of lines) {
      const heap = fullGcHeapOf(line);
      if (heap !== undefined) fullGcs.push(heap);
      else err += line + '\n';
    }
    if (err.length > 40_000) err = err.slice(-20_000);
  });
  return {
    name,
    process: child,
    rssMiB: () => rssOf(child.pid!),
    fullGcHeapMiB: () => fullGcs,
    stderr: () => err,
    stop: () => stopChild(child, 'SIGTERM', 30_000),
  };
}

export interface ApiProcess extends ServiceProcess {
  origin: string;
  baseUrl: string;
  tokenUrl: string;
  mongoUrl: string;
  queuePrefix: string;
}

export interface ServiceEnv {
  mongoUrl: string;
  redisUrl: string;
  queuePrefix: string;
  downstreamTargets?: unknown[];
  cpuProfile?: boolean;
  /** More variables for the process (the soak's shortened retention and retries). */
  extraEnv?: Record<string, string>;
}

function commonEnv(s: ServiceEnv): Record<string, string> {
  return {
    MONGO_URL: s.mongoUrl,
    REDIS_URL: s.redisUrl,
    QUEUE_PREFIX: s.queuePrefix,
    // The level that ships (the default, and docker-compose.yml's): a log line per request and per
    // delivery is part of what each costs. At warn, as it was, the bench measured a quieter service than runs.
    LOG_LEVEL: 'info',
    DOWNSTREAM_TARGETS: JSON.stringify(s.downstreamTargets ?? []),
    // The limiters stay on (their Redis round trip is part of a request's cost) but never trip:
    // the bench offers one client's traffic from one IP, far above the per-client and per-IP defaults.
    RATE_LIMIT_PER_CLIENT_PER_MINUTE: '10000000',
    RATE_LIMIT_TOKEN_PER_IP_PER_MINUTE: '10000000',
    ...s.extraEnv,
  };
}

export async function startApi(name: string, s: ServiceEnv): Promise<ApiProcess> {
  const port = await freePort();
  const origin = `http://127.0.0.1:${port}`;
  const env = { ...commonEnv(s), PORT: String(port), HOST: '127.0.0.1', PUBLIC_BASE_URL: origin };
  const proc = serviceProcess(name, 'apps/api/src/main.ts', env, s.cpuProfile ?? false);
  const exited = new Promise<never>((_, reject) =>
    proc.process.once('exit', (code) => reject(new Error(`${name} exited (${code}) before listening: ${proc.stderr().slice(-2000)}`))),
  );
  exited.catch(() => undefined);
  // Generous: nine processes start at once, and on a shared CI machine an API has taken over a minute to listen.
  await Promise.race([waitForPort(port, 180_000), exited]);
  const baseUrl = `${origin}/v1/connect/server`;
  return { ...proc, origin, baseUrl, tokenUrl: `${baseUrl}/oauth/token`, mongoUrl: s.mongoUrl, queuePrefix: s.queuePrefix };
}

export function workerAvailable(): boolean {
  return existsSync(join(REPO_ROOT, 'apps', 'worker', 'src', 'main.ts'));
}

/** The worker, or undefined when it is not there or dies at start. */
export async function startWorkerProcess(name: string, s: ServiceEnv): Promise<ServiceProcess | undefined> {
  if (!workerAvailable()) return undefined;
  const proc = serviceProcess(name, 'apps/worker/src/main.ts', commonEnv(s), s.cpuProfile ?? false);
  const died = await new Promise<boolean>((resolve) => {
    const t = setTimeout(() => resolve(false), 4000);
    proc.process.once('exit', () => {
      clearTimeout(t);
      resolve(true);
    });
  });
  if (died) {
    process.stderr.write(`worker did not start: ${proc.stderr().slice(-1500)}\n`);
    return undefined;
  }
  return proc;
}

export function newRunId(): string {
  return `${new Date().toISOString().slice(0, 16).replace(/[-:T]/g, '')}-${randomUUID().slice(0, 6)}`;
}

/** Deletes every key under each queue prefix (`prefix:*`) from the Redis at `redisUrl`: what a run leaves in a shared Redis. Best effort. */
export async function deleteQueueKeys(redisUrl: string, prefixes: string[]): Promise<void> {
  const redis = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
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
}
