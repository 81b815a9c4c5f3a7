import { spawn, type ChildProcess } from 'node:child_process';
import { REPO_ROOT } from '@connect/local-services';
import { nodeArgsOf } from './entry-points.ts';

export interface Child {
  proc: ChildProcess;
  stdout: string[];
  stderr: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Runs one of the project's entry points (apps/<name>/src/main.ts, bundled: test/support/entry-points.ts) as a real process. */
export function startEntryPoint(app: 'api' | 'worker', env: Record<string, string | undefined>): Child {
  return startChild(process.execPath, nodeArgsOf(app), env);
}

/**
 * Runs a root package.json script the way an operator does (`pnpm -s <script>`), pnpm being the
 * process it returns. With `ownGroup`, pnpm leads a process group of its own, so a test can
 * signal the whole group (`process.kill(-pid, ...)`) as a terminal's Ctrl-C, `timeout` or
 * systemd do.
 */
export function startRootScript(script: string, env: Record<string, string | undefined>, o: { ownGroup?: boolean } = {}): Child {
  return startChild('pnpm', ['-s', script], env, o.ownGroup);
}

function startChild(command: string, args: string[], env: Record<string, string | undefined>, ownGroup = false): Child {
  const proc = spawn(command, args, {
    cwd: REPO_ROOT,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env } as NodeJS.ProcessEnv,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: ownGroup,
  });
  const stdout: string[] = [];
  const stderr: string[] = [];
  collectLines(proc.stdout!, stdout);
  collectLines(proc.stderr!, stderr);
  // 'close', not 'exit': the process has ended AND its output has been read to the end, so a
  // test that reads the last log lines after `exited` sees them all.
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.once('close', (code, signal) => resolve({ code, signal })),
  );
  return { proc, stdout, stderr, exited };
}

/**
 * Whole lines only: a pipe read can end in the middle of a line (a burst larger than
 * one read), and half a JSON log line would fail the test that parses it.
 */
function collectLines(stream: NodeJS.ReadableStream, into: string[]): void {
  let partial = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    const lines = (partial + chunk).split('\n');
    partial = lines.pop()!;
    into.push(...lines.filter(Boolean));
  });
  stream.on('end', () => {
    if (partial) into.push(partial);
  });
}

export async function waitFor<T>(probe: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 20_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v as T;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * The origin an API child started with PORT=0 listens on, from its "api ready"
 * log line (needs LOG_LEVEL info or lower). The kernel picked the port, so no
 * other process can have taken it between a check and the bind.
 */
export async function apiOrigin(child: Child, timeoutMs = 60_000): Promise<string> {
  const line = await waitFor(
    () => {
      if (child.proc.exitCode !== null) throw new Error(`the API exited (${child.proc.exitCode}) before it listened: ${child.stderr.join('\n').slice(-2000)}`);
      return child.stdout.find((l) => l.includes('"api ready"'));
    },
    timeoutMs,
    'the API to listen',
  );
  const address = (JSON.parse(line) as { address?: string }).address;
  if (!address) throw new Error(`"api ready" without an address: ${line}`);
  return address.replace('localhost', '127.0.0.1');
}
