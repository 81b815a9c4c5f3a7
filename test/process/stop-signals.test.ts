import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { REPEATED_SIGNAL_MS } from '@connect/shared';
import { LOADING_MESSAGE, LOADING_STOP_MESSAGE } from '@connect/shared/loading-signals';
import { startEntryPoint, waitFor } from '../support/child-process.ts';
import { uniquePrefix } from '../support/harness.ts';
import { silentServer } from '../support/silent-server.ts';

const FIXTURE = join(import.meta.dirname, 'fixtures', 'hung-shutdown.ts');
const HANDOVER_FIXTURE = join(import.meta.dirname, 'fixtures', 'signal-during-handover.ts');
const killed: (() => void)[] = [];
afterAll(() => killed.forEach((k) => k()));

/** A fixture under tsx, once it has written `readyWord` on stderr; its output read as it comes. */
async function startFixture(fixture: string, readyWord: string) {
  const child = spawn(process.execPath, ['--import', 'tsx', fixture], {
    cwd: import.meta.dirname,
    env: { PATH: process.env.PATH, HOME: process.env.HOME },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  killed.push(() => child.kill('SIGKILL'));
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const closed = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  await waitFor(() => err.includes(readyWord), 60_000, `the fixture to write "${readyWord}"`);
  return { child, out: () => out, err: () => err, closed };
}

describe('Stop signals (docs/contract.md, Events; README, Shutdown)', () => {
  it(`a repeat within ${REPEATED_SIGNAL_MS} ms is the same request and changes nothing; a signal after that exits at once with 1`, async () => {
    const { child, out: output, err: errors, closed } = await startFixture(FIXTURE, 'ready');

    child.kill('SIGTERM');
    child.kill('SIGINT');
    await waitFor(() => output().includes('stop signal received again'), 10_000, 'the repeat to be logged');
    // Seen here after the process took the first signal: its own clock has run at least this long since.
    const firstSeen = performance.now();
    expect(output()).toContain('"shutting down"');
    expect(child.exitCode).toBeNull();

    await new Promise((resolve) => setTimeout(resolve, REPEATED_SIGNAL_MS + 100 - (performance.now() - firstSeen)));
    child.kill('SIGTERM');
    expect(await closed).toBe(1);
    const out = output();
    const messages = out.split('\n').filter(Boolean).map((l) => (JSON.parse(l) as { msg: string }).msg);
    expect(messages).toEqual(['shutting down', 'stop signal received again (a parent process forwarding it); still shutting down', 'second signal: exiting now']);
    expect(errors()).not.toMatch(/\n\s+at /);
  });
});

describe('A stop signal during start-up', () => {
  it.each(['api', 'worker'] as const)('%s: SIGTERM while it waits on a database that does not answer exits 0 at once, with a line saying so, not killed by the signal', async (app) => {
    const silent = await silentServer();
    killed.push(() => void silent.close());
    const child = startEntryPoint(app, { MONGO_URL: `mongodb://127.0.0.1:${silent.port}/x`, REDIS_URL: inject('redisUrl'), QUEUE_PREFIX: uniquePrefix(`early_stop_${app}`), PORT: '0', LOG_LEVEL: 'info' });
    killed.push(() => child.proc.kill('SIGKILL'));
    await waitFor(() => child.stdout.some((l) => l.includes(`"${app} starting"`)), 60_000, `the ${app} to start`);
    child.proc.kill('SIGTERM');
    expect(await child.exited, child.stdout.join('\n')).toEqual({ code: 0, signal: null });
    expect(child.stdout.some((l) => l.includes('stop signal during start-up: exiting before taking any work'))).toBe(true);
    expect(child.stdout.some((l) => l.includes('ready'))).toBe(false);
  });
});

describe('A stop signal while node loads the code (loading-signals.ts)', () => {
  it.each(['api', 'worker'] as const)('%s: SIGTERM before the code has loaded exits 0 with a line saying so (node\'s default ended it by the signal, 143)', async (app) => {
    const silent = await silentServer();
    killed.push(() => void silent.close());
    // LOG_LEVEL=debug: the entry point says from when it holds signals, the one moment the test can aim at.
    const child = startEntryPoint(app, { MONGO_URL: `mongodb://127.0.0.1:${silent.port}/x`, REDIS_URL: inject('redisUrl'), QUEUE_PREFIX: uniquePrefix(`loading_stop_${app}`), PORT: '0', LOG_LEVEL: 'debug' });
    killed.push(() => child.proc.kill('SIGKILL'));
    await waitFor(() => child.stdout.some((l) => l.includes(LOADING_MESSAGE)), 60_000, `the ${app} to begin loading`);
    child.proc.kill('SIGTERM');
    expect(await child.exited, [...child.stdout, ...child.stderr].join('\n')).toEqual({ code: 0, signal: null });
    const lines = child.stdout.map((l) => JSON.parse(l) as { name: string; msg: string; signal?: string; level: number });
    expect(lines.find((l) => l.msg === LOADING_STOP_MESSAGE)).toMatchObject({ name: app, signal: 'SIGTERM', level: 30 });
    // It stopped while loading: the code that logs "starting" never ran.
    expect(lines.some((l) => l.msg === `${app} starting`)).toBe(false);
    expect(child.stderr.join('\n')).not.toMatch(/\n\s+at /);
  });

  it('a signal caught while loading kept the process busy, and dispatched only once start-up has taken over, is not lost: start-up handles it (exit 0)', async () => {
    const { child, out, err, closed } = await startFixture(HANDOVER_FIXTURE, 'holding');
    child.kill('SIGTERM');
    expect(await closed, `${out()}\n${err()}`).toBe(0);
    expect(out()).toContain('stop signal during start-up: exiting before taking any work');
    expect(out()).not.toContain(LOADING_STOP_MESSAGE);
  });
});
