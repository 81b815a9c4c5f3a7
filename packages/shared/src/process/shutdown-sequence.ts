import type { Logger } from 'pino';
import { endLogs } from '../logger.ts';
import { releaseLoadingSignals } from './loading-signals.ts';

export interface ShutdownStep {
  name: string;
  run: () => Promise<unknown>;
}

export interface ShutdownOutcome {
  /** The steps that completed, in order. */
  done: string[];
  /** Steps the grace period cut short: the bound the operator set, not a fault (what they left is picked up again, docs/guarantees.md). */
  cutShort: string[];
  /** Steps that threw. */
  failed: string[];
}

const CUT_SHORT = Symbol('cut short by the grace period');

/**
 * Runs named steps in order, each bounded by what is left of the grace period, so
 * a hung step cannot keep the process alive forever, and says which completed,
 * which the grace period cut short and which failed.
 */
export async function runShutdown(steps: ShutdownStep[], log: Logger, graceMs: number): Promise<ShutdownOutcome> {
  const deadline = Date.now() + graceMs;
  const outcome: ShutdownOutcome = { done: [], cutShort: [], failed: [] };
  log.info({ steps: steps.map((s) => s.name) }, 'shutdown sequence');
  for (const step of steps) {
    const left = Math.max(deadline - Date.now(), 100);
    let timer: NodeJS.Timeout | undefined;
    try {
      const result = await Promise.race([
        step.run(),
        new Promise((resolve) => {
          timer = setTimeout(() => resolve(CUT_SHORT), left);
        }),
      ]);
      if (result === CUT_SHORT) {
        outcome.cutShort.push(step.name);
        log.warn({ step: step.name, after_ms: left }, 'shutdown step cut short by the grace period');
      } else {
        outcome.done.push(step.name);
        log.info({ step: step.name }, 'shutdown step done');
      }
    } catch (err) {
      outcome.failed.push(step.name);
      log.warn({ step: step.name, err: (err as Error).message }, 'shutdown step failed');
    } finally {
      clearTimeout(timer);
    }
  }
  return outcome;
}

/** runShutdown's completed steps, in order, so tests can assert the sequence. */
export async function runShutdownSequence(steps: ShutdownStep[], log: Logger, graceMs: number): Promise<string[]> {
  return (await runShutdown(steps, log, graceMs)).done;
}

/**
 * How long after the first stop signal another one is taken as the same request. A
 * signal sent to a whole process group reaches node twice: once directly and once
 * forwarded by its parent (`pnpm start:*` forwards what it gets), a few milliseconds
 * apart: Ctrl-C in a terminal, `timeout`, systemd's default `KillMode=control-group`.
 * A person pressing Ctrl-C again to force the exit does so later than this.
 */
export const REPEATED_SIGNAL_MS = 1000;

/** What onTerminationSignals returns: the shutdown is given once start-up has built what it stops. */
export interface TerminationSignals {
  /** The shutdown sequence; a signal from now on runs it. */
  setShutdown(shutdown: () => Promise<boolean>): void;
  /** True once a stop signal arrived: start-up should take no work. */
  readonly stopping: boolean;
}

/**
 * SIGTERM/SIGINT run the sequence once and exit 0 (1 when a step failed, not when
 * the grace period cut one short). Another signal within REPEATED_SIGNAL_MS is the
 * same request and changes nothing; one after that exits at once, with 1. Registered
 * as soon as the logger exists: a signal during start-up, before `setShutdown` (nothing
 * taken yet, maybe a datastore still being waited for), writes out the log and exits 0.
 */
export function onTerminationSignals(log: Logger, shutdown?: () => Promise<boolean>): TerminationSignals {
  let run = shutdown;
  let startedAt: number | undefined;
  // The log goes out whole and in order before the exit (endLogs says why it has to be waited for;
  // a line logged after it has begun is dropped, so a late signal's line is harmless).
  const exit = (code: number) => void endLogs(log).then(() => process.exit(code));
  const handler = (signal: NodeJS.Signals) => {
    if (startedAt !== undefined) {
      if (performance.now() - startedAt < REPEATED_SIGNAL_MS) {
        log.info({ signal }, 'stop signal received again (a parent process forwarding it); still shutting down');
        return;
      }
      log.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    startedAt = performance.now();
    if (!run) {
      log.info({ signal }, 'stop signal during start-up: exiting before taking any work');
      exit(0);
      return;
    }
    log.info({ signal }, 'shutting down');
    run().then(
      (clean) => exit(clean ? 0 : 1),
      () => exit(1),
    );
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
  // The entry point's loading-time handler (loading-signals.ts) hands over, after these are in place: a
  // signal node has caught but not yet dispatched (the loading kept the event loop busy) is lost when
  // a signal's last listener goes, even for a moment.
  releaseLoadingSignals();
  return {
    setShutdown(shutdown) {
      run = shutdown;
    },
    get stopping() {
      return startedAt !== undefined;
    },
  };
}
