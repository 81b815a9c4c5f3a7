import type { Logger } from 'pino';

/**
 * A condition a process watches over time (a clock off, Redis nearly full, file descriptors
 * running out), said in the log: a warn line when it starts, again every `remindEveryMs` while it
 * lasts, and one info line when it ends. Each call gives the latest reading.
 */
export type ConditionWarning = (bad: boolean, fields: object, warning: string, ended: string) => void;

export function conditionWarning(log: Logger, remindEveryMs: number, now: () => number = () => performance.now()): ConditionWarning {
  let warnedAt: number | null = null;
  return (bad, fields, warning, ended) => {
    const t = now();
    if (bad && (warnedAt === null || t - warnedAt >= remindEveryMs)) {
      warnedAt = t;
      log.warn(fields, warning);
    } else if (!bad && warnedAt !== null) {
      warnedAt = null;
      log.info(fields, ended);
    }
  };
}
