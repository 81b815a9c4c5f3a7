import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { waitFor } from '../support/child-process.ts';

const FIXTURE = join(import.meta.dirname, 'fixtures', 'log-burst-until-sigterm.ts');
const LINES = 20_000;
const killed: (() => void)[] = [];
afterAll(() => killed.forEach((k) => k()));

describe('Logs on exit (docs/operations.md, Logs): nothing lost, nothing out of order', () => {
  it('a process stopped while its stdout is backed up writes every log line, in order, before it exits 0', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', FIXTURE], {
      cwd: import.meta.dirname,
      env: { PATH: process.env.PATH, HOME: process.env.HOME, BURST_LINES: String(LINES) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    killed.push(() => child.kill('SIGKILL'));
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const closed = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
    // A log collector that has fallen behind: nothing is read, so the pipe fills and pino's
    // asynchronous write of the burst stays in flight, with the rest queued behind it.
    child.stdout.pause();
    await waitFor(() => stderr.includes('burst logged'), 60_000, 'the burst to be logged');
    child.kill('SIGTERM');
    // Give the signal handler time to reach its exit while the pipe is still full (the race a
    // plain process.exit() loses: its synchronous flush overtakes the write in flight), then read.
    await new Promise((resolve) => setTimeout(resolve, 300));
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stdout.resume();
    expect(await closed).toBe(0);

    const lines = out.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { msg: string; seq?: number });
    const burst = lines.filter((l) => l.msg === 'burst').map((l) => l.seq);
    expect(burst.length).toBe(LINES);
    expect(burst.every((seq, i) => seq === i)).toBe(true);
    // And the shutdown's own line comes after all of them.
    expect(lines.findIndex((l) => l.msg === 'shutting down')).toBe(LINES);
  });
});
