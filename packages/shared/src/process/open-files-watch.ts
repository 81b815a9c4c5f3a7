import { readdir, readFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import { conditionWarning } from './condition-warning.ts';

/**
 * File descriptors running out, said in the log (docs/operations.md, Logs). Past the process's
 * limit (`ulimit -n`) the API stops taking connections without a word: libuv accepts and closes
 * each new one, so clients see resets and the log shows nothing (a resource audit held 1,000
 * idle keep-alive connections under `ulimit -n 1024`). Every `intervalMs` this counts the
 * process's open descriptors and warns past `warnAtRatio` of the soft limit. Linux only
 * (/proc); elsewhere it does nothing. `connect_*_process_open_fds` and `_max_fds` (prom-client's
 * default metrics) carry the same figures for dashboards.
 */
export interface OpenFiles {
  open: number;
  limit: number;
}

export interface OpenFilesWatch {
  stop(): void;
  /** Counts and judges now (the timer does it every `intervalMs`). Never rejects; undefined where /proc is not. */
  check(): Promise<OpenFiles | undefined>;
}

export interface OpenFilesWatchOptions {
  intervalMs?: number;
  remindEveryMs?: number;
  warnAtRatio?: number;
  /** Where the counts come from (tests); the process's own /proc entries by default. */
  read?: () => Promise<OpenFiles | undefined>;
}

/** The soft "Max open files" of /proc/PID/limits; undefined when unlimited or absent. */
export function parseOpenFilesLimit(limits: string): number | undefined {
  const soft = /^Max open files\s+(\S+)/m.exec(limits)?.[1];
  const n = Number(soft);
  return soft !== undefined && Number.isFinite(n) ? n : undefined;
}

async function readOwnOpenFiles(): Promise<OpenFiles | undefined> {
  try {
    const [entries, limits] = await Promise.all([readdir('/proc/self/fd'), readFile('/proc/self/limits', 'utf8')]);
    const limit = parseOpenFilesLimit(limits);
    // One of the entries is the directory read itself.
    return limit === undefined ? undefined : { open: Math.max(0, entries.length - 1), limit };
  } catch {
    return undefined;
  }
}

export function watchOpenFiles(log: Logger, o: OpenFilesWatchOptions = {}): OpenFilesWatch {
  const intervalMs = o.intervalMs ?? 30_000;
  const warnAtRatio = o.warnAtRatio ?? 0.9;
  const read = o.read ?? readOwnOpenFiles;
  const warn = conditionWarning(log, o.remindEveryMs ?? 600_000);
  const check = async (): Promise<OpenFiles | undefined> => {
    const files = await read().catch(() => undefined);
    if (!files) return undefined;
    const fields = { open_fds: files.open, max_fds: files.limit };
    warn(
      files.open >= warnAtRatio * files.limit,
      fields,
      `this process has ${files.open} of its ${files.limit} file descriptors open: at the limit it can take no new connection (clients see them reset, nothing else is logged) and opens no socket to MongoDB, Redis or a target. Raise the limit (ulimit -n, LimitNOFILE, the container's nofile), or find what holds them (idle keep-alive connections: a proxy in front)`,
      `file descriptors are back under ${Math.round(warnAtRatio * 100)} % of the limit (${files.open} of ${files.limit} open)`,
    );
    return files;
  };
  const timer = setInterval(() => void check(), intervalMs);
  timer.unref();
  void check();
  return { stop: () => clearInterval(timer), check };
}
