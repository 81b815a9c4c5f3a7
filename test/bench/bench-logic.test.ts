/** The benchmark's pure arithmetic and argument parsing: what its figures and the soak's options mean. */
import { describe, expect, it } from 'vitest';
import { inFlightFor, pacedStats, summarise, type RoundStats } from '../../bench/round-stats.ts';
import { soakOptionsFromArgv, UsageError } from '../../bench/soak.ts';
import { fullGcHeapOf } from '../../bench/start-stack.ts';

const round = (over: Partial<RoundStats>): RoundStats => ({ rps: 100, p50: 10, p99: 20, p999: 30, requests: 100, errors: 0, non2xx: 0, ...over });

describe('round statistics', () => {
  it('summarises each figure as the median and the min–max of its rounds; offered is NaN where nothing was offered', () => {
    const s = summarise([round({ rps: 90 }), round({ rps: 110 }), round({ rps: 100 })]);
    expect(s.rps).toEqual({ median: 100, min: 90, max: 110 });
    expect(s.rounds).toBe(3);
    expect(Number.isNaN(s.offered.median)).toBe(true);
  });

  it('an offered round reports what was sent over its sending window, and answers over first send to last answer', () => {
    // 290 sent in a 1 s window (asked: 300/s), the last answer 1.5 s after the first send.
    const stats = pacedStats({ sent: 290, firstStart: 1000, lastEnd: 2500, windowSec: 1 }, new Array<number>(290).fill(5), 0);
    expect(stats.offered).toBe(290);
    expect(stats.rps).toBeCloseTo(290 / 1.5);
  });

  it('reads the heap a full GC left from a --trace-gc line, and nothing from other lines', () => {
    expect(fullGcHeapOf('[12795:0x2cb03ed0]      958 ms: Mark-Compact 94.8 (128.5) -> 22.2 (56.2) MB, 2.92 / 0.01 ms  (average mu = 0.994)')).toBe(22.2);
    expect(fullGcHeapOf('[1:0x1] 60123 ms: Mark-Compact (reduce) 80.0 (120.0) -> 70.5 (90.0) MB, 12.1 / 0.0 ms')).toBe(70.5);
    expect(fullGcHeapOf('[1:0x1] 12 ms: Scavenge 4.1 (6.0) -> 3.2 (7.0) MB, 0.6 / 0.0 ms')).toBeUndefined();
    expect(fullGcHeapOf('{"level":40,"msg":"event not published yet"}')).toBeUndefined();
  });

  it('lets an offered rate keep half a second of requests in flight, never fewer than 64', () => {
    expect(inFlightFor(10)).toBe(64);
    expect(inFlightFor(300)).toBe(150);
  });
});

describe('soak options', () => {
  it('reads --soak MINUTES and defaults to a report a minute, a one-minute outage, 20 requests a second', () => {
    expect(soakOptionsFromArgv(['--soak', '30'])).toEqual({ minutes: 30, everySec: 60, outageSec: 60, rate: 20, smoke: false });
    expect(soakOptionsFromArgv(['--soak', '0.5', '--every', '10', '--outage', '5', '--rate', '8', '--smoke'])).toEqual({ minutes: 0.5, everySec: 10, outageSec: 5, rate: 8, smoke: true });
  });

  it.each([[['--soak']], [['--soak', 'ten']], [['--soak', '0']], [['--soak', '5', '--every', '-1']]])('refuses %j with a usage error naming the flag', (argv) => {
    expect(() => soakOptionsFromArgv(argv)).toThrow(UsageError);
    expect(() => soakOptionsFromArgv(argv)).toThrow(/^--(soak|every) needs a number/);
  });
});
