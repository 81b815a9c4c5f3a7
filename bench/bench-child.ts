/**
 * Runs one of the bench scripts as a child process (its own event loop and CPU
 * time, like a real client or peer) and returns the JSON it prints last.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const BENCH_DIR = fileURLToPath(new URL('.', import.meta.url));
export const REPO_ROOT = join(BENCH_DIR, '..');

export function spawnTs(script: string, args: string[], env: Record<string, string> = {}, extraNodeArgs: string[] = []): ChildProcess {
  return spawn(process.execPath, [...extraNodeArgs, '--import', 'tsx', script, ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/** Runs `bench/<name>.ts` with one JSON argument and resolves with the JSON of its last stdout line. */
export function runBenchChild<T>(name: string, spec: unknown): Promise<T> {
  const child = spawnTs(join(BENCH_DIR, `${name}.ts`), [JSON.stringify(spec)]);
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  return new Promise((resolve, reject) => {
    child.on('exit', (code) => {
      const last = out.trim().split('\n').pop() ?? '';
      if (code !== 0) return reject(new Error(`${name} exited ${code}: ${err.slice(-2000)}`));
      try {
        resolve(JSON.parse(last) as T);
      } catch {
        reject(new Error(`${name} printed no JSON: ${out.slice(-500)} ${err.slice(-1000)}`));
      }
    });
  });
}

/** The entry point of a child script: parse the JSON argument, run, print the JSON answer. */
export async function childMain<S, R>(run: (spec: S) => Promise<R>): Promise<void> {
  const spec = JSON.parse(process.argv[2] ?? '{}') as S;
  const result = await run(spec);
  process.stdout.write(`\n${JSON.stringify(result)}\n`);
  process.exit(0);
}

export function isMain(importMetaUrl: string): boolean {
  return process.argv[1] !== undefined && fileURLToPath(importMetaUrl) === process.argv[1];
}
