/** One measured round and the median/min/max summary every figure of the report is. */
export interface RoundStats {
  rps: number;
  p50: number;
  p99: number;
  p999: number;
  requests: number;
  errors: number;
  non2xx: number;
  /**
   * At an offered rate: requests actually sent per second over the round's sending
   * window (`rps` is then what was achieved: answers over first send to last answer).
   * An open loop that falls behind its schedule sends fewer than it was asked to, and
   * a figure "@ 300/s" that really offered 206/s must say so.
   */
  offered?: number;
}

export interface Spread {
  median: number;
  min: number;
  max: number;
}

export type Summary = Record<keyof Required<RoundStats>, Spread> & { rounds: number };

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
  const keys: (keyof RoundStats)[] = ['rps', 'p50', 'p99', 'p999', 'requests', 'errors', 'non2xx', 'offered'];
  const out = { rounds: rounds.length } as Summary;
  for (const k of keys) out[k] = spread(rounds.map((r) => r[k] ?? NaN));
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
 * How many requests an offered rate may have in flight: half a second's worth, and at
 * least 64. With fewer (16 once), a rate of 300/s against 50 ms answers falls behind its
 * schedule and offers far less than it says.
 */
export function inFlightFor(ratePerSec: number): number {
  return Math.max(64, Math.ceil(ratePerSec / 2));
}

export interface PacedRun {
  /** Operations started. */
  sent: number;
  /** performance.now() of the first start and of the last end. */
  firstStart: number;
  lastEnd: number;
  /** Seconds of the sending window (start to deadline). */
  windowSec: number;
}

/**
 * Open loop: starts `operation` at `ratePerSec`, evenly paced, with at most
 * `maxInFlight` running (what an offered rate of HTTP requests does), until
 * `deadline` (performance.now() time); resolves when the last one has ended.
 */
export async function pacedLoop(ratePerSec: number, maxInFlight: number, deadline: number, operation: () => Promise<void>): Promise<PacedRun> {
  const interval = 1000 / ratePerSec;
  const pending = new Set<Promise<void>>();
  const firstStart = performance.now();
  let next = firstStart;
  let sent = 0;
  let lastEnd = firstStart;
  while (performance.now() < deadline) {
    if (performance.now() >= next && pending.size < maxInFlight) {
      const p: Promise<void> = operation().finally(() => {
        pending.delete(p);
        lastEnd = performance.now();
      });
      pending.add(p);
      sent++;
      next += interval;
    } else {
      await new Promise((r) => setTimeout(r, Math.max(0, Math.min(1, next - performance.now()))));
    }
  }
  await Promise.all(pending);
  return { sent, firstStart, lastEnd, windowSec: (deadline - firstStart) / 1000 };
}

/** A paced round's figures: offered = sent over the sending window, rps = answers over first send to last answer. */
export function pacedStats(run: PacedRun, latenciesMs: number[], errors: number, non2xx = 0): RoundStats {
  const stats = statsOf(latenciesMs, Math.max(run.windowSec, (run.lastEnd - run.firstStart) / 1000), errors, non2xx);
  return { ...stats, offered: run.sent / run.windowSec };
}
