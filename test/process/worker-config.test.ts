import { afterAll, describe, expect, it } from 'vitest';
import { startEntryPoint, type Child } from '../support/child-process.ts';

const children: Child[] = [];
afterAll(() => {
  for (const c of children) c.proc.kill('SIGKILL');
});

// Datastores that would never answer: the worker must stop on its configuration before it tries them.
const base = { MONGO_URL: 'mongodb://127.0.0.1:1/x', REDIS_URL: 'redis://127.0.0.1:1' };

describe('The worker validates its configuration before it starts (docs/operations.md)', () => {
  it.each([
    [{ ...base, MONGO_URL: undefined }, 'MONGO_URL'],
    [{ ...base, REDIS_URL: 'http://not-redis' }, 'REDIS_URL'],
    [{ ...base, DOWNSTREAM_TARGETS: '[{"name":"x"}]' }, 'DOWNSTREAM_TARGETS'],
    [{ ...base, WORKER_CONCURRENCY: 'many' }, 'WORKER_CONCURRENCY'],
  ])('with %j it exits 1 with a line naming %s, and nothing on stdout', async (env, variable) => {
    const child = startEntryPoint('worker', env);
    children.push(child);
    const { code } = await child.exited;
    expect(code).toBe(1);
    expect(child.stderr.length).toBeGreaterThanOrEqual(1);
    expect(child.stderr.some((l) => l.startsWith(`configuration error: ${variable}: `)), child.stderr.join('\n')).toBe(true);
    expect(child.stderr.every((l) => l.startsWith('configuration error: ')), child.stderr.join('\n')).toBe(true);
    expect(child.stdout).toEqual([]);
  });

  it('several bad variables, shared and its own: one line for each, all in one run', async () => {
    const child = startEntryPoint('worker', { ...base, MONGO_URL: 'postgres://x', LOG_LEVEL: 'loud', WORKER_CONCURRENCY: 'many' });
    children.push(child);
    expect((await child.exited).code).toBe(1);
    expect(child.stderr.map((l) => l.match(/^configuration error: ([A-Z_]+): /)?.[1]).sort()).toEqual(['LOG_LEVEL', 'MONGO_URL', 'WORKER_CONCURRENCY']);
  });
});
