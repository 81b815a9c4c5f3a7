import { describe, expect, it } from 'vitest';
import pino from 'pino';
import { referenceClock } from './reference-clock.ts';

/** A logger whose lines the test reads. */
function capture() {
  const lines: { level: number; msg: string; clock_offset_ms?: number }[] = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  return { log, lines };
}

describe('referenceClock: the database clock, moved on by the monotonic clock', () => {
  it("follows the database's clock, not this machine's, and a jump of this machine's clock between two measurements changes nothing", async () => {
    let machine = Date.now() + 31 * 86_400_000; // a month ahead
    const database = () => Date.now();
    const { log, lines } = capture();
    const clock = referenceClock(async () => new Date(database()), log, { local: () => machine, intervalMs: 3_600_000 });
    await clock.measure();
    expect(Math.abs(clock.nowMs() - database())).toBeLessThan(100);
    expect(clock.offsetMs()).toBeLessThan(-31 * 86_400_000 + 1000);
    // The machine's clock jumps back an hour: the reference does not move with it.
    machine -= 3_600_000;
    expect(Math.abs(clock.nowMs() - database())).toBeLessThan(100);
    expect(lines.filter((l) => l.level === 40).map((l) => l.msg)).toEqual([expect.stringMatching(/^this machine's clock is 26784\d\d(\.\d)? s ahead of the database's: writes/)]);
    clock.stop();
  });

  it('warns once while the clocks stay apart, says when they agree again, and keeps the last measurement while the database does not answer', async () => {
    let machineOffset = -5000; // this machine 5 s behind
    let answering = true;
    const { log, lines } = capture();
    const clock = referenceClock(
      async () => {
        if (!answering) throw new Error('no answer');
        return new Date();
      },
      log,
      { local: () => Date.now() + machineOffset, intervalMs: 3_600_000 },
    );
    await clock.measure();
    await clock.measure();
    expect(lines.filter((l) => l.level === 40)).toHaveLength(1);
    expect(lines[0]).toMatchObject({ clock_offset_ms: expect.any(Number) });
    expect(Math.abs(lines[0]!.clock_offset_ms! - 5000)).toBeLessThan(100);
    answering = false;
    await clock.measure();
    expect(Math.abs(clock.nowMs() - Date.now())).toBeLessThan(100);
    answering = true;
    machineOffset = 0;
    await clock.measure();
    expect(lines.at(-1)).toMatchObject({ level: 30, msg: expect.stringMatching(/^this machine's clock agrees with the database's again/) });
    expect(Math.abs(clock.offsetMs())).toBeLessThan(100);
    clock.stop();
  });
});
