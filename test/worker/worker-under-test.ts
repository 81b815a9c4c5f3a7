/**
 * The real worker for tests: in this process over the given environment (the
 * same variables the API got), or as a child process exactly as `pnpm
 * start:worker` runs it, for tests that kill it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createLogger, DEFAULT_DELIVERY_POLICY, loadConfig, runShutdownSequence, type DeliveryPolicy } from '@connect/shared';
import { createWorkerDeps, startWorker, workerShutdownSteps, type RunningWorker, type WorkerDeps, type WorkerOptions } from '@connect/worker';
import { LogCapture } from '../support/harness.ts';
import { eventually } from './callback-receiver.ts';
import { REPO_ROOT } from '@connect/local-services';
import { nodeArgsOf } from '../support/entry-points.ts';

/** Short delays so retries and crash recovery fit in a test run. */
export const FAST_WORKER_OPTIONS: Partial<WorkerOptions> = {
  // 8 attempts, as quick as the old 200 ms doubling backoff; a failing target is probed every 0.5 to 2 s.
  policy: { ...DEFAULT_DELIVERY_POLICY, retryScheduleMs: [200, 400, 800, 1600, 2000, 2000, 2000], probeIntervalMs: 500, probeMaxIntervalMs: 2000 },
  healthPollMs: 200,
  datastoreWatchMs: 1000,
  sweepIntervalMs: 300,
  // Long enough that a loaded CI machine does not mistake a slow job for a dead worker
  // (that would be a legitimate at-least-once duplicate, but noise for the tests);
  // the crash test sets its own short values on the child process.
  lockDurationMs: 15_000,
  stalledIntervalMs: 5000,
  shutdownGraceMs: 10_000,
  rosterIntervalMs: 500,
  rosterTtlMs: 3000,
  // A failure of our own (a datastore cut by a test) is retried at most this long after (1 s,
  // doubling), as the short schedule above retries a target's.
  fanOutParkMs: 2000,
};

export interface TestWorker {
  deps: WorkerDeps;
  worker: RunningWorker;
  logs: LogCapture;
  /** The full shutdown sequence; returns the names of the completed steps. */
  close(): Promise<string[]>;
}

export type TestWorkerOptions = Partial<Omit<WorkerOptions, 'policy'>> & { policy?: Partial<DeliveryPolicy> };

export async function startTestWorker(env: Record<string, string>, options: TestWorkerOptions = {}): Promise<TestWorker> {
  const config = loadConfig(env);
  const logs = new LogCapture();
  const log = createLogger('debug', 'worker', logs);
  const policy: DeliveryPolicy = { ...FAST_WORKER_OPTIONS.policy!, ...options.policy };
  const deps = await createWorkerDeps(config, log, { ...FAST_WORKER_OPTIONS, ...options, policy });
  const worker = startWorker(deps);
  let closing: Promise<string[]> | undefined;
  return {
    deps,
    worker,
    logs,
    close: () => (closing ??= runShutdownSequence(workerShutdownSteps(worker, deps), log, 10_000)),
  };
}

/** Resolves once the worker's events queue holds nothing left to fan out (every event went to the targets it knows). */
export async function eventsFannedOut(worker: TestWorker, timeoutMs: number): Promise<void> {
  await eventually(async () => {
    const c = await worker.deps.eventsQueue.getJobCounts('waiting', 'active', 'delayed', 'prioritized');
    return Object.values(c).every((n) => n === 0);
  }, timeoutMs, 250);
}

export interface WorkerChild {
  child: ChildProcess;
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** The worker's entry point in one node process (test/support/entry-points.ts), so a signal reaches the worker itself. */
export function spawnWorker(env: Record<string, string>, extra: Record<string, string> = {}): WorkerChild {
  const child = spawn(process.execPath, nodeArgsOf('worker'), {
    cwd: REPO_ROOT,
    env: { PATH: process.env.PATH ?? '', ...env, LOG_LEVEL: 'info', ...extra },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  return { child, output: () => out, exited };
}
