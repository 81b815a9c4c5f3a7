import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { uniquePrefix } from '../support/harness.ts';

/**
 * Found by an audit: a worker whose shutdown grace cut `stop-deliveries` short, and whose
 * delivery then finished after `close-redis`, hung at full CPU until SIGKILL. BullMQ 5 retried
 * the job's completion on a connection error forever and, while closing, without the delay
 * between tries. patches/bullmq@5.81.5.patch backports BullMQ 6's fix (no retry while closing).
 */
const FIXTURE = join(import.meta.dirname, 'fixtures', 'job-done-after-redis-closed.ts');
const killed: (() => void)[] = [];
afterAll(() => killed.forEach((k) => k()));

describe('a job that finishes after the worker closed its Redis connection', () => {
  it('does not spin: the process reaches its next timer and exits 0', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', FIXTURE], {
      cwd: import.meta.dirname,
      env: { PATH: process.env.PATH, HOME: process.env.HOME, REDIS_URL: inject('redisUrl'), QUEUE_PREFIX: uniquePrefix('late_job') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    killed.push(() => child.kill('SIGKILL'));
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
    // A spinning process never exits: after 30 s it is killed and the test fails with its output.
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    const code = await exited;
    clearTimeout(timer);
    expect({ code, out }).toEqual({ code: 0, out: expect.stringContaining('event loop alive') });
  }, 60_000);
});
