import type { Logger } from 'pino';
import { conditionWarning } from './condition-warning.ts';

/**
 * One clock for the times every process compares (docs/guarantees.md, Clocks): the database's,
 * which every write and every read of them goes to. A write's `updated_at` and outbox slot are dated by it in the API,
 * and the worker's outbox sweep and retention purge read those dates by it. With each machine's own
 * clock instead, an API behind the worker, or a worker that had once run ahead (its sweep cursor
 * stays where that clock put it), left events unpublished for good, and a worker's clock jumping a
 * month ahead purged dead letters minutes old.
 *
 * The database's time as last measured (a `hello`'s `localTime` every `intervalMs`, kept when its round trip is short
 * enough to date it within `maxRoundTripMs / 2`), moved on by this process's monotonic clock since:
 * a jump of this machine's wall clock between two measurements changes nothing. Until the first
 * measurement, this machine's clock; while the database does not answer, the last measurement moved on.
 * This machine's clock apart from the database's by more than `warnAboveMs` is logged at warn (one of the
 * two is wrong: what is not dated by this clock, such as token lifetimes, BullMQ's retry delays and
 * a signature's timestamp, still goes by this machine's), again every `remindEveryMs` while it
 * lasts, and at info when it is back within.
 */
export interface ReferenceClock {
  /** Milliseconds since the epoch by the reference clock. */
  nowMs(): number;
  now(): Date;
  /** The reference clock minus this machine's, in milliseconds. */
  offsetMs(): number;
  /** Measures the offset now (the timer does it every `intervalMs`). Never rejects. */
  measure(): Promise<void>;
  stop(): void;
}

export interface ReferenceClockOptions {
  intervalMs?: number;
  warnAboveMs?: number;
  remindEveryMs?: number;
  maxRoundTripMs?: number;
  /** This machine's clock (tests skew it). */
  local?: () => number;
}

/** What the clock asks: the database's time (a `hello`'s `localTime`). */
export type TimeSource = () => Promise<Date>;

/** The database's time, from a `hello` (MongoDB and FerretDB both answer `localTime`, to the millisecond). */
export function databaseTime(db: { command(cmd: Record<string, unknown>): Promise<Record<string, unknown>> }): TimeSource {
  return async () => {
    const { localTime } = await db.command({ hello: 1 });
    if (!(localTime instanceof Date)) throw new Error('hello answered no localTime');
    return localTime;
  };
}

const seconds = (ms: number) => Math.round(ms / 100) / 10;

/** A clock that is this machine's own (a process with no Redis, tests). */
export function localClock(local: () => number = Date.now): ReferenceClock {
  return { nowMs: local, now: () => new Date(local()), offsetMs: () => 0, measure: async () => {}, stop: () => {} };
}

export function referenceClock(source: TimeSource, log: Logger, o: ReferenceClockOptions = {}): ReferenceClock {
  const local = o.local ?? Date.now;
  const intervalMs = o.intervalMs ?? 5000;
  const warnAboveMs = o.warnAboveMs ?? 2000;
  const remindEveryMs = o.remindEveryMs ?? 600_000;
  const maxRoundTripMs = o.maxRoundTripMs ?? 500;
  // The reference at a moment of the monotonic clock: nowMs() is anchor.at + (performance.now() - anchor.mono).
  let anchor = { at: local(), mono: performance.now() };
  const nowMs = () => anchor.at + (performance.now() - anchor.mono);
  const offsetMs = () => nowMs() - local();
  const warn = conditionWarning(log, remindEveryMs);
  let measuring: Promise<void> | null = null;

  const say = (offset: number) => {
    const words = `this machine's clock is ${seconds(Math.abs(offset))} s ${offset < 0 ? 'ahead of' : 'behind'} the database's`;
    warn(
      Math.abs(offset) > warnAboveMs,
      { clock_offset_ms: Math.round(offset) },
      `${words}: writes, the outbox sweep, the retention purge and target health go by the database's clock, but token lifetimes, retry delays and signature timestamps go by this machine's; set the clocks right (NTP)`,
      `this machine's clock agrees with the database's again (${words})`,
    );
  };

  const measureOnce = async () => {
    try {
      const m0 = performance.now();
      const at = (await source()).getTime();
      const m1 = performance.now();
      if (!Number.isFinite(at) || m1 - m0 > maxRoundTripMs) return;
      // The database read its clock about half-way through the round trip.
      anchor = { at: at + (m1 - m0) / 2, mono: m1 };
      say(offsetMs());
    } catch {
      // A database not answering is the datastore watch's to report; the last measurement stands.
    }
  };
  const measure = () => (measuring ??= measureOnce().finally(() => (measuring = null)));
  const timer = setInterval(() => void measure(), intervalMs);
  timer.unref();
  void measure();
  return { nowMs, now: () => new Date(nowMs()), offsetMs, measure, stop: () => clearInterval(timer) };
}

/** The gauge each process exports (prom-client's `Gauge` options, less `registers`): an alert on clocks apart. */
export function clockOffsetGaugeOptions(offsetMs: () => number): { name: string; help: string; collect(this: { set(v: number): void }): void } {
  return {
    name: 'connect_clock_offset_seconds',
    help: "The database's clock minus this machine's (writes are dated by the database's; keep both right with NTP)",
    collect() {
      this.set(offsetMs() / 1000);
    },
  };
}
