import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { databaseUrl, uniquePrefix } from '../support/harness.ts';
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
    [{ ...base, WORKER_METRICS_PORT: '70000' }, 'WORKER_METRICS_PORT'],
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

describe('The worker stops on a REDIS_URL naming a database the server does not have, before it takes any job', () => {
  it('one line naming REDIS_URL, exit 1, never "worker ready" (ioredis would have run every queue on database 0)', async () => {
    const url = Object.assign(new URL(inject('redisUrl')), { pathname: '/99' }).toString();
    const child = startEntryPoint('worker', { MONGO_URL: databaseUrl('worker_redis_db'), REDIS_URL: url, QUEUE_PREFIX: uniquePrefix('worker_redis_db') });
    children.push(child);
    expect((await child.exited).code).toBe(1);
    expect(child.stderr, child.stderr.join('\n')).toHaveLength(1);
    expect(child.stderr[0]).toMatch(/^startup error: REDIS_URL: checking the Redis database failed: the server has no database of the number REDIS_URL names/);
    expect(child.stdout.some((l) => l.includes('"worker ready"') || l.includes('worker started'))).toBe(false);
  });
});

describe('The worker stops on a port it cannot bind before it takes any job', () => {
  it('WORKER_METRICS_PORT held by another process: one line naming it, exit 1, never "worker ready"', async () => {
    const holder = createServer();
    await new Promise<void>((r) => holder.listen(0, '0.0.0.0', r));
    try {
      const { port } = holder.address() as AddressInfo;
      const child = startEntryPoint('worker', { MONGO_URL: databaseUrl('worker_port'), REDIS_URL: inject('redisUrl'), QUEUE_PREFIX: uniquePrefix('worker_port'), WORKER_METRICS_PORT: String(port) });
      children.push(child);
      expect((await child.exited).code).toBe(1);
      expect(child.stderr, child.stderr.join('\n')).toHaveLength(1);
      expect(child.stderr[0]).toMatch(new RegExp(`^startup error: WORKER_METRICS_PORT: listening on port ${port} for /metrics failed: .*EADDRINUSE`));
      expect(child.stdout.some((l) => l.includes('"worker ready"') || l.includes('worker started'))).toBe(false);
    } finally {
      holder.close();
    }
  });
});
