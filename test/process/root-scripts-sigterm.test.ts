import { afterAll, describe, expect, inject, it } from 'vitest';
import { API_SHUTDOWN_STEPS } from '@connect/api';
import { WORKER_SHUTDOWN_STEPS } from '@connect/worker';
import { apiOrigin, startRootScript, waitFor, type Child } from '../support/child-process.ts';
import { databaseUrl, http, uniquePrefix } from '../support/harness.ts';

/**
 * SPEC's SIGTERM rule, for the processes as the README starts them: `pnpm start:api` and
 * `pnpm start:worker`, the signal sent to pnpm (what a supervisor or a script that started
 * them holds). A script run through `sh -c` without `exec` left node behind: pnpm passed
 * the signal to the shell, which died, and node kept serving, orphaned, while pnpm exited 143.
 */
const children: Child[] = [];
afterAll(() => {
  for (const c of children) {
    // A child in a group of its own may have left node behind: the whole group goes.
    try {
      process.kill(-c.proc.pid!, 'SIGKILL');
    } catch {
      c.proc.kill('SIGKILL');
    }
  }
});

const env = (label: string) => ({ MONGO_URL: databaseUrl(label), REDIS_URL: inject('redisUrl'), QUEUE_PREFIX: uniquePrefix(label), LOG_LEVEL: 'info' });

const stepsDone = (child: Child) =>
  child.stdout.flatMap((l) => {
    try {
      const entry = JSON.parse(l) as { msg?: string; step?: string; time?: number };
      return entry.msg === 'shutdown step done' ? [entry] : [];
    } catch {
      return [];
    }
  })
    .sort((a, b) => (a.time ?? 0) - (b.time ?? 0))
    .map((e) => e.step);

describe('SIGTERM to `pnpm start:api` / `pnpm start:worker` reaches node', () => {
  it('pnpm start:api: the API runs its shutdown steps, exits 0, and pnpm exits 0; nothing is left listening', async () => {
    const child = startRootScript('start:api', { ...env('pnpm_api'), PORT: '0', HOST: '127.0.0.1' });
    children.push(child);
    const origin = await apiOrigin(child);
    expect((await http(`${origin}/livez`)).status).toBe(200);
    child.proc.kill('SIGTERM');
    expect(await child.exited).toEqual({ code: 0, signal: null });
    expect(stepsDone(child)).toEqual([...API_SHUTDOWN_STEPS]);
    await expect(fetch(`${origin}/livez`)).rejects.toThrow();
  });

  it('pnpm start:worker: the worker runs its shutdown steps, exits 0, and pnpm exits 0', async () => {
    const child = startRootScript('start:worker', env('pnpm_worker'));
    children.push(child);
    await waitFor(() => child.proc.exitCode === null && child.stdout.some((l) => l.includes('"worker ready"')), 60_000, 'the worker to start');
    child.proc.kill('SIGTERM');
    // On a failure, the worker's last lines say which shutdown step failed. Twice in CI it was BullMQ
    // killing a worker stopped while its connections were still opening (patches/bullmq@5.81.5.patch).
    const tail = () => [...child.stdout, ...child.stderr].slice(-40).join('\n');
    expect(await child.exited, tail()).toEqual({ code: 0, signal: null });
    expect(stepsDone(child), tail()).toEqual([...WORKER_SHUTDOWN_STEPS]);
  });

  // Ctrl-C in a terminal, `timeout`, systemd's default KillMode signal the whole process group:
  // node gets the signal from the kernel and again from pnpm, which forwards what it gets. The
  // second one used to be taken as "exit now" (exit 1, no step done, a stack trace from the closed log).
  it('Ctrl-C (SIGINT to the process group of pnpm start:api): one shutdown, every step done, node and pnpm exit 0', async () => {
    const child = startRootScript('start:api', { ...env('group_api'), PORT: '0', HOST: '127.0.0.1' }, { ownGroup: true });
    children.push(child);
    const origin = await apiOrigin(child);
    expect((await http(`${origin}/livez`)).status).toBe(200);
    process.kill(-child.proc.pid!, 'SIGINT');
    const tail = () => [...child.stdout, ...child.stderr].slice(-40).join('\n');
    expect(await child.exited, tail()).toEqual({ code: 0, signal: null });
    expect(stepsDone(child), tail()).toEqual([...API_SHUTDOWN_STEPS]);
    expect(child.stdout.filter((l) => l.includes('"shutting down"')), tail()).toHaveLength(1);
  });

  it('SIGTERM to the process group of pnpm start:worker (timeout, systemd): one shutdown, every step done, exit 0', async () => {
    const child = startRootScript('start:worker', env('group_worker'), { ownGroup: true });
    children.push(child);
    await waitFor(() => child.proc.exitCode === null && child.stdout.some((l) => l.includes('"worker ready"')), 60_000, 'the worker to start');
    process.kill(-child.proc.pid!, 'SIGTERM');
    const tail = () => [...child.stdout, ...child.stderr].slice(-40).join('\n');
    expect(await child.exited, tail()).toEqual({ code: 0, signal: null });
    expect(stepsDone(child), tail()).toEqual([...WORKER_SHUTDOWN_STEPS]);
    expect(child.stdout.filter((l) => l.includes('"shutting down"')), tail()).toHaveLength(1);
  });
});
