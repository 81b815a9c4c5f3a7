/**
 * The benchmark cannot rot: `pnpm bench --smoke` runs every section of it for a moment,
 * with tiny sizes, against the run's MongoDB and Redis (its own databases and queue
 * prefixes, dropped after). Nothing is asserted about speed: only that it ran every
 * section and exited 0.
 */
import { spawn } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, inject, it } from 'vitest';
import { REPO_ROOT } from '../support/local-services.ts';

const SECTIONS = [
  'users',
  'users (cached set)',
  'p99 at half peak',
  'token endpoint',
  'end to end',
  'memory',
  'delivery (ours)',
  'delivery (bare BullMQ)',
  'growth',
  'metrics scrape',
];

describe('pnpm bench --smoke', () => {
  it('runs every section of the benchmark and exits 0, writing no results', { timeout: 420_000 }, async () => {
    const latest = join(REPO_ROOT, 'bench', 'results', 'latest.md');
    const before = existsSync(latest) ? statSync(latest).mtimeMs : undefined;
    // What `pnpm bench --smoke` runs (package.json "bench": "tsx bench/run.ts"), without pnpm in between,
    // so a timeout stops the bench itself and its cleanup runs.
    const child = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'bench', 'run.ts'), '--smoke'], {
      cwd: REPO_ROOT,
      env: { ...process.env, MONGO_URL: inject('mongoUrl'), REDIS_URL: inject('redisUrl') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-8_000)));
    const timer = setTimeout(() => child.kill('SIGINT'), 400_000);
    const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
    clearTimeout(timer);

    expect(code, `bench --smoke exited ${code}; its stderr ended with:\n${stderr}`).toBe(0);
    expect(stdout).toContain('# Benchmark (smoke');
    const sectionsLine = stdout.split('\n').find((l) => l.startsWith('Sections run: '));
    expect(sectionsLine, stdout.slice(0, 2000)).toBeDefined();
    const ran = sectionsLine!.slice('Sections run: '.length).replace(/\.$/, '').split(', ');
    expect(ran).toEqual(SECTIONS);
    // Every ratio the issue sets a target for is computed, whatever its value.
    for (const figure of ['API / driver throughput', 'half the API peak', 'token endpoint / bare Fastify', 'end to end p99', 'delivery throughput: ours / bare BullMQ', 'growth: update p50', '/metrics scrape time']) {
      expect(stdout).toContain(figure);
    }
    // A smoke run's figures are meaningless: they are never written where a result could be committed.
    expect(existsSync(latest) ? statSync(latest).mtimeMs : undefined).toBe(before);
  });
});
