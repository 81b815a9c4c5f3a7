/**
 * Runs the bench scripts as child processes (their own event loop and CPU time,
 * like a real client or peer). A child is started once per kind and given one
 * spec after another over IPC (`startBenchChild`), so a run pays Node and tsx
 * start-up once per kind, not once per scenario; `runBenchChild` is the one-shot form.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const BENCH_DIR = fileURLToPath(new URL('.', import.meta.url));
export const REPO_ROOT = join(BENCH_DIR, '..');

export function spawnTs(script: string, args: string[], env: Record<string, string> = {}, extraNodeArgs: string[] = [], ipc = false): ChildProcess {
  return spawn(process.execPath, [...extraNodeArgs, '--import', 'tsx', script, ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, ...env },
    stdio: ipc ? ['ignore', 'pipe', 'pipe', 'ipc'] : ['ignore', 'pipe', 'pipe'],
  });
}

export interface BenchChild {
  name: string;
  process: ChildProcess;
  /**
   * Runs one spec in the child; specs may be queued, the child runs them one at a time.
   * Rejects if the answer takes longer than `timeoutMs` (default 5 minutes, far beyond any
   * scenario): a hung scenario fails the run, with its name, instead of holding it forever.
   */
  run<T>(spec: unknown, timeoutMs?: number): Promise<T>;
  /** Closes the IPC channel; the child exits when it sees it go. */
  close(): Promise<void>;
}

type Reply = { id: number; result?: unknown; error?: string };

/** Starts `bench/<name>.ts` as a long-lived child that answers specs sent over IPC. */
export function startBenchChild(name: string): BenchChild {
  const child = spawnTs(join(BENCH_DIR, `${name}.ts`), [], {}, [], true);
  let err = '';
  child.stderr!.on('data', (d) => (err = (err + d).slice(-4000)));
  child.stdout!.resume();
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  let nextId = 0;
  // Specs go out once the child listens (it says so first): a message sent before would be lost.
  let markReady: () => void;
  const ready = new Promise<void>((resolve) => (markReady = resolve));
  child.on('message', (m: Reply | { ready: true }) => {
    if ('ready' in m) return markReady();
    const p = pending.get(m.id);
    if (!p) return;
    pending.delete(m.id);
    if (m.error !== undefined) p.reject(new Error(`${name}: ${m.error}`));
    else p.resolve(m.result);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.once('exit', (code, signal) => {
    for (const p of pending.values()) p.reject(new Error(`${name} exited (${code ?? signal}): ${err.slice(-2000)}`));
    pending.clear();
  });
  return {
    name,
    process: child,
    run<T>(spec: unknown, timeoutMs = 5 * 60_000): Promise<T> {
      const id = nextId++;
      return new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => {
          if (!pending.delete(id)) return;
          reject(new Error(`${name}: no answer after ${timeoutMs / 1000} s to ${JSON.stringify(spec).slice(0, 300)}`));
        }, timeoutMs);
        pending.set(id, {
          resolve: (v) => {
            clearTimeout(timer);
            resolve(v as T);
          },
          reject: (e) => {
            clearTimeout(timer);
            reject(e);
          },
        });
        void ready.then(() =>
          child.send({ id, spec }, (e) => {
            if (!e || !pending.has(id)) return;
            pending.delete(id);
            reject(e);
          }),
        );
      });
    },
    async close() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      if (child.connected) child.disconnect();
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    },
  };
}

/** Runs `bench/<name>.ts` once with one spec and resolves with its answer. */
export async function runBenchChild<T>(name: string, spec: unknown): Promise<T> {
  const child = startBenchChild(name);
  try {
    return await child.run<T>(spec);
  } finally {
    await child.close();
  }
}

/**
 * The entry point of a child script. Under IPC: answer each spec sent, one at a
 * time, until the parent goes away. Otherwise: one JSON spec argument, the JSON
 * answer as the last stdout line.
 */
export async function childMain<S, R>(run: (spec: S) => Promise<R>): Promise<void> {
  if (process.send && process.argv[2] === undefined) {
    let chain = Promise.resolve();
    process.on('message', (m: { id: number; spec: S }) => {
      chain = chain.then(async () => {
        let reply: Reply;
        try {
          reply = { id: m.id, result: await run(m.spec) };
        } catch (e) {
          reply = { id: m.id, error: e instanceof Error ? (e.stack ?? e.message) : String(e) };
        }
        await new Promise<void>((resolve) => process.send!(reply, undefined, {}, () => resolve()));
      });
    });
    process.once('disconnect', () => process.exit(0));
    process.send({ ready: true });
    return;
  }
  const spec = JSON.parse(process.argv[2] ?? '{}') as S;
  const result = await run(spec);
  process.stdout.write(`\n${JSON.stringify(result)}\n`);
  process.exit(0);
}

export function isMain(importMetaUrl: string): boolean {
  return process.argv[1] !== undefined && fileURLToPath(importMetaUrl) === process.argv[1];
}
