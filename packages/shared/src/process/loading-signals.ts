/**
 * Stop signals while a service's code is still loading. The API's and the worker's entry
 * points (apps/<name>/src/main.ts) call holdStopSignalsWhileLoading first and only then
 * load the rest (the drivers, Fastify, BullMQ: a second or two, more while tsx compiles
 * the sources). Without it, node's default ended a process signalled in that time by the
 * signal (exit 143 for SIGTERM) where the contract says a stop during start-up exits 0
 * (docs/contract.md, shutdown). Nothing is taken while loading, so the handler exits 0 at
 * once. onTerminationSignals (shutdown-sequence.ts) releases it when it takes over.
 *
 * Imports node builtins only: whatever this module loads delays the moment it protects.
 */
import { writeSync } from 'node:fs';
import { hostname } from 'node:os';

/** Process-wide, not module state: the entry point may reach this file through the package's export and the rest of the code through a relative path. */
const HELD = Symbol.for('connect.loadingSignalHandler');
type Holder = { [HELD]?: (signal: NodeJS.Signals) => void };

/** pino's numeric levels, for the level LOG_LEVEL names (validated later, with the rest of the configuration). */
const LEVELS: Record<string, number> = { trace: 10, debug: 20, info: 30 };

export const LOADING_STOP_MESSAGE = 'stop signal while loading: exiting before taking any work';
export const LOADING_MESSAGE = 'loading; a stop signal from now on exits 0';

/** One line in pino's shape, when LOG_LEVEL lets `level` through; written synchronously, so it is out before an exit. */
function logLine(name: string, level: number, fields: Record<string, unknown>, msg: string): void {
  const configured = process.env.LOG_LEVEL?.trim().toLowerCase();
  const threshold = configured ? (LEVELS[configured] ?? Number.POSITIVE_INFINITY) : LEVELS.info!;
  if (level < threshold) return;
  const line = { level, time: Date.now(), pid: process.pid, hostname: hostname(), name, ...fields, msg };
  try {
    writeSync(1, `${JSON.stringify(line)}\n`);
  } catch {
    // stdout closed: nothing to say it on.
  }
}

/** From now until releaseLoadingSignals, SIGTERM and SIGINT end the process with 0 and one log line in the service's format. */
export function holdStopSignalsWhileLoading(name: string): void {
  const holder = process as Holder;
  if (holder[HELD]) return;
  const handler = (signal: NodeJS.Signals) => {
    logLine(name, LEVELS.info!, { signal }, LOADING_STOP_MESSAGE);
    process.exit(0);
  };
  holder[HELD] = handler;
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
  // At debug only: the moment from which a signal is held (a test waits for it).
  logLine(name, LEVELS.debug!, {}, LOADING_MESSAGE);
}

/** Removes the loading-time handler, if any: the caller's own handlers take the signals from now on. */
export function releaseLoadingSignals(): void {
  const holder = process as Holder;
  const handler = holder[HELD];
  if (!handler) return;
  process.off('SIGTERM', handler);
  process.off('SIGINT', handler);
  delete holder[HELD];
}
