import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import pino from 'pino';
import { watchDatastores } from './datastore-watch.ts';

/** The watch's lines, as [level, msg]. */
function capture() {
  const lines: [number, string][] = [];
  const log = pino(new Writable({ write: (chunk: Buffer, _e, done) => (lines.push([JSON.parse(chunk.toString()).level, JSON.parse(chunk.toString()).msg]), done()) }));
  return { log, lines };
}

describe('watchDatastores: the log lines a datastore outage needs', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('a black hole (an ask that never settles): one warn after the wait, a reminder a minute on, one info with its length when it answers', async () => {
    const { log, lines } = capture();
    let answer: (() => void) | undefined;
    let black = false;
    const watch = watchDatastores([{ name: 'Redis', ping: () => (black ? new Promise<void>((r) => (answer = r)) : Promise.resolve()) }], log, { intervalMs: 1000, silentAfterMs: 5000, remindEveryMs: 60_000, now: () => Date.now() });
    await vi.advanceTimersByTimeAsync(3000);
    expect(lines).toEqual([]);
    black = true;
    await vi.advanceTimersByTimeAsync(1000); // the ask that hangs
    await vi.advanceTimersByTimeAsync(4000);
    expect(lines).toEqual([]);
    await vi.advanceTimersByTimeAsync(1000);
    expect(lines).toEqual([[40, 'Redis does not answer: no answer for 5 s']]);
    await vi.advanceTimersByTimeAsync(30_000);
    expect(lines).toHaveLength(1); // no ask piled on the one waiting, no line per tick
    await vi.advanceTimersByTimeAsync(30_000);
    expect(lines.at(-1)).toEqual([40, 'Redis still does not answer, for 65 s: no answer for 65 s']);
    black = false;
    answer!();
    await vi.advanceTimersByTimeAsync(0);
    expect(lines.at(-1)).toEqual([30, 'Redis answers again, after 65 s']);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(lines).toHaveLength(3);
    watch.stop();
  });

  it('asks first one interval after the start (connections made a moment ago are not up yet); a refusal is told at once, each datastore on its own, and stop() asks no more', async () => {
    const { log, lines } = capture();
    let asks = 0;
    const watch = watchDatastores(
      [
        { name: 'MongoDB', ping: () => (asks++, Promise.reject(new Error('connect ECONNREFUSED 127.0.0.1:27017'))) },
        { name: 'Redis', ping: () => Promise.resolve('PONG') },
      ],
      log,
      { intervalMs: 1000 },
    );
    await vi.advanceTimersByTimeAsync(999);
    expect(asks).toBe(0);
    await vi.advanceTimersByTimeAsync(1);
    expect(lines).toEqual([[40, 'MongoDB does not answer: connect ECONNREFUSED 127.0.0.1:27017']]);
    watch.stop();
    const before = asks;
    await vi.advanceTimersByTimeAsync(10_000);
    expect(asks).toBe(before);
  });
});
