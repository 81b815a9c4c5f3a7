/**
 * A background task run again and again, never two runs at once: the next run
 * is scheduled when the previous one ends, after `nextDelayMs(result)` (so a
 * task with more to do can ask to run again at once). The task handles its own
 * errors: a rejection here would stop the loop, so tasks catch and log.
 * The outbox sweep, the retention purge and the Redis loss watch run on it.
 */
export interface Periodic<T> {
  /** No new run; resolves once the run in progress, if any, has ended. */
  stop(): Promise<void>;
  /** A run now, after the one in progress (tests). */
  runNow(): Promise<T>;
}

export function startPeriodic<T>(task: () => Promise<T>, nextDelayMs: (result: T) => number, firstDelayMs: number): Periodic<T> {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let current: Promise<T> | undefined;

  const schedule = (delay: number) => {
    if (stopped) return;
    timer = setTimeout(() => {
      const run = task();
      current = run;
      void run.then(
        (result) => {
          current = undefined;
          schedule(nextDelayMs(result));
        },
        () => {
          current = undefined;
        },
      );
    }, delay);
    timer.unref();
  };
  schedule(firstDelayMs);

  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await current?.catch(() => undefined);
    },
    async runNow() {
      while (current) await current.catch(() => undefined);
      return task();
    },
  };
}
