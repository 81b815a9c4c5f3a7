/**
 * End to end: a downstream receiver (node:http) records when each callback
 * arrives; creates are offered at a fixed rate from the load process, which
 * records when each POST was answered. Latency = arrival - answer, matched by
 * `data.user.external_provider_id`.
 */
import { createServer, type Server } from 'node:http';
import type { LoadResult, LoadSpec } from './load-users.ts';
import { percentile, type RoundStats } from './round-stats.ts';

export interface Receiver {
  url: string;
  /** First arrival (epoch ms) of each external_provider_id. */
  arrivals: Map<string, number>;
  /** Callbacks received, duplicates included. */
  count: () => number;
  close: () => Promise<void>;
}

/** Waits until every id has arrived or the timeout passes; the first and last arrival of those that did. */
export async function waitForArrivals(receiver: Receiver, ids: readonly string[], timeoutMs: number): Promise<{ arrived: number; first: number; last: number }> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && ids.some((id) => !receiver.arrivals.has(id))) await new Promise((res) => setTimeout(res, 20));
  const times = ids.map((id) => receiver.arrivals.get(id)).filter((t): t is number => t !== undefined);
  return { arrived: times.length, first: Math.min(...times), last: Math.max(...times) };
}

export async function startReceiver(): Promise<Receiver> {
  const arrivals = new Map<string, number>();
  let count = 0;
  const server: Server = createServer((req, res) => {
    count++;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const at = performance.timeOrigin + performance.now();
      try {
        const body = JSON.parse(Buffer.concat(chunks).toString()) as { data?: { user?: { external_provider_id?: string } } };
        const id = body.data?.user?.external_provider_id;
        if (id && !arrivals.has(id)) arrivals.set(id, at);
      } catch {
        /* not ours */
      }
      res.writeHead(204).end();
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}/callbacks`,
    arrivals,
    count: () => count,
    close: () =>
      new Promise((r) => {
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}

export interface EndToEndSpec {
  baseUrl: string;
  token: string;
  rate: number;
  durationSec: number;
  rounds: number;
  idPrefix: string;
  /** How long to wait for the last callbacks of a round. */
  drainTimeoutMs: number;
}

/**
 * Per round: p50/p99 of answer → receipt, `requests` answered, `errors` = answered but
 * never delivered in time, `offered` = creates sent per second, `rps` = callbacks
 * received per second over the delivery window (first to last arrival), not over the
 * sending window. `load` runs a LoadSpec in the load generator's process.
 */
export async function runEndToEnd(receiver: Receiver, load: (spec: LoadSpec) => Promise<LoadResult>, spec: EndToEndSpec): Promise<RoundStats[]> {
  const rounds: RoundStats[] = [];
  for (let r = 0; r < spec.rounds; r++) {
    const loadSpec: LoadSpec = {
      kind: 'create',
      url: `${spec.baseUrl}/users`,
      connections: 16,
      durationSec: spec.durationSec,
      rounds: 1,
      warmupSec: 0,
      headers: { authorization: `Bearer ${spec.token}`, 'x-nabla-api-version': '2026-03-23' },
      idPrefix: `${spec.idPrefix}-${r}`,
      overallRate: spec.rate,
      recordAnswers: true,
    };
    const result = await load(loadSpec);
    const odd = Object.entries(result.statuses).filter(([status]) => !status.startsWith('2'));
    if (odd.length) process.stderr.write(`end to end @ ${spec.rate}/s: non-2xx answers ${JSON.stringify(Object.fromEntries(odd))}\n`);
    const answers = Object.entries(result.answers ?? {});
    await waitForArrivals(receiver, answers.map(([id]) => id), spec.drainTimeoutMs);
    const delivered = answers.filter(([id]) => receiver.arrivals.has(id));
    const latencies = delivered.map(([id, at]) => receiver.arrivals.get(id)! - at);
    latencies.sort((a, b) => a - b);
    const arrivals = delivered.map(([id]) => receiver.arrivals.get(id)!);
    const windowSec = arrivals.length > 1 ? (Math.max(...arrivals) - Math.min(...arrivals)) / 1000 : NaN;
    rounds.push({
      rps: latencies.length / windowSec,
      offered: result.rounds[0]!.offered,
      p50: percentile(latencies, 50),
      p99: percentile(latencies, 99),
      p999: percentile(latencies, 99.9),
      requests: answers.length,
      errors: answers.length - latencies.length + result.rounds[0]!.errors,
      non2xx: result.rounds[0]!.non2xx,
    });
  }
  return rounds;
}
