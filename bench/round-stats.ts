/** One measured round and the median/min/max summary every figure of the report is. */
export interface RoundStats {
  rps: number;
  p50: number;
  p99: number;
  p999: number;
  requests: number;
  errors: number;
  non2xx: number;
}

export interface Spread {
  median: number;
  min: number;
  max: number;
}

export type Summary = Record<keyof RoundStats, Spread> & { rounds: number };

export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export function spread(values: number[]): Spread {
  return { median: median(values), min: Math.min(...values), max: Math.max(...values) };
}

export function summarise(rounds: RoundStats[]): Summary {
  const keys: (keyof RoundStats)[] = ['rps', 'p50', 'p99', 'p999', 'requests', 'errors', 'non2xx'];
  const out = { rounds: rounds.length } as Summary;
  for (const k of keys) out[k] = spread(rounds.map((r) => r[k]));
  return out;
}

/** Percentile of raw latencies (ms), nearest rank. */
export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

export function statsOf(latenciesMs: number[], seconds: number, errors: number, non2xx = 0): RoundStats {
  const s = [...latenciesMs].sort((a, b) => a - b);
  return { rps: s.length / seconds, p50: percentile(s, 50), p99: percentile(s, 99), p999: percentile(s, 99.9), requests: s.length, errors, non2xx };
}

/**
 * Open loop: starts `operation` at `ratePerSec`, evenly paced, with at most
 * `maxInFlight` running (what an offered rate of HTTP requests does), until
 * `deadline` (performance.now() time); resolves when the last one has ended.
 */
export async function pacedLoop(ratePerSec: number, maxInFlight: number, deadline: number, operation: () => Promise<void>): Promise<void> {
  const interval = 1000 / ratePerSec;
  const pending = new Set<Promise<void>>();
  let next = performance.now();
  while (performance.now() < deadline) {
    if (performance.now() >= next && pending.size < maxInFlight) {
      const p: Promise<void> = operation().finally(() => pending.delete(p));
      pending.add(p);
      next += interval;
    } else {
      await new Promise((r) => setTimeout(r, Math.max(0, Math.min(1, next - performance.now()))));
    }
  }
  await Promise.all(pending);
}
