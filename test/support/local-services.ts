/**
 * Starting MongoDB-compatible and Redis servers on a machine without Docker or
 * MongoDB (docs/operations.md, Tests): FerretDB on the local PostgreSQL, and the local Redis
 * or a private redis-server. Used by the test setup and the local run command.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createServer, Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

export async function waitForPort(port: number, timeoutMs = 20_000, host = '127.0.0.1'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = new Socket();
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
      s.connect(port, host);
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on ${host}:${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export interface PostgresTarget {
  host: string;
  port: number;
  user: string;
}

export const LOCAL_POSTGRES: PostgresTarget = {
  host: process.env.PGHOST ?? '127.0.0.1',
  port: Number(process.env.PGPORT ?? 5432),
  user: process.env.PGUSER ?? 'postgres',
};

async function psql(pg: PostgresTarget, sql: string): Promise<void> {
  await run('psql', ['-h', pg.host, '-p', String(pg.port), '-U', pg.user, '-d', 'postgres', '-v', 'ON_ERROR_STOP=1', '-qc', sql]);
}

export async function ensureFerretDbBinary(): Promise<string> {
  await run(join(REPO_ROOT, 'scripts', 'build-ferretdb.sh'), [], { cwd: REPO_ROOT, maxBuffer: 16 * 1024 * 1024 });
  return join(REPO_ROOT, '.cache', 'bin', 'ferretdb');
}

export interface RunningService {
  url: string;
  port: number;
  process?: ChildProcess;
  stop: () => Promise<void>;
}

/** Sends `signal`, waits for the exit, and SIGKILLs after `killAfterMs`. */
export function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', killAfterMs = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
    child.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
    child.kill(signal);
  });
}

/**
 * FerretDB over a PostgreSQL database of its own (UTF8, locale C, as FerretDB
 * needs). `keepDatabase` keeps it across runs (the local run command); tests get a
 * fresh one and drop it when they stop.
 */
export async function startFerretDb(options: { database: string; port?: number; keepDatabase?: boolean; pg?: PostgresTarget }): Promise<RunningService> {
  const pg = options.pg ?? LOCAL_POSTGRES;
  const bin = await ensureFerretDbBinary();
  if (!/^[a-z0-9_]{1,60}$/.test(options.database)) throw new Error(`bad database name ${options.database}`);
  try {
    await psql(pg, `CREATE DATABASE ${options.database} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0`);
  } catch (err) {
    if (!options.keepDatabase || !/already exists/.test(String((err as { stderr?: string }).stderr))) throw err;
  }
  const port = options.port ?? (await freePort());
  const child = spawn(
    bin,
    [`--postgresql-url=postgres://${pg.user}@${pg.host}:${pg.port}/${options.database}`, `--listen-addr=127.0.0.1:${port}`, '--log-level=none'],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  await waitForPort(port);
  return {
    url: `mongodb://127.0.0.1:${port}/`,
    port,
    process: child,
    stop: async () => {
      await stopChild(child);
      if (!options.keepDatabase) await psql(pg, `DROP DATABASE IF EXISTS ${options.database} WITH (FORCE)`).catch(() => undefined);
    },
  };
}

/** A redis-server of the caller's own (nothing on disk), for tests that stop and restart Redis. */
export async function startPrivateRedis(port?: number): Promise<RunningService> {
  const p = port ?? (await freePort());
  const child = spawn('redis-server', ['--port', String(p), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--maxmemory-policy', 'noeviction'], {
    stdio: 'ignore',
  });
  await waitForPort(p);
  return { url: `redis://127.0.0.1:${p}`, port: p, process: child, stop: () => stopChild(child) };
}

export async function redisAnswers(port = 6379): Promise<boolean> {
  return new Promise((resolve) => {
    const s = new Socket();
    const done = (v: boolean) => {
      s.destroy();
      resolve(v);
    };
    s.setTimeout(1000, () => done(false));
    s.once('error', () => done(false));
    s.connect(port, '127.0.0.1', () => s.write('PING\r\n'));
    s.once('data', (d) => done(d.toString().startsWith('+PONG')));
  });
}
