/**
 * Toxiproxy for the network-fault tests: a real TCP proxy, started per test
 * file on a free port, driven over its HTTP API (plain fetch: the API is a
 * handful of JSON calls). The binary is built by scripts/build-toxiproxy.sh
 * (pinned to v2.5.0 by tools/toxiproxy/go.mod); see docs/faults.md.
 *
 * A proxy listens on 127.0.0.1 on a port Toxiproxy binds itself (listen on :0)
 * and forwards to the real service; toxics added to it act on every
 * connection through it, open or new, until they are removed.
 */
import { execFile, spawn } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort, REPO_ROOT, stopChild } from '@connect/local-services';

const run = promisify(execFile);

/** Which way the toxic acts: `downstream` is server → client (answers), `upstream` client → server (requests). */
export type Stream = 'upstream' | 'downstream';

export interface Toxic {
  type: 'latency' | 'reset_peer' | 'timeout' | 'bandwidth' | 'slow_close' | 'slicer' | 'limit_data';
  stream: Stream;
  attributes: Record<string, number>;
}

/** The faults the issue names, each as the toxics that make it. */
export const FAULTS = {
  /** Every answer arrives 2 s late. */
  latency2s: [{ type: 'latency', stream: 'downstream', attributes: { latency: 2000, jitter: 0 } }],
  /** Each connection is reset (TCP RST) as soon as it carries data. */
  resetPeer: [{ type: 'reset_peer', stream: 'upstream', attributes: { timeout: 0 } }],
  /** A black hole: connections open, nothing gets through either way, nothing is closed until the toxic goes. */
  blackHole: [
    { type: 'timeout', stream: 'upstream', attributes: { timeout: 0 } },
    { type: 'timeout', stream: 'downstream', attributes: { timeout: 0 } },
  ],
  /** A trickle: 1 KB/s each way. */
  trickle: [
    { type: 'bandwidth', stream: 'upstream', attributes: { rate: 1 } },
    { type: 'bandwidth', stream: 'downstream', attributes: { rate: 1 } },
  ],
} satisfies Record<string, Toxic[]>;

export type FaultName = keyof typeof FAULTS;

export interface Proxy {
  name: string;
  /** Where clients connect: `127.0.0.1:<port>`. */
  listen: string;
  port: number;
  /** Adds the fault's toxics to this proxy. */
  inject(fault: FaultName): Promise<void>;
  /** Removes every toxic: the link is clean again (black-holed connections are closed). */
  heal(): Promise<void>;
  toxics(): Promise<{ name: string; type: string }[]>;
}

export interface Toxiproxy {
  apiUrl: string;
  /** A proxy in front of `upstream` (`host:port`). */
  proxy(name: string, upstream: string): Promise<Proxy>;
  /** A proxy in front of the host of `url` (any scheme: http, mongodb, redis), and `url` with the proxy's host in its place. */
  link(name: string, url: string): Promise<{ proxy: Proxy; url: string }>;
  stop(): Promise<void>;
}

async function call(url: string, init: RequestInit = {}): Promise<any> {
  const res = await fetch(url, { ...init, headers: { 'content-type': 'application/json' }, signal: AbortSignal.timeout(10_000) });
  const text = await res.text();
  if (!res.ok) throw new Error(`toxiproxy ${init.method ?? 'GET'} ${url}: ${res.status} ${text}`);
  // GET /version answers plain text; everything else JSON.
  return text && res.headers.get('content-type')?.includes('json') ? JSON.parse(text) : text;
}

export async function ensureToxiproxyBinary(): Promise<string> {
  await run(join(REPO_ROOT, 'scripts', 'build-toxiproxy.sh'), [], { cwd: REPO_ROOT, maxBuffer: 16 * 1024 * 1024 });
  return join(REPO_ROOT, '.cache', 'bin', 'toxiproxy-server');
}

export async function startToxiproxy(): Promise<Toxiproxy> {
  const bin = await ensureToxiproxyBinary();
  const port = await freePort();
  const child = spawn(bin, ['-host', '127.0.0.1', '-port', String(port)], {
    // Its access log is one line per API call; only its errors are worth a test's output.
    env: { ...process.env, LOG_LEVEL: 'error' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const apiUrl = `http://127.0.0.1:${port}`;
  const exited = new Promise<never>((_, reject) => child.once('exit', (code) => reject(new Error(`toxiproxy-server exited (${code}) before answering`))));
  exited.catch(() => undefined);
  const deadline = Date.now() + 20_000;
  for (;;) {
    const up = await Promise.race([call(`${apiUrl}/version`).then(() => true, () => false), exited]);
    if (up) break;
    if (Date.now() > deadline) {
      await stopChild(child);
      throw new Error(`toxiproxy-server did not answer on ${apiUrl}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }

  const proxy = async (name: string, upstream: string): Promise<Proxy> => {
    const created = await call(`${apiUrl}/proxies`, { method: 'POST', body: JSON.stringify({ name, listen: '127.0.0.1:0', upstream, enabled: true }) });
    const listen = created.listen as string;
    const base = `${apiUrl}/proxies/${encodeURIComponent(name)}`;
    const toxics = async () => (await call(`${base}/toxics`)) as { name: string; type: string }[];
    return {
      name,
      listen,
      port: Number(listen.slice(listen.lastIndexOf(':') + 1)),
      toxics,
      inject: async (fault) => {
        for (const [i, t] of FAULTS[fault].entries()) {
          await call(`${base}/toxics`, { method: 'POST', body: JSON.stringify({ name: `${fault}-${i}`, toxicity: 1, ...t }) });
        }
      },
      heal: async () => {
        for (const t of await toxics()) await call(`${base}/toxics/${encodeURIComponent(t.name)}`, { method: 'DELETE' });
      },
    };
  };

  return {
    apiUrl,
    proxy,
    link: async (name, url) => {
      const through = new URL(url);
      const p = await proxy(name, through.host);
      through.host = p.listen;
      return { proxy: p, url: through.toString() };
    },
    stop: () => stopChild(child),
  };
}
