import type { Logger } from 'pino';
import { endLogs } from '../logger.ts';

export interface ShutdownStep {
  name: string;
  run: () => Promise<unknown>;
}

/**
 * Runs named steps in order, each bounded by what is left of the grace period, so
 * a hung step cannot keep the process alive forever. Returns the names of the
 * steps that completed, in order, so tests can assert the sequence.
 */
export async function runShutdownSequence(steps: ShutdownStep[], log: Logger, graceMs: number): Promise<string[]> {
  const deadline = Date.now() + graceMs;
  const done: string[] = [];
  log.info({ steps: steps.map((s) => s.name) }, 'shutdown sequence');
  for (const step of steps) {
    const left = Math.max(deadline - Date.now(), 100);
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        step.run(),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`timed out after ${left} ms`)), left);
        }),
      ]);
      done.push(step.name);
      log.info({ step: step.name }, 'shutdown step done');
    } catch (err) {
      log.warn({ step: step.name, err: (err as Error).message }, 'shutdown step failed');
    } finally {
      clearTimeout(timer);
    }
  }
  return done;
}

/**
 * SIGTERM/SIGINT run the sequence once and exit 0 (1 when a step failed); a
 * second signal exits at once.
 */
export function onTerminationSignals(log: Logger, shutdown: () => Promise<boolean>): void {
  let started = false;
  const handler = (signal: NodeJS.Signals) => {
    if (started) {
      log.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    started = true;
    log.info({ signal }, 'shutting down');
    // The log goes out whole and in order before the exit (endLogs says why it has to be waited for).
    const exit = (code: number) => void endLogs(log).then(() => process.exit(code));
    shutdown().then(
      (clean) => exit(clean ? 0 : 1),
      () => exit(1),
    );
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
}
