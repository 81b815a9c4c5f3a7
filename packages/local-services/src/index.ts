/**
 * Starting MongoDB-compatible and Redis servers on a machine without Docker or
 * MongoDB: FerretDB on the local PostgreSQL, and the local Redis or a private
 * redis-server. Used by the test setup, the local run command (`pnpm stack`)
 * and the benchmark, which is why it is a package of its own rather than a
 * file under test/ that scripts reach into.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createServer, Socket, type AddressInfo, type Server } from 'node:net';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/**
 * The NODE_OPTIONS the production image sets (the Dockerfile's `ENV ... NODE_OPTIONS="..."`),
 * split into flags: the bench and the staged-output test run the services with them, so what
 * they measure is what ships (the heap cap of docs/operations.md, Memory, included).
 */
export function imageNodeOptions(): string[] {
  const dockerfile = readFileSync(join(REPO_ROOT, 'Dockerfile'), 'utf8');
  const value = /^ENV .*\bNODE_OPTIONS=(?:"([^"]*)"|(\S+))/m.exec(dockerfile);
  if (!value) throw new Error('the Dockerfile sets no NODE_OPTIONS');
  return (value[1] ?? value[2]!).split(/\s+/).filter(Boolean);
}

/**
 * A port that was free a moment ago. Racy by nature (another process can take it
 * between this check and the caller's bind), so use it ONLY for a program that
 * must be told its port in advance and cannot bind port 0 and report the port it
 * got: redis-server (`--port 0` turns TCP off), and Redis Cluster/Sentinel, whose
 * nodes announce their ports to each other. Servers of our own listen on port 0.
 */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/** Listens on port 0 (the kernel picks a free port; no race) and returns the port it got. */
export async function listenOnFreePort(server: Server | import('node:http').Server, host = '127.0.0.1'): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return (server.address() as AddressInfo).port;
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
 * Resolves with the first match of `pattern` in what `child` writes (stdout and
 * stderr), so a program started on port 0 can tell which port it got.
 */
export function waitForOutput(child: ChildProcess, pattern: RegExp, timeoutMs = 30_000, what = String(pattern)): Promise<RegExpMatchArray> {
  return new Promise((resolve, reject) => {
    let seen = '';
    const onData = (d: Buffer) => {
      seen += d.toString();
      const m = seen.match(pattern);
      if (m) finish(() => resolve(m));
    };
    const onExit = (code: number | null) => finish(() => reject(new Error(`exited (${code}) before printing ${what}: ${seen.slice(-2000)}`)));
    const timer = setTimeout(() => finish(() => reject(new Error(`no ${what} after ${timeoutMs} ms: ${seen.slice(-2000)}`))), timeoutMs);
    function finish(then: () => void) {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.stderr?.off('data', onData);
      child.off('exit', onExit);
      then();
    }
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', onExit);
  });
}

/**
 * FerretDB over a PostgreSQL database of its own (UTF8, locale C, as FerretDB
 * needs). `keepDatabase` keeps it across runs (the local run command); tests get a
 * fresh one and drop it when they stop. Without `port` it binds port 0 and the
 * port is read from its "Listening on TCP host:port" log line. `pgParams` go on
 * the PostgreSQL URL (FerretDB's pool settings, e.g. `pool_max_conns`).
 */
export async function startFerretDb(options: { database: string; port?: number; keepDatabase?: boolean; pg?: PostgresTarget; pgParams?: Record<string, string> }): Promise<RunningService> {
  const pg = options.pg ?? LOCAL_POSTGRES;
  const bin = await ensureFerretDbBinary();
  if (!/^[a-z0-9_]{1,60}$/.test(options.database)) throw new Error(`bad database name ${options.database}`);
  try {
    await psql(pg, `CREATE DATABASE ${options.database} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0`);
  } catch (err) {
    if (!options.keepDatabase || !/already exists/.test(String((err as { stderr?: string }).stderr))) throw err;
  }
  const child = spawn(
    bin,
    [`--postgresql-url=postgres://${pg.user}@${pg.host}:${pg.port}/${options.database}${options.pgParams ? `?${new URLSearchParams(options.pgParams)}` : ''}`, `--listen-addr=127.0.0.1:${options.port ?? 0}`, '--log-level=info'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const listening = waitForOutput(child, /Listening on TCP 127\.0\.0\.1:(\d+)/, 30_000, 'FerretDB listening');
  // Info level only to learn the port; FerretDB logs every refused command as a warning, so the rest is drained unread.
  child.stdout.resume();
  child.stderr.resume();
  const port = Number((await listening)[1]);
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

/**
 * A redis-server of the caller's own (nothing on disk), for tests that stop Redis.
 * redis-server cannot bind port 0 (`--port 0` means "no TCP"), so a free port is
 * picked; if another process took it meanwhile, redis-server exits and a new
 * port is tried, so the race costs a retry, not a flaky test. `extraArgs` go to
 * redis-server after ours (`--databases 4`, say).
 */
export async function startPrivateRedis(port?: number, extraArgs: readonly string[] = []): Promise<RunningService> {
  for (let attempt = 1; ; attempt++) {
    const p = port ?? (await freePort());
    const child = spawn('redis-server', ['--port', String(p), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--maxmemory-policy', 'noeviction', ...extraArgs], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    try {
      await waitForOutput(child, /Ready to accept connections/, 20_000, 'redis-server ready');
      child.stdout!.resume();
      child.stderr!.resume();
      return { url: `redis://127.0.0.1:${p}`, port: p, process: child, stop: () => stopChild(child) };
    } catch (err) {
      await stopChild(child, 'SIGKILL');
      if (port !== undefined || attempt >= 5) throw err;
    }
  }
}

export interface TcpProxy {
  port: number;
  /** Drops every connection and refuses new ones (accept and reset) while the port stays ours. */
  cut: () => void;
  /** Holds every answer from the target this long before passing it on (0: none), to make requests slow. */
  setDelay: (ms: number) => void;
  /**
   * Accepts new connections and never forwards a byte of them, for good (a half-dead
   * network path: the connect succeeds, nothing answers), while connections already
   * made keep passing. `restore` ends it for connections made after.
   */
  holdNew: () => void;
  restore: () => void;
  close: () => Promise<void>;
}

/**
 * A TCP proxy on a port of its own (listen(0)) in front of `targetPort`. Tests
 * that take a datastore away cut the proxy instead of stopping the server and
 * starting another on the port just freed, which something else may have taken.
 */
export async function startTcpProxy(targetPort: number, targetHost = '127.0.0.1'): Promise<TcpProxy> {
  let down = false;
  let holding = false;
  let delayMs = 0;
  const open = new Set<Socket>();
  const server = createServer((client) => {
    if (down) {
      client.destroy();
      return;
    }
    if (holding) {
      open.add(client);
      client.on('error', () => undefined).on('close', () => open.delete(client));
      client.resume();
      return;
    }
    const upstream = new Socket();
    open.add(client);
    open.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      open.delete(client);
      open.delete(upstream);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    upstream.connect(targetPort, targetHost, () => {
      client.pipe(upstream);
      // One delay for every chunk keeps them in order (timers of equal delay fire in turn).
      upstream.on('data', (chunk: Buffer) => {
        if (delayMs > 0) setTimeout(() => client.writable && client.write(chunk), delayMs);
        else client.write(chunk);
      });
      upstream.on('end', () => setTimeout(() => client.end(), delayMs));
    });
  });
  const port = await listenOnFreePort(server);
  return {
    port,
    cut: () => {
      down = true;
      for (const s of open) s.destroy();
      open.clear();
    },
    restore: () => {
      down = false;
      holding = false;
    },
    holdNew: () => {
      holding = true;
    },
    setDelay: (ms) => {
      delayMs = ms;
    },
    close: async () => {
      for (const s of open) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
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

/**
 * A target that is down, on a port of our own (listen(0)): every connection is
 * reset (RST) as soon as it is accepted. Unlike a fixed "nothing listens" port or
 * one freed by a closed server, no other process can start answering on it.
 */
export async function startDeadEndpoint(): Promise<{ port: number; close: () => Promise<void> }> {
  const server = createServer((socket) => socket.resetAndDestroy());
  const port = await listenOnFreePort(server);
  return { port, close: () => new Promise<void>((r) => server.close(() => r())) };
}
